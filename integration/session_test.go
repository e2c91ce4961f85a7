package integration

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestEndToEndBothEras(t *testing.T) {
	d := startDaemon(t, "")
	tests := []struct {
		name, pin, want string
	}{
		{"default 2026-07-28", "", mcp.ProtocolVersion20260728},
		{"pinned 2025-11-25", mcp.ProtocolVersion20251125, mcp.ProtocolVersion20251125},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := d.connect(t, "test", tt.pin)
			if got := c.ProtocolVersion(); got != tt.want {
				t.Fatalf("negotiated %q, want %q", got, tt.want)
			}
			tools, err := c.ListTools(ctxT(t, 30*time.Second), mcp.ListToolsRequest{})
			must(t, err, "tools/list")
			names := map[string]bool{}
			for _, tl := range tools.Tools {
				names[tl.Name] = true
			}
			for _, want := range []string{"echo", "read_file", "write_file", "list_dir", "http_get", "run_command", "sleep", "big_output"} {
				if !names[want] {
					t.Errorf("tools/list lacks %q: %v", want, names)
				}
			}
			if got, isErr := callText(t, c, "echo", map[string]any{"text": "hello through the cage"}); got != "hello through the cage" || isErr {
				t.Fatalf("echo = %q (isError %v)", got, isErr)
			}
			// The server really runs in the sandbox: pid 1 of its own
			// namespace, as nobody (the delegator is root).
			if got, _ := callText(t, c, "env", map[string]any{"name": "HOME"}); !strings.Contains(got, "uid=65534") || !strings.Contains(got, "pid=1") {
				t.Fatalf("env = %q, want uid=65534 and pid=1", got)
			}
		})
	}
	d.waitClean("finished sessions")
	if code := d.stop(); code != 0 {
		t.Fatalf("mcpcaged exited %d on SIGTERM, want 0", code)
	}
}

func TestOutOfOrderResponses(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", "")
	var wg sync.WaitGroup
	order := make(chan string, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		got, _ := callText(t, c, "sleep", map[string]any{"ms": 1500})
		order <- got
	}()
	// The slow call first: the echo is sent once the slow one is recorded,
	// that is on its way to the server.
	d.waitCall(t, "sleep")
	go func() {
		defer wg.Done()
		got, _ := callText(t, c, "echo", map[string]any{"text": "fast"})
		order <- got
	}()
	wg.Wait()
	close(order)
	var got []string
	for s := range order {
		got = append(got, s)
	}
	if len(got) != 2 || got[0] != "fast" || got[1] != "slept 1500ms" {
		t.Fatalf("answers arrived as %q, want the fast call first", got)
	}
}

func TestServerDiesMidRequest(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	_, err := c.CallTool(ctxT(t, 30*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "crash", Arguments: map[string]any{"status": 7}}})
	if err == nil || !strings.Contains(err.Error(), "exited with status 7") {
		t.Fatalf("call to a crashing server: err = %v, want an error naming exit status 7", err)
	}
	if code := c.shimExit(t); code != 7 {
		t.Fatalf("shim exited %d, want the server's status 7", code)
	}
	if !strings.Contains(c.stderr.String(), `server "test" exited with status 7`) {
		t.Fatalf("shim stderr does not explain the exit: %q", c.stderr.String())
	}
	d.waitClean("a crashed server")
}

