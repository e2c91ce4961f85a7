package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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

// TestStdioPassedToTheDaemon: a client that gives the shim pipes (as every
// MCP client does) has them read and written by the daemon itself, one
// hop; the session says so in `mcpcage sessions` and its session.start
// record.
func TestStdioPassedToTheDaemon(t *testing.T) {
	d := startDaemon(t, "")
	echoOnePassedSession(t, d, "one hop")
	r := d.record(t, string(api.RecordSessionStart), func(map[string]any) bool { return true })
	if r["stdio"] != string(api.StdioPassed) || r["server_stdio"] != "fifo" {
		t.Fatalf("session.start says stdio %v, server_stdio %v", r["stdio"], r["server_stdio"])
	}
	// The server's stdio are the daemon's FIFOs, not containerd's pipes,
	// and their names are gone.
	_, pids := d.sessionProcs(t)
	if len(pids) == 0 {
		t.Fatal("no process in the session's cgroup")
	}
	for fd, name := range []string{"in", "out", "err"} {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pids[0], fd))
		if err != nil || !strings.Contains(link, "/.mcpcage/stdio/"+name) || !strings.HasSuffix(link, "(deleted)") {
			t.Fatalf("server fd %d is %q (%v), want the removed FIFO /.mcpcage/stdio/%s", fd, link, err, name)
		}
	}
}

// TestStdioFramedFallback: stdin that is not a pipe or a stream socket
// (here a SOCK_SEQPACKET socket) stays with the shim, which relays it in
// frames; the session works the same.
func TestStdioFramedFallback(t *testing.T) {
	d := startDaemon(t, "")
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must(t, err, "socketpair")
	client, shimIn := os.NewFile(uintptr(pair[0]), "client"), os.NewFile(uintptr(pair[1]), "shim stdin")
	defer func() { _ = client.Close() }()
	out := filepath.Join(t.TempDir(), "stdout")
	outF, err := os.Create(out)
	must(t, err, "create stdout file")
	cmd := d.shimCmd("test")
	cmd.Stdin, cmd.Stdout = shimIn, outF
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start(), "start the shim")
	_ = shimIn.Close()
	_ = outF.Close()
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"framed","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"framed hello"}}}`,
	} {
		if _, err := client.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, "the echo result on the shim's stdout", 60*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), `"id":2`) && strings.Contains(string(b), "framed hello"), string(b) + stderr.String()
	})
	var sessions []api.SessionInfo
	must(t, json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &sessions), "decode sessions")
	if len(sessions) != 1 || sessions[0].Stdio != api.StdioFramed {
		t.Fatalf("sessions = %+v, want one with stdio %q", sessions, api.StdioFramed)
	}
	_ = client.Close() // end of input: the session ends
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shim: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the shim did not end after its stdin closed")
	}
}

