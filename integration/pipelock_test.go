package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestHeldPipeLockCannotHoldTheSession: the kernel takes a pipe's lock
// without a timeout, even for a read or write that must not wait
// (RWF_NOWAIT), and a client shares the pipes it passed: it can hold a
// pipe's lock with a splice from an idle blocking socket into its stdin
// pipe, or from its stdout pipe into a full socket. The daemon's read or
// write of that pipe then sleeps uninterruptibly, where no deadline
// reaches it. Once the shim is gone the session must still end (its
// session.end record, with reason client_stuck; its container removed),
// and the daemon must still shut down; the thread that waits stays until
// the lock is released. Before the fix the session never ended, and its
// daemon never stopped.
func TestHeldPipeLockCannotHoldTheSession(t *testing.T) {
	tests := []struct {
		name string
		hold func(t *testing.T, d *daemon, h *heldClient)
		// stopHeld: the daemon is told to stop while the lock is held;
		// otherwise the lock is released and the user's slot must come
		// back.
		stopHeld bool
	}{
		{"stdin, by a splice from an idle socket", holdStdin, true},
		{"stdout, by a splice into a full socket", holdStdout, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One session per user: the session let go of keeps its slot
			// while its thread waits on the lock.
			d := startDaemon(t, "[daemon]\nmax_sessions_per_user = 1\n")
			h := startHeldClient(t, d)
			defer h.close()
			tt.hold(t, d, h)
			t.Logf("a thread of mcpcaged waits on the client's pipe: %s", h.stuck)

			must(t, h.cmd.Process.Kill(), "kill the shim")
			_, _ = h.cmd.Process.Wait()
			var end map[string]any
			testenv.WaitFor(t, "the session.end record", 60*time.Second, func() (bool, string) {
				for _, r := range d.auditRecords(t) {
					if str(r, "type") == string(api.RecordSessionEnd) {
						end = r
						return true, ""
					}
				}
				return false, "no session.end record"
			})
			if end["reason"] != string(api.ExitClientStuck) {
				t.Fatalf("session.end says reason %v, want %s: %v", end["reason"], api.ExitClientStuck, end)
			}
			if _, ok := testenv.ThreadOnPipe(d.cmd.Process.Pid); !ok {
				t.Fatalf("the daemon's thread no longer waits on the pipe: the test did not hold the lock through the session's end")
			}
			d.waitClean("the session whose client held its pipe's lock")
			if st := d.status(t).Enforcement["client stdio"]; !strings.Contains(st, "holds a pipe's lock") || !strings.Contains(st, "cannot either") {
				t.Fatalf("status says client stdio %q", st)
			}
			// The session let go of still counts toward the user's
			// sessions while its thread waits: the next one is refused,
			// with what to do.
			out, err := d.shimCmd("test").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "already has 1 sessions (mcpcage run; max_sessions_per_user in [daemon]) open") {
				t.Fatalf("a second session while the first one's thread waits: %v, %s", err, out)
			}

			if tt.stopHeld {
				// The daemon shuts down; its process exits once the lock
				// is released (a thread in an uninterruptible wait holds
				// the exit).
				must(t, d.cmd.Process.Signal(syscall.SIGTERM), "SIGTERM mcpcaged")
				d.waitLog(`msg=stopped`)
				h.release()
				h.release = func() {}
				if code := d.stop(); code != 0 {
					t.Fatalf("mcpcaged exited with %d", code)
				}
				return
			}
			// Once the lock is free, the relay ends and the slot comes
			// back: the user's next session runs.
			h.release()
			h.release = func() {}
			testenv.WaitFor(t, "the user's session slot to come back", 30*time.Second, func() (bool, string) {
				if _, ok := testenv.ThreadOnPipe(d.cmd.Process.Pid); ok {
					return false, "a thread still waits on the pipe"
				}
				// stdin from /dev/null: a session that starts its server
				// and ends at once, with status 0.
				out, err := d.shimCmd("test").CombinedOutput()
				return err == nil && !strings.Contains(string(out), "max_sessions_per_user"), fmt.Sprintf("%v: %s", err, out)
			})
		})
	}
}