func TestLargeMessages(t *testing.T) {
	const big = 32 << 20
	t.Run("32MiB both ways under the default cap", func(t *testing.T) {
		d := startDaemon(t, "")
		c := d.connect(t, "test", mcp.ProtocolVersion20251125)
		got, _ := callText(t, c, "big_output", map[string]any{"bytes": big})
		if len(got) != big {
			t.Fatalf("big_output returned %d bytes, want %d", len(got), big)
		}
		text := strings.Repeat("y", big)
		got, _ = callText(t, c, "echo", map[string]any{"text": text})
		if got != text {
			t.Fatalf("echo of 32 MiB came back as %d bytes", len(got))
		}
	})
	t.Run("server message over the cap", func(t *testing.T) {
		d := startDaemon(t, "[daemon]\nmax_message_bytes = \"8MiB\"\n")
		c := d.connect(t, "test", mcp.ProtocolVersion20251125)
		_, err := c.CallTool(ctxT(t, 60*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "big_output", Arguments: map[string]any{"bytes": big}}})
		if err == nil || !strings.Contains(err.Error(), "max_message_bytes") {
			t.Fatalf("err = %v, want one naming max_message_bytes", err)
		}
		if code := c.shimExit(t); code == 0 {
			t.Fatal("shim exited 0 after the session was cut")
		}
		if !strings.Contains(c.stderr.String(), "max_message_bytes") {
			t.Fatalf("shim stderr = %q", c.stderr.String())
		}
		d.waitClean("an oversized session")
	})
	t.Run("client message over the cap", func(t *testing.T) {
		d := startDaemon(t, "[daemon]\nmax_message_bytes = \"8MiB\"\n")
		r := startRaw(t, d.shimCmd("test"))
		r.initialize()
		// The shim exits before it has written everything: ignore the write error.
		go func() {
			_, _ = io.WriteString(r.in, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`+strings.Repeat("z", big)+`"}}}`+"\n")
		}()
		line := r.next()
		if !strings.Contains(line, "-32004") || !strings.Contains(line, "max_message_bytes") {
			t.Fatalf("got %.300q, want a -32004 error naming max_message_bytes", line)
		}
		if code := r.wait(); code != 1 {
			t.Fatalf("shim exited %d, want 1", code)
		}
		if !strings.Contains(r.stderr.String(), "max_message_bytes") {
			t.Fatalf("shim stderr = %q", r.stderr.String())
		}
		d.waitClean("an oversized session")
	})
}

func TestMalformedClientInput(t *testing.T) {
	d := startDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	r.send("this is not json\n")
	if line := r.next(); !strings.Contains(line, `"code":-32700`) {
		t.Fatalf("got %q, want a -32700 parse error", line)
	}
	// An id a server reading doubles would take for another (2^53+1 is
	// 2^53 there) is refused, and the session goes on.
	r.send(`{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/call","params":{"name":"echo","arguments":{"text":"big id"}}}` + "\n")
	if line := r.response("9007199254740993"); !strings.Contains(line, `"code":-32600`) || !strings.Contains(line, "2^53-1") {
		t.Fatalf("a request id beyond 2^53: %q, want a -32600 refusal that says why", line)
	}
	// A null id is refused before any decision: not counted as allowed
	// (nor taken from a consent's calls), and never forwarded.
	r.send(`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo","arguments":{"text":"null id"}}}` + "\n")
	if line := r.response("null"); !strings.Contains(line, `"code":-32600`) || !strings.Contains(line, "must not be null") {
		t.Fatalf("a request with a null id: %q, want a -32600 refusal", line)
	}
	r.send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"still here"}}}` + "\n")
	line := r.response("7")
	if !strings.Contains(line, "still here") {
		t.Fatalf("session did not continue after bad input: %q", line)
	}
	if ss := d.sessions(t); len(ss) != 1 || ss[0].Allowed != 1 {
		t.Fatalf("sessions %+v: want one, with the one call that ran counted as allowed", ss)
	}
	r.closeInput()
	if code := r.wait(); code != 0 {
		t.Fatalf("shim exited %d after a clean close, want 0; stderr %s", code, r.stderr.String())
	}
	d.waitClean("a closed session")
}

func TestStderrIsDrained(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	const n = 10 << 20
	got, _ := callText(t, c, "stderr_flood", map[string]any{"bytes": n})
	if got != fmt.Sprintf("wrote %d bytes to stderr", n) {
		t.Fatalf("stderr_flood = %q", got)
	}
	if got, _ := callText(t, c, "echo", map[string]any{"text": "after flood"}); got != "after flood" {
		t.Fatalf("echo after flood = %q", got)
	}
	testenv.WaitFor(t, fmt.Sprintf("the shim to relay %d bytes of stderr", n), 20*time.Second, func() (bool, string) {
		got := c.stderr.Len()
		return got >= n, fmt.Sprintf("%d bytes", got)
	})
}

func TestClientDisconnectMidCall(t *testing.T) {
	d := startDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":30000}}}` + "\n")
	d.waitLog("session started")
	if len(d.tasks()) != 1 {
		t.Fatalf("tasks = %v, want one", d.tasks())
	}
	d.waitCall(t, "sleep")                         // mid-call: the call is on its way to the server
	must(t, r.cmd.Process.Kill(), "kill the shim") // the client dies with the shim
	_ = r.cmd.Wait()                               // "signal: killed"
	d.waitClean("a client that vanished mid-call")
	d.waitLog("reason=client_gone")
}

