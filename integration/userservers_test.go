package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// TestUserServersLimited: a user stores at most MaxServersPerUser servers
// of MaxServerBytes each through `mcpcage server add`; the add past either
// is refused with a message naming the limit, and the user can replace a
// stored server or remove one to make room.
func TestUserServersLimited(t *testing.T) {
	uid, d := userDaemon(t)
	bin := filepath.Join(env.bin, "testserver")
	add := func(name string, args ...string) (string, error) {
		return d.cli(t, uid, append([]string{"server", "add", name}, append(args, "--", bin)...)...)
	}
	for i := range userservers.MaxServersPerUser {
		if out, err := add(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatalf("add %d: %v %s", i, err, out)
		}
	}
	want := fmt.Sprintf("the most one user may store is %d", userservers.MaxServersPerUser)
	if out, err := add("one-more"); err == nil || !strings.Contains(out, want) {
		t.Fatalf("add past the limit: %v %s (want %q)", err, out, want)
	}
	if out, err := add("s0", "--env", "A=b"); err != nil {
		t.Fatalf("replacing a stored server at the limit: %v %s", err, out)
	}
	if out, err := d.cli(t, uid, "server", "rm", "s1"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if out, err := add("one-more"); err != nil {
		t.Fatalf("add after a remove: %v %s", err, out)
	}

	big := "BIG=" + strings.Repeat("v", userservers.MaxServerBytes)
	want = fmt.Sprintf("one server may take at most %d", userservers.MaxServerBytes)
	if out, err := d.cli(t, uid, "server", "rm", "s2"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if out, err := add("big", "--env", big); err == nil || !strings.Contains(out, want) {
		t.Fatalf("add of a definition over %d bytes: %v %s (want %q)", userservers.MaxServerBytes, err, out, want)
	}
	// The daemon logs a refusal before it answers.
	if log := d.log.String(); !strings.Contains(log, "user server refused") || !strings.Contains(log, "big") {
		t.Errorf("no log line of the refusal:\n%s", log)
	}
}

// TestUserServerMountsBounded: a server of a user's own has at most
// userservers.MaxMounts mounts. mcpcaged searches every mount for
// deny_paths names, each with budgets of its own, at every launch and
// `servers show --spec`: a definition of 400 mounts of /usr (64 KiB
// holds about 1800) cost it over three minutes of CPU per request, and
// four such requests of one user made another user's session start and
// first call ten times slower (found by a red-team helper).
func TestUserServerMountsBounded(t *testing.T) {
	uid, d := userDaemon(t)
	bin := filepath.Join(env.bin, "testserver")
	add := func(name string, n int) (string, error) {
		args := []string{"server", "add", name}
		for i := range n {
			args = append(args, "--mount", fmt.Sprintf("/usr:/m%d", i))
		}
		return d.cli(t, uid, append(args, "--", bin)...)
	}
	want := fmt.Sprintf("one server of your own may have at most %d", userservers.MaxMounts)
	if out, err := add("many", userservers.MaxMounts+1); err == nil || !strings.Contains(out, want) {
		t.Fatalf("add with %d mounts: %v %s (want %q)", userservers.MaxMounts+1, err, out, want)
	}
	if out, err := add("enough", userservers.MaxMounts); err != nil {
		t.Fatalf("add with %d mounts: %v %s", userservers.MaxMounts, err, out)
	}
	c := d.connectAs(t, "enough", uid)
	if got, _ := callText(t, c, "list_dir", map[string]any{"path": fmt.Sprintf("/m%d", userservers.MaxMounts-1)}); !strings.Contains(got, "bin") {
		t.Errorf("the last mount shows %q, want /usr", got)
	}
	_ = c.Close()
}

// TestUserServerChurnKeepsSeriesBounded: users name their own servers and
// add and remove them at will; their metrics all count under one server
// label, so `server add tN; run tN; server rm tN` leaves no series per
// name behind.
func TestUserServerChurnKeepsSeriesBounded(t *testing.T) {
	uid, d := userDaemon(t)
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	bin := filepath.Join(env.bin, "testserver")
	const passes = 3
	for i := range passes {
		name := fmt.Sprintf("churn%d", i)
		if out, err := d.cli(t, uid, "server", "add", name, "--", bin); err != nil {
			t.Fatalf("add %s: %v %s", name, err, out)
		}
		c := d.connectAs(t, name, uid)
		callText(t, c, "echo", map[string]any{"text": "x"})
		_ = c.Close()
		if out, err := d.cli(t, uid, "server", "rm", name); err != nil {
			t.Fatalf("rm %s: %v %s", name, err, out)
		}
	}
	body := scrape(t, st.Metrics)
	if lines := grepLines(body, `server="churn`); lines != "" {
		t.Errorf("series named after users' servers:\n%s", lines)
	}
	for _, series := range []string{
		`mcpcage_messages_total{direction="client_to_server",server="(user)"}`,
		`mcpcage_sessions_total{agent="unknown",server="(user)"}`,
	} {
		if got := metricValue(t, body, series); got < passes {
			t.Errorf("%s = %v, want at least %d (one per pass)\n%s", series, got, passes, grepLines(body, `server="`))
		}
	}
}

// TestUserServerAddUnrecordedKeepsTheOld: a `server add` the audit log
// cannot record is taken back, and loses nothing: one that replaced a
// server of the user's leaves the previous definition stored as it was
// (it used to remove the server), one of a new name leaves no server.
func TestUserServerAddUnrecordedKeepsTheOld(t *testing.T) {
	failing := filepath.Join(t.TempDir(), "audit-fails")
	uid, d := userDaemon(t, failpoints("MCPCAGE_FAILPOINT_AUDIT_FAIL="+failing))
	bin := filepath.Join(env.bin, "testserver")
	add := func(args ...string) (string, error) {
		return d.cli(t, uid, append([]string{"server", "add"}, args...)...)
	}
	servers := func() map[string]api.ServerInfo {
		t.Helper()
		out, err := d.cli(t, uid, "servers", "--json")
		if err != nil {
			t.Fatalf("servers: %v %s", err, out)
		}
		var l []api.ServerInfo
		must(t, json.Unmarshal([]byte(out), &l), "servers --json")
		m := map[string]api.ServerInfo{}
		for _, s := range l {
			m[s.Name] = s
		}
		return m
	}
	if out, err := add("x", "--env", "V=original", "--workdir", "/tmp", "--", bin, "original"); err != nil {
		t.Fatalf("add x: %v %s", err, out)
	}
	orig, ok := servers()["x"]
	if !ok {
		t.Fatal("x is not listed once added")
	}

	must(t, os.WriteFile(failing, nil, 0o600), "make the audit log fail")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replace", []string{"x", "--env", "V=replaced", "--", bin, "replaced"}, "so it was not replaced (your previous definition of x stands)"},
		{"new", []string{"y", "--", bin}, "so it was not added"},
	} {
		out, err := add(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) || !strings.Contains(out, "audit log") {
			t.Errorf("%s with the audit log failing: %v %s (want %q)", tc.name, err, out, tc.want)
		}
	}
	must(t, os.Remove(failing), "heal the audit log")

	// The next record is written: the log is healthy again.
	if out, err := add("z", "--", bin); err != nil {
		t.Fatalf("add z once the audit log is healthy: %v %s", err, out)
	}
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	if st.AuditError != "" {
		t.Fatalf("the audit log still fails: %s", st.AuditError)
	}
	got := servers()
	if diff := cmp.Diff(orig, got["x"]); diff != "" {
		t.Errorf("x after the unrecorded replace is not the original (-original +now):\n%s", diff)
	}
	if _, ok := got["y"]; ok {
		t.Error("y is listed: its unrecorded add was kept")
	}
	var added []string
	for _, r := range d.auditRecords(t) {
		if r["type"] == "server.add" {
			added = append(added, fmt.Sprintf("%s %v", str(r, "server"), r["command"]))
		}
	}
	if want := []string{fmt.Sprintf("x [%s original]", bin), fmt.Sprintf("z [%s]", bin)}; !slices.Equal(added, want) {
		t.Errorf("server.add records %q, want %q", added, want)
	}
}

// TestUserServerCommandIsLookedUpAsTheUser: a user's own server's command
// is looked for as the user. mcpcaged looked for it as root, so a user
// learned from the launch error whether a directory they cannot search
// (one of root's, another user's home) holds a program of a name: a
// program there failed in the sandbox ("mcpcage-init: ... command not
// found in the sandbox", or "not visible" for a private top-level
// directory), a name that was not there was refused by mcpcaged itself.
// Both are now the same refusal.
func TestUserServerCommandIsLookedUpAsTheUser(t *testing.T) {
	uid, d := userDaemon(t)
	private := filepath.Join(env.runDir, "roots-own")
	must(t, os.Mkdir(private, 0o700), "mkdir")
	must(t, os.WriteFile(filepath.Join(private, "tool"), []byte("#!/bin/sh\n"), 0o755), "write")
	refusal := map[string]string{}
	for name, prog := range map[string]string{"there": "tool", "absent": "nothing"} {
		cmd := filepath.Join(private, prog)
		if out, err := d.cli(t, uid, "server", "add", name, "--", cmd); err != nil {
			t.Fatalf("add %s: %v %s", name, err, out)
		}
		c := d.shimCmd(name)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		c.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
		var stderr syncBuffer
		c.Stderr = &stderr
		err := c.Run()
		if err == nil || !strings.Contains(stderr.String(), "not found, as you") {
			t.Fatalf("%s (%s): %v, want mcpcaged's refusal; stderr:\n%s", name, cmd, err, stderr.String())
		}
		refusal[name] = strings.NewReplacer(prog, "PROG", name, "NAME").Replace(stderr.String())
	}
	if diff := cmp.Diff(refusal["absent"], refusal["there"]); diff != "" {
		t.Errorf("a program the user cannot reach is told apart from none (-absent +there):\n%s", diff)
	}
}
