package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// userDaemon starts a daemon with no configuration that the test user
// (the returned uid) can reach.
func userDaemon(t *testing.T, opts ...func(*daemon)) (int, *daemon) {
	t.Helper()
	setup(t)
	uid, _ := testUser(t)
	d := startDaemon(t, "", opts...)
	d.openToOtherUsers(t)
	return uid, d
}

// TestUserSecretsAreTheirOwn: a local user's own server reads its owner's
// secrets and never the administrator's. Before user secret stores
// existed, `mcpcage server add leak --env T=secret:NAME -- SERVER` made any
// user's server receive the administrator's secret NAME.
func TestUserSecretsAreTheirOwn(t *testing.T) {
	uid, d := userDaemon(t)
	secret := func(asUID int, value string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"--socket", d.socket, "secret"}, args...)...)
		cmd.Stdin = strings.NewReader(value + "\n")
		if asUID > 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(asUID), Gid: uint32(asUID)}}
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	const adminValue, userValue = "admin-only-token-1234", "users-own-token-5678"
	if out, err := secret(0, adminValue, "set", "github"); err != nil {
		t.Fatalf("root: secret set: %v %s", err, out)
	}
	if out, err := d.cli(t, uid, "server", "add", "leak", "--env", "TOKEN=secret:github", "--", filepath.Join(env.bin, "testserver")); err != nil {
		t.Fatalf("server add as the user: %v %s", err, out)
	}

	// The attack: the user's server asks for the administrator's secret.
	cmd := d.shimCmd("leak")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n" + `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"env","arguments":{"name":"TOKEN"}}}` + "\n")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if strings.Contains(stdout.String(), adminValue) {
		t.Fatalf("a user's own server received the administrator's secret:\n%s", stdout.String())
	}
	if err == nil || !strings.Contains(stderr.String(), "secret github is not among your own secrets") || !strings.Contains(stderr.String(), "mcpcage secret set github") {
		t.Fatalf("launch with the administrator's secret: %v\nstderr: %s\nstdout: %s", err, stderr.String(), stdout.String())
	}

	// The user's own store: set and listed without sudo, apart from root's.
	if out, err := secret(uid, userValue, "set", "github"); err != nil {
		t.Fatalf("user: secret set: %v %s", err, out)
	}
	if out, err := secret(uid, "", "ls"); err != nil || strings.TrimSpace(out) != "github" {
		t.Fatalf("user: secret ls = %q, %v", out, err)
	}
	if out, err := secret(uid, "x", "set", "github", "--agent", "itest"); err == nil || !strings.Contains(out, "administrator's to set") {
		t.Fatalf("user: secret set --agent: %v %s", err, out)
	}
	if out, err := secret(uid, strings.Repeat("x", 70<<10), "set", "big"); err == nil || !strings.Contains(out, "at most") {
		t.Fatalf("user: a 70 KiB secret: %v %s", err, out)
	}
	c := d.connectAs(t, "leak", uid)
	if got, _ := callText(t, c, "env", map[string]any{"name": "TOKEN"}); !strings.Contains(got, "TOKEN="+userValue+" ") {
		t.Fatalf("the user's server sees %q, want the user's own value", got)
	}
	// The user's value is scrubbed from the audit log like the
	// administrator's: the call's argument names it.
	callText(t, c, "env", map[string]any{"name": userValue})
	_ = c.Close()
	d.waitClean("the user's session")
	var audit []byte
	files, _ := filepath.Glob(filepath.Join(d.dir, "log", "audit.jsonl*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err, "read the audit log")
		audit = append(audit, b...)
	}
	for _, v := range []string{userValue, adminValue} {
		if strings.Contains(string(audit), v) || strings.Contains(d.log.String(), v) {
			t.Errorf("secret value %q in the audit log or the daemon's log", v)
		}
	}
	if !strings.Contains(string(audit), `"name":"[redacted]"`) {
		t.Error("the call naming the user's secret was not recorded redacted")
	}
	// One user's values hide nothing in other users' records (else any
	// user could blank out words from everyone's audit trail): root's
	// call naming the user's value is recorded as sent.
	rc := d.connect(t, "test", mcp.ProtocolVersion20251125)
	callText(t, rc, "echo", map[string]any{"text": userValue})
	_ = rc.Close()
	d.record(t, "tool.call", func(r map[string]any) bool {
		args, _ := r["arguments"].(map[string]any)
		return str(r, "user") == "root" && args["text"] == userValue
	})
	// Root's store is untouched by the user's.
	if out := d.mustCLI(t, "secret", "ls"); strings.TrimSpace(out) != "github" {
		t.Fatalf("root: secret ls = %q", out)
	}
	if out, err := secret(uid, "", "rm", "github"); err != nil {
		t.Fatalf("user: secret rm: %v %s", err, out)
	}
	if out := d.mustCLI(t, "secret", "ls"); strings.TrimSpace(out) != "github" {
		t.Fatalf("the user's rm touched root's store: %q", out)
	}
}

// TestServerAddTellsNothingOfOthersSecrets: the record of `mcpcage server
// add`, which its user reads, redacted an argument that ended with the
// first 8 or more bytes of any secret of the daemon's: one add with an
// argument for each next character read the administrator's secret out,
// byte by byte (found by a red-team helper: a 41-byte key in 33 adds).
// Now only whole values are redacted there.
func TestServerAddTellsNothingOfOthersSecrets(t *testing.T) {
	uid, d := userDaemon(t)
	const adminValue = "sk_live_51Hx9QzL2bT7vK4mN8pR3sW6yA1cE5gJ0"
	cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), "--socket", d.socket, "secret", "set", "stripe")
	cmd.Stdin = strings.NewReader(adminValue + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("root: secret set: %v %s", err, out)
	}
	probes := []string{"Qsk_live_4", "Qsk_live_5", "Qsk_live_51", "Qsk_live_51Hx9QzL2b"}
	if out, err := d.cli(t, uid, append([]string{"server", "add", "probe", "--", "/bin/true"}, probes...)...); err != nil {
		t.Fatalf("server add as the user: %v %s", err, out)
	}
	out, err := d.cli(t, uid, "audit", "--json", "--type", "server.add")
	if err != nil {
		t.Fatalf("the user's audit: %v %s", err, out)
	}
	var command []any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		must(t, json.Unmarshal([]byte(line), &r), "parse %q", line)
		if r["server"] == "probe" {
			command, _ = r["command"].([]any)
		}
	}
	want := append([]any{"/bin/true"}, func() []any {
		var out []any
		for _, p := range probes {
			out = append(out, p)
		}
		return out
	}()...)
	if !slices.Equal(command, want) {
		t.Fatalf("the user's server.add record has command %q, want %q as typed (a redacted probe tells the administrator's secret)", command, want)
	}
}
