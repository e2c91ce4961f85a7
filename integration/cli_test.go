package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestStatusAndServers(t *testing.T) {
	d := startDaemon(t, everythingConfig)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"status"}, []string{"version:", "containerd:", "connected (containerd", "namespace " + d.namespace, "sessions:", "servers:", "everything, test"}},
		{[]string{"servers"}, []string{"NAME", "everything", "mcp-server-everything stdio", "test", "65534:65534", "none", "1024MiB", "default"}},
		{[]string{"servers", "show", "test"}, []string{"user:", "65534:65534", "network:", "none", "hidden:", "/var/lib/mcpcage", "landlock:"}},
		{[]string{"servers", "show", "test", "--spec"}, []string{`"noNewPrivileges": true`, `"readonly": true`, `"SCMP_ACT_ERRNO"`, `"/etc/shadow"`}},
		{[]string{"status", "--json"}, []string{`"sessions": 0`}},
		{[]string{"status"}, []string{"enforcement landlock:", "enforced (ABI", "enforcement seccomp:", "enforcement ebpf hooks:", "cgroup_sock_addr=yes", "tracepoint=yes"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := exec.Command(filepath.Join(env.bin, "mcpcage"), append(tt.args, "--socket", d.socket)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestDaemonRejectsBadConfig(t *testing.T) {
	setup(t)
	bad := filepath.Join(t.TempDir(), "bad.toml")
	must(t, os.WriteFile(bad, []byte("[daemon]\nsocket = \"/tmp/x.sock\"\nmax_message_bytes = \"huge\"\n"), 0o644), "write the config")
	out, err := exec.Command(filepath.Join(env.bin, "mcpcaged"), "--config", bad).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "line 3: daemon.max_message_bytes") {
		t.Fatalf("exit %v, output %q", err, out)
	}
	// A missing file named explicitly is an error too.
	out, err = exec.Command(filepath.Join(env.bin, "mcpcaged"), "--config", bad+".absent").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such file") {
		t.Fatalf("exit %v, output %q", err, out)
	}
}

func TestDaemonExplainsMissingContainerd(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	// Every path the daemon writes is the test's own: without audit_log
	// it opened the machine's /var/log/mcpcage/audit.jsonl and, its head
	// being in this state_dir, recorded a gap there that made `mcpcage
	// audit verify` of the machine's log fail.
	must(t, os.WriteFile(cfg, []byte("[daemon]\nsocket = \""+dir+"/s.sock\"\nstate_dir = \""+dir+"/state\"\naudit_log = \""+dir+"/log/audit.jsonl\"\ncontainerd_address = \""+dir+"/absent.sock\"\n"), 0o644), "write the config")
	out, err := exec.Command(filepath.Join(env.bin, "mcpcaged"), "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "containerd") || !strings.Contains(string(out), "systemctl start containerd") {
		t.Fatalf("exit %v, output %q", err, out)
	}
}

// `mcpcage audit` prints what agents and servers named. A tool name with
// a line break and a terminal escape once printed a forged "allow" line
// and retitled the admin's terminal; now every such character is shown
// escaped. Found by a red-team helper.
func TestAuditListingShowsHostileNamesEscaped(t *testing.T) {
	d := consentDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	const forged = "2026-12-03 04:30:00.000 aaaaaaaa tool.call       allow echo"
	name := "echo\n" + forged + "\x1b]0;pwned\x07\u202e"
	b, err := json.Marshal(name)
	must(t, err, "marshal")
	r.send(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":` + string(b) + `,"arguments":{}}}` + "\n")
	if line := r.response("5"); !strings.Contains(line, "mcpcage denied") {
		t.Fatalf("the call: %s, want it denied", line)
	}
	var out string
	testenv.WaitFor(t, "the denied call in mcpcage audit", 10*time.Second, func() (bool, string) {
		out = d.mustCLI(t, "audit", "--type", "tool.call")
		return strings.Contains(out, `deny "echo`), out // quoted: the name holds spaces
	})
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "2026-12-03 04:30:00.000") {
			t.Fatalf("mcpcage audit printed the forged line:\n%s", out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07\u202e") || !strings.Contains(out, `\u{000A}`+forged) {
		t.Fatalf("mcpcage audit does not show the name escaped:\n%q", out)
	}
	// --json too: JSON encoders leave bidi overrides and C1 controls raw
	// in strings; the same values, escaped.
	js := d.mustCLI(t, "audit", "--json", "--type", "tool.call")
	if strings.ContainsRune(js, '\u202e') || !strings.Contains(js, `\u202e`) {
		t.Fatalf("mcpcage audit --json printed the bidi override raw:\n%q", js)
	}
}