// TestForeignSocketStaysWithTheShim: a unix stream socket whose other end
// is not the session user's (here one accepted by a listener of root's,
// which asks for the writer's credentials, as journald's
// /run/systemd/journal/stdout does) is not written by the daemon: the
// kernel would credit the server's lines to mcpcaged (uid 0), which a
// user could use to have anything logged as mcpcaged's own and flood its
// rate limit. The shim relays that session in frames, as its user.
func TestForeignSocketStaysWithTheShim(t *testing.T) {
	uid, _ := testUser(t)
	d := startDaemon(t, "[servers.noisy]\ncommand = [\"/bin/sh\", \"-c\", \"echo LINE-FROM-THE-SERVER >&2; cat\"]\n")
	d.openToOtherUsers(t)
	path := filepath.Join(t.TempDir(), "journal-stdout")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	must(t, err, "listen")
	defer func() { _ = ln.Close() }()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	must(t, err, "connect")
	defer func() { _ = conn.Close() }()
	stream, err := conn.File()
	must(t, err, "the stream's file")
	defer func() { _ = stream.Close() }()
	accepted, err := ln.AcceptUnix()
	must(t, err, "accept")
	defer func() { _ = accepted.Close() }()
	raw, err := accepted.SyscallConn()
	must(t, err, "raw conn")
	must(t, raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }), "control")
	must(t, err, "SO_PASSCRED")

	// Blocking pipes, as most clients make them (Go's os.Pipe makes
	// non-blocking ones): a refused file must leave the others as they
	// were, or the shim, relaying in frames, reads EAGAIN as the end of
	// its input (found by a red-team helper: the session ended at once).
	inR, inW := blockingPipe(t)
	outR, outW := blockingPipe(t)
	cmd := d.shimCmd("noisy")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stream
	must(t, cmd.Start(), "start the shim")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	_ = outW.Close()
	_ = stream.Close()

	must(t, accepted.SetReadDeadline(time.Now().Add(60*time.Second)), "deadline")
	var got []byte
	for !bytes.Contains(got, []byte("LINE-FROM-THE-SERVER")) {
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		n, oobn, _, _, err := accepted.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			t.Fatalf("the server's stderr line never came (read %q, %v)\n%s", got, err, d.log.String())
		}
		got = append(got, buf[:n]...)
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		must(t, err, "control messages")
		for _, m := range msgs {
			if c, err := unix.ParseUnixCredentials(&m); err == nil && c.Uid != uint32(uid) {
				t.Fatalf("%q arrived credited to pid %d uid %d (mcpcaged is pid %d), want the shim's user %d", buf[:n], c.Pid, c.Uid, d.cmd.Process.Pid, uid)
			}
		}
	}
	var sessions []api.SessionInfo
	must(t, json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &sessions), "decode sessions")
	if len(sessions) != 1 || sessions[0].Stdio != api.StdioFramed {
		t.Fatalf("sessions = %+v, want one with stdio %q", sessions, api.StdioFramed)
	}
	if !strings.Contains(d.log.String(), "a unix socket whose other end is uid 0's") {
		t.Fatalf("the mcpcaged log does not say why the session is framed:\n%s", d.log.String())
	}
	// The shim's stdin is as the client made it, and the session relays.
	fl, err := unix.FcntlInt(inR.Fd(), unix.F_GETFL, 0)
	must(t, err, "F_GETFL")
	if fl&unix.O_NONBLOCK != 0 {
		t.Fatalf("the client's stdin pipe was left non-blocking by a session relayed in frames")
	}
	_ = inR.Close()
	msg := `{"jsonrpc":"2.0","method":"notifications/relayed"}` + "\n"
	_, err = inW.WriteString(msg)
	must(t, err, "write to the session")
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || line != msg {
		t.Fatalf("the server's cat answered %q, %v; want %q (the session ended?)\n%s", line, err, msg, d.log.String())
	}
}

// TestStdioGarbageRefused: a shim that passes anything but the client's
// pipes (a regular file as stdin) gets one clear error, and no session.
func TestStdioGarbageRefused(t *testing.T) {
	d := startDaemon(t, testIsTheShim(t))
	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-pipe"))
	must(t, err, "create a file")
	defer func() { _ = f.Close() }()
	r, w, err := os.Pipe()
	must(t, err, "pipe")
	defer func() { _ = r.Close(); _ = w.Close() }()
	c, err := api.Dial(d.socket)
	must(t, err, "dial")
	defer func() { _ = c.Close() }()
	reply, err := c.DoPassing(api.Request{Op: api.OpRun, Server: "test", PassStdio: true}, []int{int(f.Fd()), int(w.Fd())})
	must(t, err, "send the request")
	if reply.OK || reply.Code != api.CodeBadRequest || !strings.Contains(reply.Error, "stdin: not a pipe or a stream socket") {
		t.Fatalf("reply = %+v, want a refusal naming stdin", reply)
	}
	// Files sent with any other request, unasked, are refused by the
	// socket: TestFilesAreTakenOnlyWhenAsked.
	if got := d.containers(); len(got) != 0 {
		t.Fatalf("containers after refused sessions: %v", got)
	}
}

