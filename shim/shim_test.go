package shim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"golang.org/x/sys/unix"
)

// fakeDaemon serves one connection on a real unix socket: it reads the
// run request, answers with reply, then echoes every stdin frame back as
// stdout until stdin ends, and finishes with the frames of end.
func fakeDaemon(t *testing.T, reply api.Reply, end func(w *api.FrameWriter)) (socket string, got chan api.Request) {
	t.Helper()
	return fakeDaemonWith(t, nil, reply, end)
}

// fakeDaemonWith is fakeDaemon that writes the frames of before ahead of
// its reply.
func fakeDaemonWith(t *testing.T, before func(w *api.FrameWriter), reply api.Reply, end func(w *api.FrameWriter)) (socket string, got chan api.Request) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "mcpcage.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	got = make(chan api.Request, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		r, w := api.NewFrameReader(c), api.NewFrameWriter(c)
		typ, payload, err := r.Next()
		if err != nil || typ != api.FrameRequest {
			return
		}
		var req api.Request
		_ = json.Unmarshal(payload, &req)
		got <- req
		if before != nil {
			before(w)
		}
		b, _ := json.Marshal(reply)
		if w.Write(api.FrameReply, b) != nil || !reply.OK {
			return
		}
		for {
			typ, payload, err := r.Next()
			if err != nil {
				return
			}
			if typ == api.FrameStdinEOF {
				break
			}
			if typ == api.FrameStdin && w.Write(api.FrameStdout, payload) != nil {
				return
			}
		}
		end(w)
	}()
	return socket, got
}

func exitFrame(code int, errText string) func(w *api.FrameWriter) {
	return func(w *api.FrameWriter) {
		_ = w.Write(api.FrameStderr, []byte("server says bye\n"))
		b, _ := json.Marshal(api.Exit{Code: code, Error: errText})
		_ = w.Write(api.FrameExit, b)
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name       string
		reply      api.Reply
		end        func(w *api.FrameWriter)
		wantStatus int
		wantOut    string
		wantErr    string // a substring of stderr
	}{
		{"relays both ways and passes the exit status", api.Reply{OK: true}, exitFrame(0, ""), 0, "{\"id\":1}\n", "server says bye"},
		{"the server's own status", api.Reply{OK: true}, exitFrame(7, ""), 7, "{\"id\":1}\n", ""},
		{"a session error", api.Reply{OK: true}, exitFrame(-1, "the MCP server sent a message larger than 1 MiB"), ExitSessionError, "{\"id\":1}\n", "mcpcage: the MCP server sent a message larger"},
		{"unknown server", api.Reply{Code: api.CodeUnknownServer, Error: `no server "nope": see mcpcage servers`}, nil, ExitUnknown, "", `mcpcage: no server "nope"`},
		{"refused session", api.Reply{Error: "refused: the shim's parent exec'd another program"}, nil, ExitNoSession, "", "mcpcage: refused: the shim's parent"},
		{"daemon gone mid-session", api.Reply{OK: true}, func(*api.FrameWriter) {}, ExitSessionError, "{\"id\":1}\n", "lost the connection to mcpcaged during the session: mcpcaged closed it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socket, got := fakeDaemon(t, tc.reply, tc.end)
			var out, errOut bytes.Buffer
			status := Run(socket, "test", strings.NewReader("{\"id\":1}\n"), &out, &errOut)
			if req := <-got; req.Op != api.OpRun || req.Server != "test" {
				t.Fatalf("the daemon got %+v, want a run request for test", req)
			}
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d; stderr %q", status, tc.wantStatus, errOut.String())
			}
			if out.String() != tc.wantOut {
				t.Fatalf("stdout %q, want %q", out.String(), tc.wantOut)
			}
			if !strings.Contains(errOut.String(), tc.wantErr) {
				t.Fatalf("stderr %q lacks %q", errOut.String(), tc.wantErr)
			}
			if lines := strings.Count(errOut.String(), "mcpcage:"); lines > 1 {
				t.Fatalf("%d mcpcage lines on stderr, want at most one: %q", lines, errOut.String())
			}
		})
	}
}

func TestRunWithoutDaemon(t *testing.T) {
	var errOut bytes.Buffer
	status := Run(filepath.Join(t.TempDir(), "absent.sock"), "test", strings.NewReader(""), io.Discard, &errOut)
	if status != ExitNoSession || !strings.Contains(errOut.String(), "mcpcaged is not running") {
		t.Fatalf("status %d, stderr %q; want %d and a line saying the daemon is not running", status, errOut.String(), ExitNoSession)
	}
}

