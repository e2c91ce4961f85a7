// Package shim is `mcpcage run NAME`: the process an MCP client spawns in
// place of the server. It connects to mcpcaged, asks for a session with
// NAME, and relays its stdin and stdout byte for byte; the server's stderr
// arrives on its stderr. It exits with the server's exit status.
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
	r, err := c.Do(api.Request{Op: api.OpRun, Server: server})
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

	go sendInput(c, stdin)
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