// TestClientFilesAreBoundedDaemonWide: a session whose client holds a
// pipe's lock keeps daemon threads asleep in the kernel, live or ended;
// max_sessions_per_user bounds one user's, and a daemon-wide bound of
// sessions holding client files all users' together (a process out of
// threads dies). Past it (lowered to one here, with the failpoints build)
// a session still runs, its stdio relayed by its shim in frames, and
// says so; once the files are closed, sessions take their pipes again.
func TestClientFilesAreBoundedDaemonWide(t *testing.T) {
	d := startDaemon(t, "[daemon]\nmax_sessions_per_user = 8\n", failpoints("MCPCAGE_FAILPOINT_MAX_CLIENT_FILES=1"))
	sessionStarts := func() (out []map[string]any) {
		for _, r := range d.auditRecords(t) {
			if str(r, "type") == string(api.RecordSessionStart) {
				out = append(out, r)
			}
		}
		return out
	}
	// session runs one session of echo with the client's pipes, and
	// returns how its stdio reached the daemon (its session.start
	// record).
	session := func(what string) string {
		t.Helper()
		starts := len(sessionStarts())
		p, err := d.startShim("test", 60*time.Second)
		must(t, err, "%s: start the shim", what)
		err = p.churn(what, false)
		code, werr := p.wait()
		if err != nil || werr != nil || code != 0 {
			t.Fatalf("%s: %v, %v, exit %d, stderr %q", what, err, werr, code, p.stderr.String())
		}
		var recs []map[string]any
		testenv.WaitFor(t, what+": its session.start record", 10*time.Second, func() (bool, string) {
			recs = sessionStarts()
			return len(recs) == starts+1, fmt.Sprintf("%d session.start records, want %d", len(recs), starts+1)
		})
		return str(recs[len(recs)-1], "stdio")
	}
	metric := func(name string) float64 {
		st := d.status(t)
		resp, err := noKeepAlive.Get("http://" + st.Metrics + "/metrics")
		must(t, err, "scrape")
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		must(t, err, "read the metrics")
		return metricValue(t, string(body), name)
	}
	held := func() float64 { return metric("mcpcage_sessions_held") }

	if got := session("alone"); got != string(api.StdioPassed) {
		t.Fatalf("a session alone: stdio %q, want passed", got)
	}
	// A live session holds the one slot: the next one is relayed.
	h := startHeldClient(t, d)
	defer h.close()
	if got := session("beside a live one"); got != string(api.StdioFramed) {
		t.Fatalf("a session beside a live one at the bound: stdio %q, want framed", got)
	}
	// Its client holds a pipe's lock, and it ends: its files stay held.
	holdStdout(t, d, h)
	must(t, h.cmd.Process.Kill(), "kill the shim")
	_, _ = h.cmd.Process.Wait()
	testenv.WaitFor(t, "the ended session counted as held", 60*time.Second, func() (bool, string) {
		n := held()
		return n == 1, fmt.Sprintf("mcpcage_sessions_held %v", n)
	})
	if n := metric("mcpcage_sessions_client_files"); n != 1 {
		t.Fatalf("mcpcage_sessions_client_files %v with one session held, want 1", n)
	}
	if got := session("beside a held one"); got != string(api.StdioFramed) {
		t.Fatalf("a session beside a held one at the bound: stdio %q, want framed", got)
	}
	if _, ok := testenv.ThreadOnPipe(d.cmd.Process.Pid); !ok {
		t.Fatal("no daemon thread waits on the held pipe: the test did not hold the lock")
	}
	// The lock released, the files are closed and the slot comes back.
	h.release()
	h.release = func() {}
	testenv.WaitFor(t, "the held session freed", 30*time.Second, func() (bool, string) {
		n := held()
		return n == 0, fmt.Sprintf("mcpcage_sessions_held %v", n)
	})
	if got := session("once freed"); got != string(api.StdioPassed) {
		t.Fatalf("a session once the files are closed: stdio %q, want passed", got)
	}
	testenv.WaitFor(t, "no session holding client files", 10*time.Second, func() (bool, string) {
		n := metric("mcpcage_sessions_client_files")
		return n == 0, fmt.Sprintf("mcpcage_sessions_client_files %v", n)
	})
}

// heldClient is an MCP client's side of a session with raw, blocking
// pipes (the way a client spawns the shim), and the socket pair a splice
// holds one of the pipe's lock with.
type heldClient struct {
	t         *testing.T
	cmd       *exec.Cmd
	in, out   *os.File // the client's ends: stdin's write end, stdout's read end
	sp        [2]int
	release   func() // lets the splice finish, and so the lock go
	spliceEnd <-chan error
	stuck     string // the daemon thread found waiting on the pipe
	next      int    // the next request id
}