// TestRunPassesPipes: with pipes for stdin and stdout the shim hands them
// to the daemon with its request and keeps no copy: the daemon reads the
// client's stdin and writes its stdout itself, and the client sees end of
// file once the daemon closes its copies.
func TestRunPassesPipes(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "mcpcage.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	got := make(chan api.Request, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		// The request comes alone; the files when asked for.
		_, payload, err := api.NewFrameReader(c).Next()
		if err != nil {
			return
		}
		var req api.Request
		_ = json.Unmarshal(payload, &req)
		got <- req
		w := api.NewFrameWriter(c)
		_ = w.Write(api.FrameFilesWanted, nil)
		buf := make([]byte, 1<<16)
		oob := make([]byte, unix.CmsgSpace(3*4))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		if ft, _, _ := api.NewFrameReader(bytes.NewReader(buf[:n])).Next(); ft != api.FrameFiles {
			_ = w.Write(api.FrameReply, []byte(`{"ok":false,"error":"no files frame"}`))
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		var fds []int
		for i := range msgs {
			f, _ := unix.ParseUnixRights(&msgs[i])
			fds = append(fds, f...)
		}
		if len(fds) < 2 {
			_ = w.Write(api.FrameReply, []byte(`{"ok":false,"error":"no files"}`))
			return
		}
		in, out := os.NewFile(uintptr(fds[0]), "in"), os.NewFile(uintptr(fds[1]), "out")
		for _, fd := range fds[2:] {
			_ = unix.Close(fd)
		}
		_ = w.Write(api.FrameReply, []byte(`{"ok":true}`))
		line, _ := bufio.NewReader(in).ReadString('\n')
		_, _ = out.WriteString("echo " + line)
		_ = in.Close()
		_ = out.Close()
		_ = w.Write(api.FrameExit, []byte(`{"code":0}`))
	}()
	stdin, clientIn := pipeT(t)   // the client writes what the shim's stdin reads
	clientOut, stdout := pipeT(t) // and reads what the shim's stdout gets
	if _, err := clientIn.WriteString(`{"id":1}` + "\n"); err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	status := Run(socket, "test", stdin, stdout, &errOut)
	if req := <-got; !req.PassStdio {
		t.Fatalf("request %+v does not pass stdio", req)
	}
	if status != 0 {
		t.Fatalf("status %d, stderr %q", status, errOut.String())
	}
	// Every copy of the client's stdout pipe is gone (the shim's too): the
	// client reads the answer, then end of file.
	if err := clientOut.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(clientOut) // a copy left open: the deadline fails this
	if err != nil || string(b) != "echo {\"id\":1}\n" {
		t.Fatalf("client read %q, %v", b, err)
	}
}

// TestRunFramedWhenFilesNotTaken: a daemon that holds as many clients'
// files as it may answers a shim that passes pipes without asking for
// them, and says the session is framed: the shim keeps its stdio and
// relays it in frames. What the server wrote on stderr before that reply
// (mcpcage-init can) reaches the client's stderr; it does not fail the
// session.
func TestRunFramedWhenFilesNotTaken(t *testing.T) {
	early := func(w *api.FrameWriter) {
		_ = w.Write(api.FrameStderr, []byte("mcpcage-init: written before the reply\n"))
	}
	socket, got := fakeDaemonWith(t, early, api.Reply{OK: true, Stdio: api.StdioFramed}, exitFrame(0, ""))
	stdin, clientIn := pipeT(t)
	clientOut, stdout := pipeT(t)
	if _, err := clientIn.WriteString(`{"id":1}` + "\n"); err != nil {
		t.Fatal(err)
	}
	_ = clientIn.Close() // the client's input ends: so does the session
	var errOut bytes.Buffer
	status := Run(socket, "test", stdin, stdout, &errOut)
	if req := <-got; !req.PassStdio || !req.TakesFramed {
		t.Fatalf("request %+v: want pipes passed, and framed stdio taken", req)
	}
	if status != 0 {
		t.Fatalf("status %d, stderr %q", status, errOut.String())
	}
	if !strings.Contains(errOut.String(), "mcpcage-init: written before the reply") || !strings.Contains(errOut.String(), "server says bye") {
		t.Fatalf("stderr %q: want the early line and the session's", errOut.String())
	}
	if err := clientOut.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(clientOut).ReadString('\n')
	if err != nil || line != `{"id":1}`+"\n" {
		t.Fatalf("client read %q, %v; want the echo relayed by the shim", line, err)
	}
}

// pipeT returns a pipe closed with the test.
func pipeT(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(); _ = w.Close() })
	return r, w
}
