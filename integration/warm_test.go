package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestWarmSandboxes: the end of a session prepares the next one's sandbox;
// the next session of that server for that user starts in it, under its
// id, with its kernel policy and secrets; a changed secret makes it stale
// (a new sandbox, the new value), another user never gets it, a reload
// removes it, and a stopped daemon leaves none.
func TestWarmSandboxes(t *testing.T) {
	setup(t) // env.bin is known after setup
	uid, _ := testUser(t)
	// The server's data: an admin mount whose source is a symlink (a
	// deploy's "current"), re-pointed below.
	data := t.TempDir()
	for _, rel := range []string{"v1", "v2"} {
		must(t, os.MkdirAll(filepath.Join(data, rel), 0o755), "mkdir")
		must(t, os.WriteFile(filepath.Join(data, rel, "release-"+rel), nil, 0o644), "write")
	}
	current := filepath.Join(data, "current")
	must(t, os.Symlink("v1", current), "symlink")
	must(t, os.Chmod(data, 0o755), "open %s", data)
	d := startDaemon(t, fmt.Sprintf("[servers.warm]\ncommand = [%q]\nenv = { API_TOKEN = \"secret:warm-token\" }\nmounts = [{ source = %q, target = \"/data\" }]\n",
		filepath.Join(env.bin, "testserver"), current))
	d.openToOtherUsers(t)
	setSecret := func(value string) {
		cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), "secret", "set", "warm-token", "--socket", d.socket)
		cmd.Stdin = strings.NewReader(value + "\n")
		out, err := cmd.CombinedOutput()
		must(t, err, "secret set: %s", out)
	}
	setSecret("first-value")
	st := d.status(t)
	if st.Warm == nil || st.Warm.Disabled != "" || st.Warm.Max != 4 {
		t.Fatalf("status shows no working warm pool: %+v", st.Warm)
	}

	// session runs one session of the server "warm" (as uid, or root when
	// uid < 0): it checks the secret the server sees and opens a file the
	// kernel must record, and returns the session's start record.
	seen := map[string]bool{}
	release := "release-v1"
	session := func(uid int, wantToken string) map[string]any {
		t.Helper()
		var c *mcpClient
		if uid >= 0 {
			c = d.connectAs(t, "warm", uid)
		} else {
			c = d.connect(t, "warm", mcp.ProtocolVersion20251125)
		}
		if got, _ := callText(t, c, "env", map[string]any{"name": "API_TOKEN"}); !strings.Contains(got, "API_TOKEN="+wantToken+" ") {
			t.Fatalf("the server sees %q, want the secret %q", got, wantToken)
		}
		if got, _ := callText(t, c, "list_dir", map[string]any{"path": "/data"}); !strings.Contains(got, release) {
			t.Fatalf("the server sees /data as %q, want %s", got, release)
		}
		if got := d.status(t).Kernel.Sessions; got != 1 {
			t.Errorf("kernel sessions during the session: %d, want 1 (the policy registered)", got)
		}
		callText(t, c, "read_file", map[string]any{"path": "/etc/hostname"})
		// This session's start record: the one whose session opened the file
		// and had not started before.
		var start map[string]any
		testenv.WaitFor(t, "this session's start and file.open records", 10*time.Second, func() (bool, string) {
			opened := map[string]bool{}
			for _, r := range d.auditRecords(t) {
				if str(r, "type") == "file.open" && str(r, "path") == "/etc/hostname" {
					opened[str(r, "session")] = true
				}
			}
			for _, r := range d.auditRecords(t) {
				if str(r, "type") == "session.start" && opened[str(r, "session")] && !seen[str(r, "session")] {
					start = r
					return true, ""
				}
			}
			return false, fmt.Sprintf("file.open by sessions %v", opened)
		})
		seen[str(start, "session")] = true
		_ = c.Close()
		return start
	}
	warmOf := func(r map[string]any) bool {
		sb, _ := r["sandbox"].(map[string]any)
		w, ok := sb["warm"].(bool)
		if !ok {
			t.Fatalf("session.start has no sandbox.warm: %v", r)
		}
		return w
	}

	first := session(-1, "first-value")
	if warmOf(first) {
		t.Fatal("the first session of the server started warm")
	}
	ready := d.waitWarm(t, 1)
	e := ready.Warm.Entries[0]
	if e.Server != "warm" || e.User != "root" || e.Memory <= 0 {
		t.Fatalf("warm entry %+v, want server warm for root with its memory", e)
	}

	// Another user's session never starts in root's sandbox.
	if warmOf(session(uid, "first-value")) {
		t.Fatal("another user's session started in the sandbox prepared for root")
	}
	d.waitClean("the other user's session")
	st = d.waitWarm(t, 2) // root's, and now the other user's

	// The other user cannot reach their prepared sandbox's stdio before a
	// session takes it: its process is not theirs to look into, so no
	// process of theirs can start the server unrecorded or hold its stdin
	// and stdout for the session that will take it.
	for _, w := range st.Warm.Entries {
		if w.User == "root" {
			continue
		}
		stdioUnreachable(t, w.Container, uid)
	}

	// Root's next session starts in the prepared sandbox, under its id.
	hit := session(-1, "first-value")
	if !warmOf(hit) {
		t.Fatalf("the second session did not start warm: %v", hit)
	}
	if "mcpcage-"+str(hit, "session") != e.Container {
		t.Fatalf("warm session %s, prepared container %s", str(hit, "session"), e.Container)
	}
	// The kernel watched the cgroup before the prepared sandbox's process
	// went on: the server's exec is in the session's record.
	server := filepath.Join(env.bin, "testserver")
	testenv.WaitFor(t, "the warm session's exec of its server", 10*time.Second, func() (bool, string) {
		var execs []string
		for _, r := range d.auditRecords(t) {
			if str(r, "type") == "process.exec" && str(r, "session") == str(hit, "session") {
				if str(r, "path") == server {
					return true, ""
				}
				execs = append(execs, str(r, "path"))
			}
		}
		return false, fmt.Sprintf("process.exec records of the session: %v", execs)
	})
	d.waitWarm(t, 2)

	// A changed secret removes every prepared sandbox: the next session
	// builds its own, with the new value.
	setSecret("second-value")
	d.waitWarm(t, 0)
	if fresh := session(-1, "second-value"); warmOf(fresh) {
		t.Fatal("a session started in a sandbox prepared before the secret changed")
	}
	d.waitWarm(t, 1)

	// The mount source now names another directory: the prepared sandbox
	// shows the old one, so it is stale; the session builds a new one.
	must(t, os.Remove(current), "remove the symlink")
	must(t, os.Symlink("v2", current), "re-point the symlink")
	release = "release-v2"
	if stale := session(-1, "second-value"); warmOf(stale) {
		t.Fatal("a session started in a sandbox that shows the mount source's old target")
	}
	d.waitLog("warm sandbox outdated, starting a new one")
	body := scrape(t, st.Metrics)
	for series, want := range map[string]float64{
		`mcpcage_warm_starts_total{result="hit"}`:   1,
		`mcpcage_warm_starts_total{result="stale"}`: 1,
		`mcpcage_warm_starts_total{result="miss"}`:  3,
	} {
		if got := metricValue(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	d.waitClean("the sessions")

	// Another user sees their own prepared sandboxes only.
	d.waitWarm(t, 1)
	var other api.Status
	call := exec.Command(filepath.Join(env.bin, "mcpcage"), "status", "--json", "--socket", d.socket)
	call.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := call.Output()
	must(t, err, "status as the test user")
	must(t, json.Unmarshal(out, &other), "status JSON")
	if other.Warm == nil || len(other.Warm.Entries) != 0 || other.Warm.Others != 1 {
		t.Fatalf("the test user's status shows the warm pool as %+v, want root's entry counted, not listed", other.Warm)
	}

	// A reload removes what the previous configuration built.
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	d.waitWarm(t, 0)
	testenv.WaitFor(t, "the removed sandboxes' containers to go", 20*time.Second, func() (bool, string) {
		n := len(d.containers())
		return n == 0, fmt.Sprintf("%d containers", n)
	})

	// A stopped daemon leaves no prepared sandbox behind.
	session(-1, "second-value")
	d.waitWarm(t, 1)
	d.stop()
	if left := d.containers(); len(left) != 0 {
		t.Fatalf("containers left after the daemon stopped: %v", left)
	}
}

// stdioUnreachable checks that uid can open none of the stdio FIFOs of
// the sandbox container through /proc/PID/root of its processes (the
// FIFOs' own directory on the host is root's alone): an open for writing
// that does not wait (dd's oflag=nonblock) must be refused, not succeed
// (the waiting process is a reader) or find no reader.
func stdioUnreachable(t *testing.T, container string, uid int) {
	t.Helper()
	var pids []string
	entries, err := os.ReadDir("/proc")
	must(t, err, "read /proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil && strings.Contains(string(b), "/"+container+"\n") {
			pids = append(pids, e.Name())
		}
	}
	if len(pids) == 0 {
		t.Fatalf("no process of the prepared sandbox %s", container)
	}
	for _, pid := range pids {
		for _, f := range []string{"in", "out", "err"} {
			path := filepath.Join("/proc", pid, "root", ".mcpcage", "stdio", f)
			cmd := exec.Command("dd", "if=/dev/null", "of="+path, "oflag=nonblock", "conv=notrunc", "status=none")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Permission denied") {
				t.Errorf("uid %d opened %s of the prepared sandbox (pid %s) or got past the permission check: %v %s", uid, path, pid, err, out)
			}
		}
	}
}