func TestDaemonCrashLeavesNothingAfterRestart(t *testing.T) {
	d := startDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	if len(d.containers()) != 1 {
		t.Fatalf("containers = %v, want one", d.containers())
	}
	must(t, d.cmd.Process.Kill(), "kill mcpcaged") // SIGKILL: no clean-up at all
	<-d.exited
	if code := r.wait(); code == 0 {
		t.Fatal("shim exited 0 after the daemon died")
	}
	if !strings.Contains(r.stderr.String(), "lost the connection to mcpcaged") {
		t.Fatalf("shim stderr = %q", r.stderr.String())
	}
	if len(d.containers()) != 1 {
		t.Fatalf("expected the crashed daemon's container to remain until restart, have %v", d.containers())
	}
	d.start()
	if left := d.leftovers(); len(left) != 0 {
		t.Fatalf("after restart: %v", left)
	}
	if !strings.Contains(d.log.String(), "removed leftover container") {
		t.Fatalf("restart did not report the clean-up:\n%s", d.log.String())
	}
	// And the restarted daemon serves.
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "back"}); got != "back" {
		t.Fatalf("echo = %q", got)
	}
}

func TestSIGTERMEndsSessions(t *testing.T) {
	d := startDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	r.send(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":30000}}}` + "\n")
	// Pending: the daemon has read and decided it (its record precedes
	// the forward).
	d.waitCall(t, "sleep")
	if code := d.stop(); code != 0 {
		t.Fatalf("mcpcaged exited %d on SIGTERM, want 0", code)
	}
	// The server may answer the cancelled call itself as it stops (mcp-go
	// does, with isError) or mcpcage answers it with an error: never silence.
	line := r.response("1")
	if !strings.Contains(line, `"error"`) && !strings.Contains(line, `"isError":true`) {
		t.Fatalf("pending call answered %q, want an error", line)
	}
	if code := r.wait(); code == 0 {
		t.Fatal("shim exited 0 when the daemon shut the session down")
	}
	if !strings.Contains(r.stderr.String(), "shutting down") {
		t.Fatalf("shim stderr = %q", r.stderr.String())
	}
	if left := d.leftovers(); len(left) != 0 {
		t.Fatalf("after SIGTERM: %v", left)
	}
}

// A daemon stopped while containerd creates a session's sandbox leaves
// nothing behind: containerd carries out a creation whose caller has
// stopped waiting for its reply, so the container (or its task) exists
// although the daemon's call failed. Before, Create ran containerd's
// calls under the daemon's context; what such a call made stayed, with
// its label, until the next daemon's start.
func TestStopDuringCreateLeavesNoContainer(t *testing.T) {
	for _, method := range []string{"Containers/Create", "Tasks/Create"} {
		t.Run(strings.Split(method, "/")[0], func(t *testing.T) {
			gate := newFailpointGate(t)
			d := startDaemon(t, "[daemon]\nwarm_sandboxes = 0\n", failpoints(gate.env("MCPCAGE_FAILPOINT_CONTAINERD_REPLY_GATE")))
			gate.armFor(t, method)
			r := startRaw(t, d.shimCmd("test"))
			gate.waitReached(t, "containerd's "+method+" to be carried out, its reply held", d.log.String)
			must(t, d.cmd.Process.Signal(syscall.SIGTERM), "SIGTERM")
			d.waitLog(`msg="shutting down"`) // the daemon's context is cancelled
			gate.open(t)
			d.stoppedClean(t, "during "+method)
			if code := r.wait(); code == 0 {
				t.Fatalf("the shim of a session that never started exited 0; stderr %q", r.stderr.String())
			}
		})
	}
}

// A warm sandbox being built when the daemon stops, on a containerd that
// takes 12 s to create its task (a loaded host), is waited for, removed,
// and leaves nothing: the daemon waited 10 s for its warm builds before,
// then closed its containerd client under the build (a CI run left such a
// container behind). The pool's work now shares the shutdown's bound
// with the sessions.
func TestStopDuringAWarmBuildLeavesNoContainer(t *testing.T) {
	const slow = 12 * time.Second
	gate := newFailpointGate(t)
	d := startDaemon(t, "[daemon]\nwarm_sandboxes = 2\n", failpoints(gate.env("MCPCAGE_FAILPOINT_CONTAINERD_REPLY_GATE")))
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "warm"}); got != "warm" {
		t.Fatalf("echo = %q", got)
	}
	gate.armFor(t, "Tasks/Create")
	must(t, c.Close(), "close the client") // the session's end prepares the next sandbox
	gate.waitReached(t, "the warm build's Tasks/Create to be carried out, its reply held", d.log.String)
	must(t, d.cmd.Process.Signal(syscall.SIGTERM), "SIGTERM")
	d.waitLog(`msg="shutting down"`)
	select {
	case <-d.exited: // it gave up on the build: what is left shows below
	case <-time.After(slow): // containerd answers late
		gate.open(t)
	}
	d.stoppedClean(t, "during a warm build")
}

