// Command linerelay is the floor of any design that puts a process of its
// own between an MCP client and its server and sees every message: it
// starts the server (its arguments) and copies each newline-terminated
// message from its stdin to the server's stdin and from the server's
// stdout to its stdout, one write per message, doing nothing else (no
// parsing, no decision, no record). `make bench` runs it beside direct and
// mcpcage: its added latency is what the two extra cross-process hops
// cost on the machine, which mcpcage's added latency cannot go below.
//
// It reads and writes the way mcpcaged does (Go, non-blocking pipes on
// the runtime's poller, one goroutine per direction).
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// maxMessage bounds one message, as mcpcaged's default does.
const maxMessage = 64 << 20

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: linerelay SERVER [ARGS...]")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1], os.Args[2:]))
}

func run(name string, args []string) int {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return fail(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	// Our own stdio on the poller, as mcpcaged's passed fds are.
	stdin, stdout := pollable(0, "stdin"), pollable(1, "stdout")
	go func() {
		_ = copyLines(in, stdin)
		_ = in.Close() // the client is gone: so is the server's input
	}()
	_ = copyLines(stdout, out)
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return fail(err)
	}
	return 0
}

// pollable returns fd as a non-blocking file the runtime polls.
func pollable(fd int, name string) *os.File {
	if err := syscall.SetNonblock(fd, true); err != nil {
		fmt.Fprintf(os.Stderr, "linerelay: %s stays blocking: %v\n", name, err)
	}
	return os.NewFile(uintptr(fd), name)
}

// copyLines writes each message read from r to w with one write.
func copyLines(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if long = append(long, line...); len(long) > maxMessage {
				return fmt.Errorf("message over %d bytes", maxMessage)
			}
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "linerelay:", err)
	return 1
}