// TestStdioMadeBlockingAgainCannotHoldTheSession: O_NONBLOCK belongs to
// the open file, which the client (and the shim, and whoever starts
// it) still shares with the daemon. A client that clears it again once
// the session runs, then stops writing and lets its shim die, must not
// keep the daemon's relay in a read that never returns: the session
// still ends (its session.end record, gone from mcpcage sessions).
func TestStdioMadeBlockingAgainCannotHoldTheSession(t *testing.T) {
	d := startDaemon(t, "")
	inR, inW, err := os.Pipe()
	must(t, err, "pipe")
	outR, outW, err := os.Pipe()
	must(t, err, "pipe")
	defer func() { _ = inR.Close(); _ = inW.Close(); _ = outR.Close(); _ = outW.Close() }()
	cmd := d.shimCmd("test")
	cmd.Stdin, cmd.Stdout = inR, outW
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start(), "start the shim")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	_ = outW.Close()
	for _, line := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"blocking","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"before"}}}`,
	} {
		_, err := inW.Write([]byte(line + "\n"))
		must(t, err, "write to the shim")
	}
	out := bufio.NewReader(outR)
	for {
		line, err := out.ReadString('\n')
		must(t, err, "read the shim's stdout (its stderr: %s)", stderr.String())
		if strings.Contains(line, `"id":2`) {
			if !strings.Contains(line, "before") {
				t.Fatalf("echo answered %s", line)
			}
			break
		}
	}
	// Make the pipe blocking again (this process still holds the same
	// open file), then send one more call: once it is answered the relay
	// has read again since the flag was cleared, and waits for more.
	// Write nothing more, keep the write end open, and kill the shim.
	must(t, unix.SetNonblock(int(inR.Fd()), false), "clear O_NONBLOCK")
	_, err = inW.Write([]byte(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"after"}}}` + "\n"))
	must(t, err, "write to the shim")
	for {
		line, err := out.ReadString('\n')
		must(t, err, "read the shim's stdout (its stderr: %s)", stderr.String())
		if strings.Contains(line, `"id":3`) {
			break
		}
	}
	must(t, cmd.Process.Kill(), "kill the shim")
	_, _ = cmd.Process.Wait()
	if st := d.status(t).Enforcement["client stdio"]; !strings.Contains(st, "makes them blocking again cannot hold its session open") {
		t.Fatalf("status says client stdio %q", st)
	}
	end := d.record(t, "session.end", func(map[string]any) bool { return true })
	t.Logf("session.end: %v", end["reason"])
	testenv.WaitFor(t, "the session to be gone from mcpcage sessions", 30*time.Second, func() (bool, string) {
		var sessions []api.SessionInfo
		out := d.mustCLI(t, "sessions", "--json")
		must(t, json.Unmarshal([]byte(out), &sessions), "decode sessions")
		return len(sessions) == 0, out
	})
}

// TestShimRefusesAnotherUsersSocket: $MCPCAGE_SOCKET comes from the MCP
// client's configuration, which a cloned project can set. A socket that
// another user serves (here a node listener running as nobody) is
// refused by the shim before it hands over the client's pipes: the
// shim exits with one line naming the uid.
func TestShimRefusesAnotherUsersSocket(t *testing.T) {
	setup(t)
	node, err := exec.LookPath("node")
	must(t, err, "node")
	dir, err := os.MkdirTemp("", "mcpcage-foreign-socket-")
	must(t, err, "temporary directory")
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o777), "open the directory to nobody")
	sock := filepath.Join(dir, "fake.sock")
	ln := exec.Command(node, "-e", "require('net').createServer(() => {}).listen(process.argv[1])", sock)
	ln.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	must(t, ln.Start(), "start the listener as nobody")
	t.Cleanup(func() { _ = ln.Process.Kill(); _ = ln.Wait() })
	testenv.WaitFor(t, "nobody's socket", 20*time.Second, func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(env.bin, "mcpcage"), "run", "test")
	cmd.Env = append(os.Environ(), "MCPCAGE_SOCKET="+sock)
	cmd.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}` + "\n")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil || ctx.Err() != nil || !strings.Contains(stderr.String(), "served by a process of uid 65534") {
		t.Fatalf("mcpcage run with another user's socket: %v (timed out: %v), stderr %q; want it refused at once, naming uid 65534", err, ctx.Err() != nil, stderr.String())
	}
}

