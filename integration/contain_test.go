package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestBugEndsOnlyItsSession: a bug of mcpcaged's (a panic) where a
// client's or a server's message is dealt with, or where a request is
// served, ended the daemon, and with it every user's sessions, their
// records in flight and the audit log's writer. It now ends only the
// session it happened in (reason internal_error, one line on the shim's
// stderr, the server stopped) or fails only that request; the daemon and
// the other sessions go on, it is counted in mcpcage_internal_errors_total
// and the audit log still verifies. The failpoint MCPCAGE_FAILPOINT_PANIC
// puts the panics there: deciding a call of tool "boom" (the client
// loop), recording a result of tool "env" (the server loop), and serving
// a "servers" request. Later, on the goroutines a session runs beside its
// loops and after its server started: the client's answer to a question
// about tool "echo" (server "asks"), and the start of server "late" once
// its session was answered (a bug there left its server running outside
// every bound and record).
func TestBugEndsOnlyItsSession(t *testing.T) {
	setup(t)
	testserver := filepath.Join(env.bin, "testserver")
	d := consentDaemon(t, fmt.Sprintf("[servers.asks]\ncommand = [%q]\ndefault_decision = \"ask\"\n[servers.late]\ncommand = [%q]\n", testserver, testserver),
		failpoints("MCPCAGE_FAILPOINT_PANIC=decide:boom,result:env,op:servers,kernel:process.exec /bin/true,kernel:process.exec /usr/bin/true,answer:echo,started:late"))
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "*")
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	bystander := d.connect(t, "test", mcp.ProtocolVersion20251125)
	echo := func(what string) {
		t.Helper()
		if got, isErr := callText(t, bystander, "echo", map[string]any{"text": what}); isErr || got != what {
			t.Fatalf("the other session's echo %s: %q (isError %v)", what, got, isErr)
		}
	}
	echo("before")

	ended := 0 // sessions ended by a bug
	for _, tc := range []struct{ loop, tool string }{{"client", "boom"}, {"server", "env"}} {
		t.Run("a bug in the "+tc.loop+" loop", func(t *testing.T) {
			r := startRaw(t, d.shimCmd("test"))
			r.initialize()
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": map[string]any{"name": tc.tool, "arguments": map[string]any{"name": "HOME"}}})
			r.send(string(b) + "\n")
			if code := r.wait(); code == 0 || !strings.Contains(r.stderr.String(), "internal error") {
				t.Fatalf("the session of the bug: exit %d, stderr %q; want it ended saying so", code, r.stderr.String())
			}
			ended++
			waitInternalEnds(t, d, ended)
			d.waitLog(`loop=` + tc.loop)
			echo("after the " + tc.loop + " loop's bug")
		})
	}

	// The one reader of every session's kernel events: the event's session
	// has its server stopped, and the reader goes on (a second session's
	// event reaches it too).
	for i := 1; i <= 2; i++ {
		t.Run(fmt.Sprintf("a bug dealing with a kernel event, %d", i), func(t *testing.T) {
			r := startRaw(t, d.shimCmd("test"))
			r.initialize()
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": map[string]any{"name": "run_command", "arguments": map[string]any{"command": "/bin/true"}}})
			r.send(string(b) + "\n")
			if code := r.wait(); code == 0 || !strings.Contains(r.stderr.String(), "internal error") {
				t.Fatalf("the session of the kernel event's bug: exit %d, stderr %q; want its server stopped, saying so", code, r.stderr.String())
			}
			ended++
			waitInternalEnds(t, d, ended)
			testenv.WaitFor(t, "the bug counted", 30*time.Second, func() (bool, string) {
				got := metricValue(t, scrape(t, st.Metrics), `mcpcage_internal_errors_total{where="kernel_event"}`)
				return got == float64(i), fmt.Sprint(got)
			})
			echo(fmt.Sprintf("after kernel event bug %d", i))
		})
	}

	t.Run("a bug dealing with the client's answer to a question", func(t *testing.T) {
		a := &answerer{answer: "once"}
		c := d.connectWith(t, "asks", mcp.ProtocolVersion20251125, client.WithElicitationHandler(a))
		toolNames(t, c)
		asked := callInBackground(t, c, "echo", map[string]any{"text": "hi"})
		got := answered(t, asked)
		if got.err == nil && !got.isErr {
			t.Fatalf("the call whose answer hit the bug passed: %q", got.text)
		}
		if n := len(a.questions()); n != 1 {
			t.Fatalf("%d questions, want 1", n)
		}
		_ = c.Close()
		ended++
		waitInternalEnds(t, d, ended)
		d.waitLog(`loop=question`)
		echo("after the question's bug")
	})

	t.Run("a bug once the server started", func(t *testing.T) {
		r := startRaw(t, d.shimCmd("late"))
		if code := r.wait(); code == 0 || !strings.Contains(r.stderr.String(), "internal error") {
			t.Fatalf("the session whose start hit the bug: exit %d, stderr %q; want it ended saying so", code, r.stderr.String())
		}
		ended++
		waitInternalEnds(t, d, ended)
		// Its server is stopped and its container removed.
		id := ""
		for _, rec := range d.auditRecords(t) {
			if str(rec, "type") == "session.start" && str(rec, "server") == "late" {
				id = str(rec, "session")
			}
		}
		if id == "" {
			t.Fatal("no session.start record of server late")
		}
		testenv.WaitFor(t, "the container of the session whose start hit the bug removed", 30*time.Second, func() (bool, string) {
			left := strings.Join(append(d.containers(), d.tasks()...), " ")
			return !strings.Contains(left, id), left
		})
		echo("after the start's bug")
	})

	t.Run("a bug serving a request", func(t *testing.T) {
		var out []api.ServerInfo
		if err := api.Call(d.socket, api.Request{Op: api.OpServers}, &out); err == nil {
			t.Fatalf("the request whose serving panicked was answered: %+v", out)
		}
		must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status after it")
		echo("after the request's bug")
	})

	metrics := scrape(t, st.Metrics)
	// The bug after the server started goes on to the request's handler
	// once the session is ended: it is counted there.
	for where, want := range map[string]float64{"session": 3, "request": 2} {
		if got := metricValue(t, metrics, fmt.Sprintf(`mcpcage_internal_errors_total{where=%q}`, where)); got != want {
			t.Errorf("mcpcage_internal_errors_total{where=%q} = %v, want %v", where, got, want)
		}
	}
	_ = bystander.Close()
	d.waitClean("the sessions")
	cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), "audit", "verify")
	cmd.Env = append(os.Environ(), "MCPCAGE_CONFIG="+d.config)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "audit log OK") {
		t.Fatalf("audit verify after the bugs: %v %s", err, out)
	}
}

// waitInternalEnds waits until d's audit log has n session.end records of
// reason internal_error.
func waitInternalEnds(t *testing.T, d *daemon, n int) {
	t.Helper()
	testenv.WaitFor(t, "the session's end on the record", 30*time.Second, func() (bool, string) {
		got := 0
		for _, rec := range d.auditRecords(t) {
			if str(rec, "type") == "session.end" && str(rec, "reason") == string(api.ExitInternal) {
				got++
			}
		}
		return got == n, fmt.Sprintf("%d session.end records of reason %s", got, api.ExitInternal)
	})
}
