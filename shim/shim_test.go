package shim

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
)

// fakeDaemon serves one connection on a real unix socket: it reads the
// run request, answers with reply, then echoes every stdin frame back as
// stdout until stdin ends, and finishes with the frames of end.
func fakeDaemon(t *testing.T, reply api.Reply, end func(w *api.FrameWriter)) (socket string, got chan api.Request) {
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
