package integration

// The fanotify check of deletions and attribute changes (daemon/renames'
// CheckChanges) against what a red team did to it at cd790ac: a change
// from a thread that never made a traced call (utimensat), and one
// session's flood of changes making another session's rename check time
// out. (Host threads that reuse the ids of a session's exited threads
// are renames' TestCheckChanges: cycling the host's thread ids here
// starved containerd.) The attacks are the hostile program's "fs-check"
// variants (testdata/hostile/fschecks.go).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// hostile runs the hostile program with args through run_command on c
// and returns its text, or the call's error as text (a killed session
// answers none).
func hostile(t *testing.T, c *mcpClient, timeout time.Duration, args ...string) string {
	t.Helper()
	res, err := c.CallTool(ctxT(t, timeout), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "run_command",
		Arguments: map[string]any{"command": filepath.Join(env.bin, "hostile"), "args": args}}})
	out := ""
	if err != nil {
		out = "call error: " + err.Error()
	} else if res != nil && len(res.Content) > 0 {
		out = textOf(res.Content[0])
	}
	t.Logf("hostile %v: %q", args, out)
	return out
}

// fsCheck runs hostile fs-check ARGS through run_command on c.
func fsCheck(t *testing.T, c *mcpClient, timeout time.Duration, args ...string) string {
	t.Helper()
	return hostile(t, c, timeout, append([]string{"fs-check"}, args...)...)
}

// utimensat(2) makes no event of its own (touch and tar make them by the
// thousand), but its thread is noted for the fanotify reader: setting a
// denied key's times ends the session. At cd790ac the thread was not
// noted and the change was dropped unseen.
func TestTouchingADeniedFileEndsTheSession(t *testing.T) {
	dir := project(t)
	d := projDaemon(t, dir)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	toolNames(t, c)
	plantKey(t, dir)
	out := fsCheck(t, c, 60*time.Second, "utimes", "/work/.ssh/id_ed25519")
	if strings.Contains(out, "ESCAPED") {
		t.Fatalf("the key's times were set and the session lived: %q", out)
	}
	if code := c.shimExit(t); code == 0 {
		t.Fatal("shim exited 0: the change of the key's times went unchecked")
	}
	ev := d.record(t, "file.attrib", func(r map[string]any) bool { return str(r, "action") != "" })
	if str(ev, "rule") != "deny_paths **/.ssh/**" || str(ev, "touched") != "/work/.ssh/id_ed25519" {
		t.Fatalf("file.attrib record: %v, want the key and deny_paths **/.ssh/**", ev)
	}
}

// One session's flood of attribute changes across more directories than
// the reader caches is ended (its changes took the shared reader more
// than 250 ms a second, and the rest of them are dropped as read), so
// that another session's rename checks, which read the queue through,
// do not time out behind it. At cd790ac the flooder lived and the other
// session was killed: its rename check could not read the queue in 2 s
// (ErrBehind). At 0ebd4ee the other session was still ended at times, as
// unchecked: the flood's events filled the kernel's event ring while a
// rename check held the loop that reads it, and the victim's rename found
// no room (see TestARenameFloodEndsNoOtherSession).
func TestAFloodOfChangesEndsItsOwnSession(t *testing.T) {
	d, flood := floodBesideAVictim(t, 180*time.Second, "flood", "/work", "30000", "120")
	logFloodsEnd(t, d)
	if strings.Contains(flood, "ESCAPED") {
		t.Fatalf("the flood ran its course: %q; want its session ended", flood)
	}
	d.record(t, "file.flood", func(r map[string]any) bool { return strings.Contains(str(r, "action"), "session killed") })
}

// A session that renames as fast as it can must not get another session
// ended. A rename is checked where the kernel took the file from, which
// may wait on fanotify's queue, and at 0ebd4ee that wait held the loop
// that drains the kernel's event ring shared by every session: the ring
// filled, and the victim's own rename, unreportable, ended it as
// unchecked (every time). Now the checks wait off that loop, and the
// ring keeps a reserve for renames and kills.
func TestARenameFloodEndsNoOtherSession(t *testing.T) {
	d, flood := floodBesideAVictim(t, 120*time.Second, "rename-flood", "/work", "8")
	t.Logf("the flood: %q", flood)
	logFloodsEnd(t, d)
}

// logFloodsEnd logs the flood server's records that ended its session.
func logFloodsEnd(t *testing.T, d *daemon) {
	t.Helper()
	for _, r := range d.auditRecords(t) {
		if str(r, "server") == "flood" && (str(r, "action") != "" || str(r, "type") == "session.end") {
			t.Logf("the flood's end: %s at %s: %s%s", str(r, "type"), str(r, "time"), str(r, "action"), str(r, "error"))
		}
	}
}

// One thread renaming files as fast as it can is not a flood to end: the
// kernel holds each session to 1024 renames unread in the event ring,
// and the daemon to 16384 waiting for their check. Found by the red team
// on 99cb8a9 (20000 renames: the session ended at 512 unread, and at
// 0ebd4ee for a full ring).
func TestABurstOfRenamesIsNotEnded(t *testing.T) {
	dir := project(t)
	d := projDaemon(t, dir)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	toolNames(t, c)
	out := fsCheck(t, c, 120*time.Second, "rename-burst", "/work", "10000")
	if !strings.Contains(out, "renamed 10000 files") { // (the attack program says ESCAPED for "done")
		t.Fatalf("the burst of renames: %q, want all 10000 done", out)
	}
	if text, isErr := callText(t, c, "echo", map[string]any{"text": "still here"}); isErr || !strings.Contains(text, "still here") {
		t.Fatalf("the session after the burst: %q (error %v), want its echo", text, isErr)
	}
	for _, r := range d.auditRecords(t) {
		if str(r, "action") != "" {
			t.Fatalf("the burst ended the session: %v", r)
		}
	}
}

