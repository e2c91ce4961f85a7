package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

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
	d := startDaemon(t, fmt.Sprintf("[servers.warm]\ncommand = [%q]\nenv = { API_TOKEN = \"secret:warm-token\" }\n", filepath.Join(env.bin, "testserver")))
	for _, p := range []string{env.work, d.dir} {
		must(t, os.Chmod(p, 0o755), "open %s to the test user", p)
	}
	must(t, os.Chmod(d.socket, 0o666), "open the test socket to the test user")
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
	other := session(uid, "first-value")
	if warmOf(other) {
		t.Fatal("another user's session started in the sandbox prepared for root")
	}
	d.waitClean("the other user's session")
	st = d.waitWarm(t, 2) // root's, and now the other user's

	// Root's next session starts in the prepared sandbox, under its id.
	hit := session(-1, "first-value")
	if !warmOf(hit) {
		t.Fatalf("the second session did not start warm: %v", hit)
	}
	if "mcpcage-"+str(hit, "session") != e.Container {
		t.Fatalf("warm session %s, prepared container %s", str(hit, "session"), e.Container)
	}
	d.waitWarm(t, 2)

	// A changed secret: the prepared sandbox no longer matches; a new one.
	setSecret("second-value")
	stale := session(-1, "second-value")
	if warmOf(stale) {
		t.Fatal("a session started in a sandbox built with the old secret")
	}
	d.waitLog("warm sandbox outdated, starting a new one")
	body := scrape(t, st.Metrics)
	for series, want := range map[string]float64{
		`mcpcage_warm_starts_total{result="hit"}`:   1,
		`mcpcage_warm_starts_total{result="stale"}`: 1,
		`mcpcage_warm_starts_total{result="miss"}`:  2,
	} {
		if got := metricValue(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	d.waitClean("the sessions")

	// A reload removes what the previous configuration built.
	d.waitWarm(t, 2)
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