// TestOversizedNamesAreRefusedUnlogged: a request's names are logged
// and quoted back; any local user could send a server name of a MiB to
// flood the daemon's journal (and push other users' lines out of its
// rate limit). It is refused with its length, and never logged.
func TestOversizedNamesAreRefusedUnlogged(t *testing.T) {
	d := startDaemon(t, "")
	name := "flood-" + strings.Repeat("A", 1<<20-1024) // as long as a request frame takes
	c, err := api.Dial(d.socket)
	must(t, err, "dial")
	defer func() { _ = c.Close() }()
	reply, err := c.Do(api.Request{Op: api.OpRun, Server: name})
	must(t, err, "send the request")
	if reply.OK || reply.Code != api.CodeBadRequest || !strings.Contains(reply.Error, fmt.Sprintf("server is %d bytes", len(name))) || len(reply.Error) > 1024 {
		t.Fatalf("reply = %.300q, want a short refusal naming the server name's length", reply.Error)
	}
	if strings.Contains(d.log.String(), "flood-AAAA") {
		t.Fatal("the daemon logged the oversized name")
	}
}

// TestPendingConnectionsAreBoundedPerUser: connections that send no
// request hold the daemon's memory (a request frame is up to a MiB) for
// their 10 s; one user may keep at most 32 such at once. The next is
// told so at once, and once they are closed the user is served again.
func TestPendingConnectionsAreBoundedPerUser(t *testing.T) {
	d := startDaemon(t, "")
	var idle []*api.Conn
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	for i := 0; i < 32; i++ {
		c, err := api.Dial(d.socket)
		must(t, err, "dial %d", i)
		idle = append(idle, c)
	}
	// The daemon takes a connection's slot as it handles it, and its
	// handlers run concurrently: the one that asks may be handled before
	// one of the idle ones, which is then the one refused. Top up with
	// one more idle connection each time the one that asks is served,
	// until it is refused.
	testenv.WaitFor(t, "a 33rd connection to be refused", 20*time.Second, func() (bool, string) {
		c, err := api.Dial(d.socket)
		if err != nil {
			return false, err.Error()
		}
		defer func() { _ = c.Close() }()
		reply, err := c.Do(api.Request{Op: api.OpStatus})
		if err != nil {
			return false, err.Error()
		}
		if reply.OK {
			more, err := api.Dial(d.socket)
			must(t, err, "dial one more")
			idle = append(idle, more)
			return false, fmt.Sprintf("served with %d idle connections open", len(idle))
		}
		return reply.Code == api.CodeBusy && strings.Contains(reply.Error, "32 connections that have not sent their request"), reply.Error
	})
	for _, c := range idle {
		_ = c.Close()
	}
	idle = nil
	testenv.WaitFor(t, "the user to be served again", 10*time.Second, func() (bool, string) {
		out, err := d.cli(t, 0, "status")
		return err == nil, out
	})
}