// startHeldClient starts `mcpcage run test` with blocking pipes, and
// initializes the session with one echo answered.
func startHeldClient(t *testing.T, d *daemon) *heldClient {
	var in, out [2]int
	must(t, unix.Pipe2(in[:], unix.O_CLOEXEC), "pipe")
	must(t, unix.Pipe2(out[:], unix.O_CLOEXEC), "pipe")
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(t, err, "socketpair")
	cmd := d.shimCmd("test")
	shimIn, shimOut := os.NewFile(uintptr(in[0]), "shim stdin"), os.NewFile(uintptr(out[1]), "shim stdout")
	cmd.Stdin, cmd.Stdout = shimIn, shimOut
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start(), "start the shim")
	_ = shimIn.Close()
	_ = shimOut.Close()
	h := &heldClient{t: t, in: os.NewFile(uintptr(in[1]), "client stdin"), out: os.NewFile(uintptr(out[0]), "client stdout"),
		cmd: cmd, sp: sp, release: func() {}, next: 3}
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"held","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"before"}}}`,
	} {
		h.send(line)
	}
	rd := bufio.NewReader(h.out)
	for {
		line, err := rd.ReadString('\n')
		must(t, err, "read the shim's stdout (its stderr: %s)", stderr.String())
		if strings.Contains(line, `"id":2`) {
			break
		}
	}
	return h
}

// send writes one message to the client's stdin pipe.
func (h *heldClient) send(line string) {
	_, err := unix.Write(int(h.in.Fd()), []byte(line+"\n"))
	must(h.t, err, "write to the shim's stdin")
}