// stoppedClean waits at most 40 s for d, sent SIGTERM, to exit, and fails
// t unless it exited 0 and left nothing in its namespace (when: what it
// was doing).
func (d *daemon) stoppedClean(t *testing.T, when string) {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("mcpcaged did not stop within 40s:\n%s", d.log.String())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("mcpcaged exited %d on SIGTERM, want 0:\n%s", code, d.log.String())
	}
	if left := d.leftAfterStop(); len(left) != 0 {
		t.Fatalf("mcpcaged stopped %s and left %v:\n%s", when, left, d.log.String())
	}
}

// A creation whose reply is lost (containerd made the container or its
// task, the daemon heard an error) leaves nothing behind, and the daemon
// serves on.
func TestLostCreateReplyLeavesNoContainer(t *testing.T) {
	for _, method := range []string{"Containers/Create", "Tasks/Create"} {
		t.Run(strings.Split(method, "/")[0], func(t *testing.T) {
			d := startDaemon(t, "[daemon]\nwarm_sandboxes = 0\n", failpoints("MCPCAGE_FAILPOINT_CONTAINERD_REPLY_LOST="+method))
			r := startRaw(t, d.shimCmd("test"))
			if code := r.wait(); code == 0 {
				t.Fatalf("the shim of a session whose sandbox was not created exited 0; stderr %q", r.stderr.String())
			}
			if !strings.Contains(r.stderr.String(), "reply was lost") {
				t.Fatalf("the shim did not say why its server did not start: %q", r.stderr.String())
			}
			if left := d.leftovers(); len(left) != 0 {
				t.Fatalf("a creation whose reply was lost left %v:\n%s", left, d.log.String())
			}
			c := d.connect(t, "test", mcp.ProtocolVersion20251125)
			if got, _ := callText(t, c, "echo", map[string]any{"text": "next"}); got != "next" {
				t.Fatalf("echo = %q", got)
			}
		})
	}
}

func TestShimErrors(t *testing.T) {
	d := startDaemon(t, "")
	tests := []struct {
		name   string
		cmd    func() *exec.Cmd
		code   int
		substr string
	}{
		{"unknown server", func() *exec.Cmd { return d.shimCmd("nope") }, 3, `no server named "nope"; configured servers: test`},
		{"daemon not running", func() *exec.Cmd {
			c := d.shimCmd("test")
			c.Env = append(c.Env, "MCPCAGE_SOCKET="+d.dir+"/absent.sock")
			return c
		}, 2, "mcpcaged is not running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := tt.cmd()
			var stderr syncBuffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != tt.code {
				t.Fatalf("exit = %v, want status %d; stderr %q", err, tt.code, stderr.String())
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.substr) {
				t.Fatalf("stderr = %q, want one line containing %q", out, tt.substr)
			}
		})
	}
	// A command that does not exist in the sandbox is a launch error.
	bad := startDaemon(t, "[servers.broken]\ncommand = [\"/nonexistent/server\"]\n")
	cmd := bad.shimCmd("broken")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), `cannot start server "broken"`) {
		t.Fatalf("exit = %v, stderr = %q", err, stderr.String())
	}
	bad.waitClean("a failed launch")
}