// TestFilesAreTakenOnlyWhenAsked: a file the daemon holds is one it may
// have to close, and closing a pipe whose lock another process holds
// waits without end; so the daemon's socket refuses files (SO_PASSRIGHTS
// off: the sender's sendmsg fails) except for a session it admitted and
// asked for them. Before, files sent with any request (a status, a run
// request not yet admitted) were taken in and closed by the daemon.
func TestFilesAreTakenOnlyWhenAsked(t *testing.T) {
	d := startDaemon(t, "")
	r, w, err := os.Pipe()
	must(t, err, "pipe")
	defer func() { _ = r.Close(); _ = w.Close() }()
	tests := []struct {
		name string
		req  api.Request
	}{
		{"with a status request", api.Request{Op: api.OpStatus, Version: api.Version}},
		{"with a run request, before the daemon asks", api.Request{Op: api.OpRun, Server: "test", PassStdio: true, Version: api.Version}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.socket, Net: "unix"})
			must(t, err, "dial mcpcaged")
			defer func() { _ = c.Close() }()
			b, err := json.Marshal(tt.req)
			must(t, err, "encode")
			_, _, err = c.WriteMsgUnix(api.AppendFrame(nil, api.FrameRequest, b), unix.UnixRights(int(r.Fd()), int(w.Fd())), nil)
			if !errors.Is(err, unix.EPERM) {
				t.Fatalf("sending files unasked: %v, want EPERM (the socket refuses them)", err)
			}
		})
	}
	// A run request the daemon refuses (an unknown server) is answered
	// without the files ever being asked for.
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.socket, Net: "unix"})
	must(t, err, "dial mcpcaged")
	defer func() { _ = c.Close() }()
	b, err := json.Marshal(api.Request{Op: api.OpRun, Server: "nope", PassStdio: true, Version: api.Version})
	must(t, err, "encode")
	must(t, api.NewFrameWriter(c).Write(api.FrameRequest, b), "send the run request")
	ft, payload, err := api.NewFrameReader(c).Next()
	must(t, err, "read the answer")
	if ft != api.FrameReply || !strings.Contains(string(payload), "nope") {
		t.Fatalf("a run request for an unknown server was answered with frame %q %s, want the refusal before any file is asked for", ft, payload)
	}
	if st := d.status(t).Enforcement["client stdio"]; !strings.Contains(st, "files are taken only when a session the daemon admitted, holding one of its user's session slots, asks for them") {
		t.Fatalf("status says client stdio %q", st)
	}
	// A session still gets its files, asked for.
	echoOnePassedSession(t, d, "asked")
}

// echoOnePassedSession starts a session with an mcp-go client (pipes, as
// every MCP client gives), has text echoed, and checks that it is the
// daemon's one session, with its stdio passed.
func echoOnePassedSession(t *testing.T, d *daemon, text string) {
	t.Helper()
	c := d.connect(t, "test", "2025-11-25")
	if got, isErr := callText(t, c, "echo", map[string]any{"text": text}); isErr || got != text {
		t.Fatalf("echo = %q (error %v)", got, isErr)
	}
	var sessions []api.SessionInfo
	must(t, json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &sessions), "decode sessions")
	if len(sessions) != 1 || sessions[0].Stdio != api.StdioPassed {
		t.Fatalf("sessions = %+v, want one with stdio %q", sessions, api.StdioPassed)
	}
}