// A hidden file replaced on the host by a rename (as passwd replaces
// /etc/shadow) takes its mask away in every mount namespace, the waiting
// sandbox's too: the next session must not start there.
func TestWarmSandboxLostMaskIsStale(t *testing.T) {
	setup(t) // env.bin is known after setup
	// /var/tmp: a host directory the sandbox sees (its /tmp is its own).
	dir, err := os.MkdirTemp("/var/tmp", "mcpcage-itest-mask-")
	must(t, err, "mkdir")
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755), "open %s", dir)
	secret := filepath.Join(dir, "shadow")
	must(t, os.WriteFile(secret, []byte("old hash"), 0o644), "write")
	d := startDaemon(t, fmt.Sprintf("[servers.masked]\ncommand = [%q]\nhidden_paths = [%q]\n", filepath.Join(env.bin, "testserver"), secret))
	read := func() (map[string]any, string) {
		t.Helper()
		c := d.connect(t, "masked", mcp.ProtocolVersion20251125)
		got, _ := callText(t, c, "read_file", map[string]any{"path": secret})
		_ = c.Close()
		var start map[string]any
		testenv.WaitFor(t, "the session's end", 10*time.Second, func() (bool, string) {
			recs := d.auditRecords(t)
			for i := len(recs) - 1; i >= 0; i-- {
				if str(recs[i], "type") == "session.start" {
					start = recs[i]
					break
				}
			}
			for _, r := range recs {
				if str(r, "type") == "session.end" && str(r, "session") == str(start, "session") {
					return true, ""
				}
			}
			return false, "no session.end yet"
		})
		return start, got
	}
	if _, got := read(); strings.Contains(got, "hash") {
		t.Fatalf("the hidden file is readable: %q", got)
	}
	d.waitWarm(t, 1)
	tmp := filepath.Join(dir, "shadow.new")
	must(t, os.WriteFile(tmp, []byte("new hash"), 0o644), "write")
	must(t, os.Rename(tmp, secret), "replace the hidden file")
	start, got := read()
	if strings.Contains(got, "hash") {
		t.Fatalf("the replaced hidden file is readable: %q", got)
	}
	if sb, _ := start["sandbox"].(map[string]any); sb["warm"] != false {
		t.Fatalf("the session started in the prepared sandbox whose mask was lost: %v", start)
	}
	d.waitLog("warm sandbox outdated, starting a new one")
	d.waitLog("is visible in it")
}
