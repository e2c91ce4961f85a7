// Package shim is `mcpcage run NAME`: the process an MCP client spawns in
// place of the server. It connects to mcpcaged and asks for a session with
// NAME. When its stdin and stdout are pipes or stream sockets (as MCP
// clients give them) it hands them to the daemon with the request
// (SCM_RIGHTS) and leaves the data path: the daemon reads and writes the
// client's pipes itself, and the shim only forwards a stop request and
// the exit status. Otherwise (a terminal, a file) it relays stdin and
// stdout byte for byte in frames. The server's stderr arrives on its
// stderr either way. It exits with the server's exit status.
//
// When the daemon is unreachable, NAME is unknown or the launch fails, it
// prints one line on stderr that says what happened and what to do, and
// exits with status 2 (3 for an unknown server). A session that ends
// abnormally (lost daemon, oversized message) exits with status 1 after
// one line of explanation.
package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"golang.org/x/sys/unix"
)

// Exit statuses of the shim itself (the server's own status passes through).
const (
	ExitSessionError = 1
	ExitNoSession    = 2
	ExitUnknown      = 3
)

// Run starts a session with server and relays stdio until it ends.
func Run(socket, server string, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := api.Dial(socket)
	if err != nil {
		report(stderr, "%v", err)
		return ExitNoSession
	}
	defer func() { _ = c.Close() }()
	// Frames relayed here (stdout, stderr) meet a client that may be
	// gone: a write then fails (EPIPE) and the session ends, rather than
	// the signal killing the shim.
	signal.Ignore(syscall.SIGPIPE)
	c.EarlyStderr = stderr
	req := api.Request{Op: api.OpRun, Server: server}
	passed := passable(stdin, stdout, stderr)
	req.PassStdio = len(passed) > 0
	req.TakesFramed = req.PassStdio
	r, err := c.DoPassing(req, passed)
	if err != nil {
		report(stderr, "%v", err)
		return ExitNoSession
	}
	if !r.OK {
		report(stderr, "%s", r.Error)
		if r.Code == api.CodeUnknownServer {
			return ExitUnknown
		}
		return ExitNoSession
	}

	if req.PassStdio && r.Stdio != api.StdioFramed {
		// The daemon has the client's pipes now: let go of ours, so the
		// client sees end of file when the daemon closes its copies.
		leave(passed[:2])
	} else {
		go sendInput(c, stdin)
	}
	go func() {
		// The client asks us to stop: close the server's input and let the
		// daemon run the stop ladder; a second signal leaves at once.
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		<-sigs
		_ = c.W.Write(api.FrameStdinEOF, nil)
		select {
		case <-sigs:
		case <-time.After(10 * time.Second):
		}
		_ = c.Close() // ends the relay loop below

	}()

	for {
		t, payload, err := c.R.Next()
		if err != nil {
			report(stderr, "lost the connection to mcpcaged during the session: %v", describe(err))
			return ExitSessionError
		}
		switch t {
		case api.FrameStdout:
			if _, err := stdout.Write(payload); err != nil {
				// The client stopped reading: end the session.
				_ = c.W.Write(api.FrameStdinEOF, nil)
				return ExitSessionError
			}
		case api.FrameStderr:
			_, _ = stderr.Write(payload)
		case api.FrameExit:
			var e api.Exit
			if err := json.Unmarshal(payload, &e); err != nil {
				report(stderr, "malformed exit from mcpcaged: %v", err)
				return ExitSessionError
			}
			if e.Error != "" {
				report(stderr, "%s", e.Error)
			}
			switch {
			case e.Code > 0:
				return e.Code
			case e.Error != "":
				return ExitSessionError
			}
			return max(e.Code, 0)
		}
	}
}

// report prints one line on stderr. A line that cannot be written has
// nowhere else to go: the exit status still tells.
func report(stderr io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(stderr, "mcpcage: "+format+"\n", a...)
}

func describe(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "mcpcaged closed it (was it stopped or restarted?)"
	}
	return err.Error()
}

func sendInput(c *api.Conn, stdin io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			if werr := c.W.Write(api.FrameStdin, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = c.W.Write(api.FrameStdinEOF, nil)
			return
		}
	}
}

// passable returns the descriptors to hand to the daemon: stdin and
// stdout when both are pipes or stream sockets, and stderr too when it is
// one; nil when the session must relay in frames (a terminal, a file, a
// test's buffer). Terminals stay with the shim: the daemon makes what it
// is passed non-blocking, which a shell sharing the terminal would feel.
func passable(stdin io.Reader, stdout, stderr io.Writer) []int {
	in, ok1 := stdin.(*os.File)
	out, ok2 := stdout.(*os.File)
	if !ok1 || !ok2 || !isStream(in) || !isStream(out) {
		return nil
	}
	fds := []int{int(in.Fd()), int(out.Fd())}
	if errf, ok := stderr.(*os.File); ok && isStream(errf) {
		fds = append(fds, int(errf.Fd()))
	}
	return fds
}

// isStream reports whether f is a pipe or a stream socket.
func isStream(f *os.File) bool {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return true
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
		return err == nil && typ == unix.SOCK_STREAM
	}
	return false
}

// leave points fds at /dev/null: the shim keeps no copy of the client's
// pipes once the daemon has them.
func leave(fds []int) {
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return // the pipes stay open until the shim exits, with the session
	}
	defer func() { _ = unix.Close(null) }()
	for _, fd := range fds {
		_ = unix.Dup3(null, fd, 0)
	}
}