// A server that floods its own observations faster than the audit log is
// written, and reads a denied key in their midst, is on the record with
// the key it touched. Before, the audit queue took 4096 records of any
// kind and dropped the rest: the kill's record went with the flood's
// (TestAFloodOfChangesEndsItsOwnSession failed in CI so: no file.flood
// record). Now observations stop at three quarters of the queue and the
// record of what ended a session is never dropped for a full queue. The
// daemon's audit writer is stalled (mcpcaged-failpoints) while the queue
// fills: on a busy machine it falls behind so, by chance.
func TestAFloodOfRecordsHidesNoDenyHit(t *testing.T) {
	dir := project(t)
	stall := filepath.Join(t.TempDir(), "stall")
	d := startDaemon(t, fmt.Sprintf("[servers.proj]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n",
		filepath.Join(env.bin, "testserver"), dir), failpoints("MCPCAGE_FAILPOINT_AUDIT_STALL="+stall))
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	toolNames(t, c)
	plantKey(t, dir)
	must(t, os.WriteFile(stall, nil, 0o644), "stall the audit writer")
	out := make(chan string, 1)
	go func() { out <- fsCheck(t, c, 120*time.Second, "hide", "/work", "/work/.ssh/id_ed25519", "100") }()
	dropped := `mcpcage_audit_records_dropped_total{reason="queue_full"}`
	testenv.WaitFor(t, "the audit queue dropping the flood's records", 60*time.Second, func() (bool, string) {
		n := metricValue(t, scrape(t, st.Metrics), dropped)
		return n > 0, fmt.Sprintf("%s %v", dropped, n)
	})
	must(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644), "tell the server to read the key")
	if text := <-out; strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, "ESCAPED") {
		t.Fatalf("the key was read: %q", text)
	}
	testenv.WaitFor(t, "the daemon to count the hit (after its record is queued)", 30*time.Second, func() (bool, string) {
		for _, line := range strings.Split(scrape(t, st.Metrics), "\n") {
			if strings.HasPrefix(line, "mcpcage_kernel_denied_total{") && strings.Contains(line, `server="proj"`) && strings.Contains(line, `kind="file.denied"`) {
				return true, line
			}
		}
		return false, "no mcpcage_kernel_denied_total for file.denied"
	})
	must(t, os.Remove(stall), "let the audit writer go on")
	hit := d.record(t, "file.denied", func(r map[string]any) bool { return str(r, "touched") == "/work/.ssh/id_ed25519" })
	if !strings.Contains(str(hit, "action"), "session killed") {
		t.Fatalf("the hit's record: %v, want the session killed", hit)
	}
	end := d.record(t, "session.end", func(r map[string]any) bool { return str(r, "session") == str(hit, "session") })
	if n, _ := end["kernel_records_dropped"].(float64); n == 0 {
		t.Fatalf("session.end: %v, want the records of its flood the audit queue dropped counted", end)
	}
	t.Logf("the session's end: %v kernel events, %v of their records dropped", end["kernel_events"], end["kernel_records_dropped"])
}

// floodBesideAVictim starts a daemon with two servers, flood and victim,
// each with its own writable /work, runs hostile fs-check ARGS in flood
// and, once /work/flooding appears there, renames and chmods a file of the
// victim's 100 times each. The victim's changes must all be done, its
// session never ended, and its rename checks never timed out behind the
// flood. It returns the daemon and the flood's output.
func floodBesideAVictim(t *testing.T, timeout time.Duration, args ...string) (*daemon, string) {
	t.Helper()
	setup(t)
	a, b := project(t), project(t)
	d := startDaemon(t, fmt.Sprintf("[servers.flood]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n"+
		"[servers.victim]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n",
		filepath.Join(env.bin, "testserver"), a, filepath.Join(env.bin, "testserver"), b))
	ca := d.connect(t, "flood", mcp.ProtocolVersion20251125)
	toolNames(t, ca)
	cb := d.connect(t, "victim", mcp.ProtocolVersion20251125)
	toolNames(t, cb)
	floodDone := make(chan string, 1)
	go func() { floodDone <- fsCheck(t, ca, timeout, args...) }()
	testenv.WaitFor(t, "the flood under way", timeout, func() (bool, string) {
		_, err := os.Stat(filepath.Join(a, "flooding"))
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("the flood under way at %s", time.Now().UTC().Format(time.RFC3339Nano))
	out, _ := callText(t, cb, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c",
		"echo x > /work/a && for i in $(seq 1 100); do mv /work/a /work/b && mv /work/b /work/a && chmod 600 /work/a && chmod 644 /work/a || exit 1; done; echo changed"}})
	t.Logf("the victim's changes during the flood: %q", out)
	flood := <-floodDone
	for _, r := range d.auditRecords(t) {
		if strings.Contains(str(r, "rule"), "could not be read in time") {
			t.Fatalf("a rename check timed out behind the flood: %v", r)
		}
		if str(r, "server") == "victim" && str(r, "action") != "" {
			t.Fatalf("the victim's session was ended during another's flood: %v", r)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "changed") {
		t.Fatalf("the victim's changes during the flood: %q, want all done", out)
	}
	if text, isErr := callText(t, cb, "echo", map[string]any{"text": "still here"}); isErr || !strings.Contains(text, "still here") {
		t.Fatalf("the victim after the flood: %q (error %v), want its echo", text, isErr)
	}
	return d, flood
}
