package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestStalledAuditQueriesBounded: `mcpcage audit` (no --follow) clients
// that send the request and then read nothing hold a slot each: the 17th
// query of the user is refused as busy, and the stalled ones are dropped
// (logged) once they have read nothing for the write timeout (shortened
// to 20 s by a failpoint), after which the user is served again.
func TestStalledAuditQueriesBounded(t *testing.T) {
	d := startDaemon(t, "", failpoints("MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT=20s"))
	// A history larger than a socket's buffers (records keep strings of
	// up to 1 KiB whole): a query not read blocks.
	args := []string{filepath.Join(env.bin, "testserver")}
	for range 60 {
		args = append(args, strings.Repeat("a", 1000))
	}
	for i := range 12 {
		d.mustCLI(t, append([]string{"server", "add", fmt.Sprintf("big%d", i), "--"}, args...)...)
	}
	const bound = 16
	var stalled []*api.Conn
	defer func() {
		for _, c := range stalled {
			_ = c.Close()
		}
	}()
	query := func() (*api.Conn, *api.Reply) {
		t.Helper()
		c, err := api.Dial(d.socket)
		must(t, err, "dial")
		r, err := c.Do(api.Request{Op: api.OpAudit, Audit: &api.AuditQuery{}})
		must(t, err, "audit query")
		return c, r
	}
	for i := range bound {
		c, r := query()
		stalled = append(stalled, c)
		if !r.OK {
			t.Fatalf("query %d refused: %s", i, r.Error)
		}
	}
	c, r := query()
	_ = c.Close()
	if r.OK || r.Code != api.CodeBusy || !strings.Contains(r.Error, fmt.Sprintf("%d audit queries", bound)) {
		t.Fatalf("query %d: %+v, want busy naming the bound", bound+1, r)
	}
	testenv.WaitFor(t, "the stalled queries to be dropped", 90*time.Second, func() (bool, string) {
		log := d.log.String()
		return strings.Count(log, "audit query dropped") == bound, fmt.Sprintf("%d dropped", strings.Count(log, "audit query dropped"))
	})
	if out, err := d.cli(t, 0, "audit", "--type", "server.add"); err != nil || !strings.Contains(out, "big11") {
		t.Fatalf("audit after the stalled queries were dropped: %v\n%.300s", err, out)
	}
}

// A trace whose client reads nothing is dropped after the write timeout,
// as an audit query is: before, it held its goroutine, its connection and
// one of the user's stream slots for as long as the client lived.
func TestStalledTraceDropped(t *testing.T) {
	setup(t) // env.bin is known after setup
	d := startDaemon(t, fmt.Sprintf("[servers.busy]\ncommand = [%q]\n", filepath.Join(env.bin, "testserver")),
		failpoints("MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT=3s"))
	c, err := api.Dial(d.socket)
	must(t, err, "dial")
	defer func() { _ = c.Close() }()
	r, err := c.Do(api.Request{Op: api.OpTrace})
	must(t, err, "trace")
	if !r.OK {
		t.Fatalf("trace refused: %s", r.Error)
	}
	// The trace's frames fill the socket's buffers: thousands of execs
	// and opens, each an event, while the client reads nothing.
	s := d.connect(t, "busy", mcp.ProtocolVersion20251125)
	toolNames(t, s)
	testenv.WaitFor(t, "the trace that reads nothing to be dropped", 120*time.Second, func() (bool, string) {
		callText(t, s, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c", "for i in $(seq 500); do /bin/cat /etc/hostname /etc/passwd >/dev/null; done"}})
		n := strings.Count(d.log.String(), "trace dropped: its client read nothing")
		return n == 1, fmt.Sprintf("%d traces dropped", n)
	})
}