// TestEarlyStderrComesAfterTheReply: a server (or mcpcage-init, on older
// kernels) can write on stderr as it starts, before the daemon's reply
// that starts a framed session has gone out. The client of the socket
// reads that reply first (an older mcpcage run took any other frame for
// a broken daemon and gave up): the daemon keeps such stderr until the
// reply is out, then sends it.
func TestEarlyStderrComesAfterTheReply(t *testing.T) {
	setup(t) // env.bin
	// The reply is delayed (failpoints build) so that the server's first
	// line is written before it, every time.
	d := startDaemon(t, testIsTheShim(t)+fmt.Sprintf("[servers.early]\ncommand = [%q]\nenv = { TESTSERVER_STDERR_AT_START = \"early-stderr\" }\n", filepath.Join(env.bin, "testserver")),
		failpoints("MCPCAGE_FAILPOINT_SESSION_REPLY_DELAY=500ms"))
	for i := range 2 {
		c, err := api.Dial(d.socket)
		must(t, err, "dial")
		var before bytes.Buffer
		c.EarlyStderr = &before // stderr that came before the reply (an older mcpcage run failed on it)
		r, err := c.Do(api.Request{Op: api.OpRun, Server: "early"})
		if err != nil || !r.OK {
			t.Fatalf("session %d: %+v, %v", i+1, r, err)
		}
		if before.Len() > 0 {
			t.Fatalf("session %d: the server's stderr came before the reply: %q", i+1, before.String())
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var got []byte
		for !strings.Contains(string(got), "early-stderr") {
			typ, payload, err := c.R.Next()
			if err != nil {
				t.Fatalf("session %d: waiting for the early stderr: %v (got %q)", i+1, err, got)
			}
			if typ == api.FrameStderr {
				got = append(got, payload...)
			}
		}
		// The server runs: it answers, and the session ends with its input.
		must(t, c.W.Write(api.FrameStdin, []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"early","version":"1"}}}`+"\n")), "send initialize")
		var out []byte
		for !strings.Contains(string(out), `"id":1`) {
			typ, payload, err := c.R.Next()
			if err != nil {
				t.Fatalf("session %d: waiting for the answer to initialize: %v (got %q)", i+1, err, out)
			}
			if typ == api.FrameStdout {
				out = append(out, payload...)
			}
		}
		_ = c.W.Write(api.FrameStdinEOF, nil)
		for {
			typ, payload, err := c.R.Next()
			if err != nil {
				t.Fatalf("session %d: waiting for its end: %v", i+1, err)
			}
			if typ == api.FrameExit {
				var e api.Exit
				must(t, json.Unmarshal(payload, &e), "decode the exit")
				if e.Code != 0 || e.Error != "" {
					t.Fatalf("session %d ended with %+v", i+1, e)
				}
				break
			}
		}
		_ = c.Close()
	}
}

// TestPartialFilesFrameIsRefused: a shim that sends its files with only
// the first byte of the frame that carries them held the session's
// start, the user's session slot and a daemon stop for good: the read
// deadline was cleared before the rest of the frame was read (found by a
// red-team helper). The deadline now covers the whole frame.
func TestPartialFilesFrameIsRefused(t *testing.T) {
	d := startDaemon(t, testIsTheShim(t))
	run := admitRun(t, d.socket, "test")
	uc := run.c.Conn.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix([]byte{byte(api.FrameFiles)}, syscall.UnixRights(int(run.in.Fd()), int(run.out.Fd())), nil); err != nil {
		t.Fatalf("send a frame's first byte with the files: %v", err)
	}
	must(t, uc.SetReadDeadline(time.Now().Add(60*time.Second)), "deadline")
	for {
		typ, payload, err := run.c.R.Next()
		must(t, err, "read the reply (none came)")
		if typ != api.FrameReply {
			continue
		}
		var r api.Reply
		must(t, json.Unmarshal(payload, &r), "decode the reply")
		if r.OK || !strings.Contains(r.Error, "did not send its files when asked") {
			t.Fatalf("reply %+v, want the session refused: its files never came whole", r)
		}
		break
	}
	testenv.WaitFor(t, "no session left", 30*time.Second, func() (bool, string) {
		n := d.status(t).Sessions
		return n == 0, fmt.Sprintf("%d sessions", n)
	})
}

// blockingPipe is a pipe as most clients make them (Go's os.Pipe makes
// non-blocking ones), closed when the test ends.
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var p [2]int
	must(t, unix.Pipe2(p[:], unix.O_CLOEXEC), "pipe2")
	r, w = os.NewFile(uintptr(p[0]), "pipe-r"), os.NewFile(uintptr(p[1]), "pipe-w")
	t.Cleanup(func() { _ = r.Close(); _ = w.Close() })
	return r, w
}

// TestClientsOwnStderrKeepsItsFlags: the shim passes the stderr it
// inherited, often the client's own (the TypeScript SDK's default is
// "inherit"), and the daemon made every passed file non-blocking for the
// session, so the client's own blocking writes to its stderr could fail
// with EAGAIN once it filled (found by a red-team helper). Now the files
// the client made blocking are blocking again as soon as the daemon's
// poller has them (its reads and writes never wait whatever the flag:
// RWF_NOWAIT, MSG_DONTWAIT), and the session works through them.
func TestClientsOwnStderrKeepsItsFlags(t *testing.T) {
	testenv.Require(t, pipesTakeNoWaitHere(t), "a kernel whose pipes take RWF_NOWAIT (Linux 6.4+)")
	d := startDaemon(t, "[servers.noisy]\ncommand = [\"/bin/sh\", \"-c\", \"echo LINE-FROM-THE-SERVER >&2; cat\"]\n")
	inR, inW := blockingPipe(t)
	outR, outW := blockingPipe(t)
	errR, errW := blockingPipe(t) // the client's own stderr: it keeps writing to errW
	cmd := d.shimCmd("noisy")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	must(t, cmd.Start(), "start the shim")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// The test keeps its copies of the files it gave the shim: they are
	// the same open files, whose flags the client sees.
	errLines := bufio.NewReader(errR)
	line, err := errLines.ReadString('\n')
	if err != nil || line != "LINE-FROM-THE-SERVER\n" {
		t.Fatalf("the server's stderr line: %q %v\n%s", line, err, d.log.String())
	}
	var sessions []api.SessionInfo
	must(t, json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &sessions), "decode sessions")
	if len(sessions) != 1 || sessions[0].Stdio != api.StdioPassed {
		t.Fatalf("sessions = %+v, want one with stdio %q", sessions, api.StdioPassed)
	}
	for _, f := range []struct {
		name string
		f    *os.File
	}{{"stdin", inR}, {"stdout", outW}, {"stderr (the client's own)", errW}} {
		fl, err := unix.FcntlInt(f.f.Fd(), unix.F_GETFL, 0)
		must(t, err, "F_GETFL")
		if fl&unix.O_NONBLOCK != 0 {
			t.Errorf("the client's %s is non-blocking while its session runs", f.name)
		}
	}
	// The client's own writes to its stderr, and the session, go on.
	_, err = errW.WriteString("the client's own line\n")
	must(t, err, "the client writes to its own stderr")
	if line, err := errLines.ReadString('\n'); err != nil || line != "the client's own line\n" {
		t.Fatalf("the client's own stderr line: %q %v", line, err)
	}
	msg := `{"jsonrpc":"2.0","method":"notifications/relayed"}` + "\n"
	_, err = inW.WriteString(msg)
	must(t, err, "write to the session")
	if line, err := bufio.NewReader(outR).ReadString('\n'); err != nil || line != msg {
		t.Fatalf("the server's cat answered %q, %v; want %q\n%s", line, err, msg, d.log.String())
	}
	_ = inW.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the shim after its client closed its input: %v", err)
	}
}

// pipesTakeNoWaitHere says whether this kernel's pipes take RWF_NOWAIT.
func pipesTakeNoWaitHere(t *testing.T) bool {
	r, _ := blockingPipe(t)
	_, err := unix.Preadv2(int(r.Fd()), [][]byte{make([]byte, 1)}, -1, unix.RWF_NOWAIT)
	return errors.Is(err, unix.EAGAIN)
}

// TestUnusablePipeEndsWithOneLine: a shim that passes a pipe the daemon
// cannot read without waiting (a named FIFO opened read-write as stdin)
// gets a session that ends with one line saying so, on the shim's
// stderr and in session.end; it ended as client_gone with no word (found
// by a red-team helper).
func TestUnusablePipeEndsWithOneLine(t *testing.T) {
	testenv.Require(t, pipesTakeNoWaitHere(t), "a kernel whose pipes take RWF_NOWAIT (Linux 6.4+)")
	d := startDaemon(t, "")
	fifo := filepath.Join(t.TempDir(), "stdin.fifo")
	must(t, unix.Mkfifo(fifo, 0o600), "mkfifo")
	in, err := os.OpenFile(fifo, os.O_RDWR, 0)
	must(t, err, "open the FIFO read-write")
	defer func() { _ = in.Close() }()
	_, outW := blockingPipe(t)
	cmd := d.shimCmd("test")
	var stderr syncBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, outW, &stderr
	must(t, cmd.Start(), "start the shim")
	_ = outW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // a bound, not a wait: the session ends at its first read
		_ = cmd.Process.Kill()
		t.Fatalf("the session of a named FIFO did not end\n%s", d.log.String())
	}
	const want = "a named FIFO, or a pipe reopened through /proc"
	if err == nil || !strings.Contains(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("the shim: %v, stderr %q; want a failure with one line naming the cause", err, stderr.String())
	}
	end := d.record(t, "session.end", func(map[string]any) bool { return true })
	if !strings.Contains(fmt.Sprint(end), want) {
		t.Fatalf("session.end does not say why: %v", end)
	}
}