// echo sends one more echo call.
func (h *heldClient) echo() {
	h.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"held"}}}`, h.next))
	h.next++
}

// splice starts a splice from fd in to fd out that holds the pipe's
// lock (testenv.SpliceHoldingLock).
func (h *heldClient) splice(in, out int) {
	h.spliceEnd = testenv.SpliceHoldingLock(h.t, in, out, 1<<16)
}

// waitStuck waits until a thread of mcpcaged sleeps uninterruptibly on a
// pipe, calling poke between looks.
func (h *heldClient) waitStuck(d *daemon, poke func()) {
	testenv.WaitFor(h.t, "a thread of mcpcaged waiting on the client's pipe", 20*time.Second, func() (bool, string) {
		if where, ok := testenv.ThreadOnPipe(d.cmd.Process.Pid); ok {
			h.stuck = where
			return true, ""
		}
		poke()
		return false, "no thread of mcpcaged in D state on a pipe"
	})
}

// close lets the splice finish and closes the client's ends.
func (h *heldClient) close() {
	h.release()
	h.release = func() {}
	_ = unix.Close(h.sp[1]) // the splice from the idle socket meets end of file
	if h.spliceEnd != nil { // none when the test ended before its splice
		select {
		case err := <-h.spliceEnd:
			if err != nil {
				h.t.Logf("the test's splice ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			h.t.Errorf("the test's splice did not end")
		}
	}
	_ = unix.Close(h.sp[0])
	_ = h.in.Close()
	_ = h.out.Close()
	_ = h.cmd.Wait()
}

// holdStdin holds the lock of the client's stdin pipe with a splice from
// an idle socket into it, while the pipe has a message for the daemon:
// the daemon's next read of stdin waits on the lock. mcpcaged is stopped
// while the message is written and the splice takes the lock, so that it
// reads only then.
func holdStdin(t *testing.T, d *daemon, h *heldClient) {
	pid := d.cmd.Process.Pid
	must(t, syscall.Kill(pid, syscall.SIGSTOP), "SIGSTOP mcpcaged")
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	testenv.WaitFor(t, "every thread of mcpcaged to stop", 10*time.Second, func() (bool, string) {
		states := testenv.ThreadStates(pid)
		for tid, st := range states {
			if st.State != "T" && st.State != "t" {
				return false, fmt.Sprintf("thread %d in state %s", tid, st.State)
			}
		}
		return len(states) > 0, "no threads"
	})
	h.echo()
	h.splice(h.sp[0], int(h.in.Fd()))
	h.release = func() { _, _ = unix.Write(h.sp[1], []byte("\n")) } // one byte through: the splice ends
	must(t, syscall.Kill(pid, syscall.SIGCONT), "SIGCONT mcpcaged")
	h.waitStuck(d, func() {})
}

// holdStdout holds the lock of the client's stdout pipe with a splice
// from it into a full socket: the splice takes the daemon's next answer
// and waits, with the lock, for room in the socket; the daemon's next
// write waits on the lock.
func holdStdout(t *testing.T, d *daemon, h *heldClient) {
	must(t, unix.SetNonblock(h.sp[0], true), "non-blocking socket")
	// Fill it to the last byte: a write that does not fit is refused
	// whole, and the splice must find no room at all.
	for size := 64 << 10; size > 0; size /= 2 {
		chunk := make([]byte, size)
		for {
			_, err := unix.Write(h.sp[0], chunk)
			if err == unix.EAGAIN {
				break
			}
			must(t, err, "fill the socket")
		}
	}
	must(t, unix.SetNonblock(h.sp[0], false), "blocking socket")
	h.splice(int(h.out.Fd()), h.sp[0])
	h.release = func() {
		// Room in the socket: the splice sends what it holds and lets
		// go of the lock. Everything queued is read (a partly read
		// buffer frees no room).
		buf := make([]byte, 64<<10)
		for {
			n, _, err := unix.Recvfrom(h.sp[1], buf, unix.MSG_DONTWAIT)
			if n <= 0 || err != nil {
				return
			}
		}
	}
	h.waitStuck(d, h.echo)
}

// TestServerHoldingItsStdinLockIsStillStopped: a server can hold the lock
// of its own stdin, the pipe mcpcaged writes the client's messages to (it
// opens it again through /proc/1/fd/0 and splices from it into a full
// socket, signals blocked). mcpcaged's next write then sleeps in the
// kernel, and stopping the server began by closing that pipe, which
// waits for the write: the stop ladder never started, so a server whose
// shim was gone, whose daemon stopped or that on_suspect = "end-session"
// ended kept running (found by a red-team helper). The ladder must not
// wait on the pipe: SIGKILL of the sandbox ends the holder and the lock.
// The end of the relay (the server closes its output and stays) waited
// for that close too, and the end of the session for the relay (found by
// a red-team helper's review of the first fix).
func TestServerHoldingItsStdinLockIsStillStopped(t *testing.T) {
	setup(t)
	trigger := filepath.Join(itestRoot, fmt.Sprintf("stdinlock-%d", os.Getpid()))
	must(t, os.MkdirAll(trigger, 0o777), "mkdir")
	t.Cleanup(func() { _ = os.RemoveAll(trigger) })
	tests := []struct {
		name string
		end  func(t *testing.T, d *daemon, r *rawSession)
	}{
		{"the server closes its output and stays", func(t *testing.T, d *daemon, r *rawSession) {
			// The relay ends; the end of the session waited for its writer.
			must(t, os.WriteFile(filepath.Join(trigger, "go"), nil, 0o644), "trigger")
			d.record(t, "session.end", func(map[string]any) bool { return true })
			d.waitClean("the session whose server held its stdin's lock and closed its output")
		}},
		{"the shim is killed", func(t *testing.T, d *daemon, r *rawSession) {
			must(t, r.cmd.Process.Kill(), "kill the shim")
			end := d.record(t, "session.end", func(map[string]any) bool { return true })
			t.Logf("session.end: %v", end)
			d.waitClean("the session whose server held its stdin's lock")
		}},
		{"the daemon stops", func(t *testing.T, d *daemon, r *rawSession) {
			if code := d.stop(); code != 0 {
				t.Fatalf("mcpcaged exited with %d", code)
			}
			found := false
			for _, rec := range d.auditRecords(t) {
				found = found || str(rec, "type") == "session.end"
			}
			if !found {
				t.Fatalf("no session.end record once the daemon stopped:\n%s", d.log.String())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(filepath.Join(trigger, "go"))
			d := startDaemon(t, fmt.Sprintf("[daemon]\nstop_timeout = \"1s\"\n[servers.locker]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/trigger\" }]\n",
				filepath.Join(env.bin, "testserver"), trigger))
			r := startRaw(t, d.shimCmd("locker"))
			r.initialize()
			r.send(`{"jsonrpc":"2.0","id":"arm","method":"tools/call","params":{"name":"close_stdout_when","arguments":{"path":"/trigger/go"}}}` + "\n")
			if got := r.response(`"arm"`); !strings.Contains(got, "armed") {
				t.Fatalf("close_stdout_when: %s", got)
			}
			r.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":"lock","method":"tools/call","params":{"name":"run_command","arguments":{"command":%q,"args":["lock-server-stdin"]}}}`+"\n", filepath.Join(env.bin, "hostile")))
			if got := r.response(`"lock"`); !strings.Contains(got, "ESCAPED child") {
				t.Fatalf("hostile lock-server-stdin: %s", got)
			}
			// The splice takes the next message and holds the lock; the
			// one after it leaves a daemon thread waiting for the lock.
			n := 0
			testenv.WaitFor(t, "a daemon thread waiting for the lock of the server's stdin", 30*time.Second, func() (bool, string) {
				n++
				r.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`+"\n", n))
				detail, ok := testenv.ThreadOnPipe(d.cmd.Process.Pid)
				return ok, detail
			})
			tt.end(t, d, r)
		})
	}
}
