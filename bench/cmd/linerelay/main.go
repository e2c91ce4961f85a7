// Command linerelay is the floor of any design that puts a process of its
// own between an MCP client and its server and sees every message: it
// starts the server (its arguments) and copies each newline-terminated
// message from its stdin to the server's stdin and from the server's
// stdout to its stdout, one write per message, doing nothing else (no
// parsing, no decision, no record). `make bench` runs it beside direct and
// mcpcage: its added latency is what the two extra cross-process hops
// cost on the machine, which mcpcage's added latency cannot go below.
//
// With --durable FILE first, it is also the floor of any design that
// forwards a message only once a record of it is on disk (mcpcage's
// audit_sync = "always"): the client's messages are appended to FILE
// and made durable with fdatasync before they are forwarded, by group
// commit (one sync in flight; the messages that arrive meanwhile share
// the next one, and are then forwarded with one write). Its throughput
// with many calls in flight is bounded by this disk's syncs, whatever the
// relay does besides.
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
	"sync"
	"syscall"
)

// maxMessage bounds one message, as mcpcaged's default does.
const maxMessage = 64 << 20

func main() {
	args := os.Args[1:]
	durable := ""
	if len(args) >= 2 && args[0] == "--durable" {
		durable, args = args[1], args[2:]
	}
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: linerelay [--durable FILE] SERVER [ARGS...]")
		os.Exit(2)
	}
	os.Exit(run(durable, args[0], args[1:]))
}

func run(durable, name string, args []string) int {
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
	var toServer io.Writer = in
	drain := func() {}
	if durable != "" {
		f, err := os.OpenFile(durable, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fail(err)
		}
		gc := newGroupCommit(f, in)
		go gc.run()
		toServer, drain = gc, func() { _ = gc.Close() }
	}
	go func() {
		_ = copyLines(toServer, stdin)
		drain()        // what is queued is synced and forwarded first
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

// groupCommit forwards what is written to it once it is durable in log:
// Write queues a message; run appends everything queued to log with one
// write, fdatasyncs, then forwards it to out with one write, and starts
// over with what was queued meanwhile.
type groupCommit struct {
	log     *os.File
	out     io.Writer
	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	closed  bool
	err     error
	done    chan struct{}
}

func newGroupCommit(log *os.File, out io.Writer) *groupCommit {
	g := &groupCommit{log: log, out: out, done: make(chan struct{})}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupCommit) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0, g.err
	}
	g.pending = append(g.pending, p...)
	g.cond.Signal()
	return len(p), nil
}

// Close waits until what was written is synced and forwarded.
func (g *groupCommit) Close() error {
	g.mu.Lock()
	g.closed = true
	g.cond.Signal()
	g.mu.Unlock()
	<-g.done
	return g.err
}

func (g *groupCommit) run() {
	defer close(g.done)
	var batch []byte
	for {
		g.mu.Lock()
		for len(g.pending) == 0 && !g.closed {
			g.cond.Wait()
		}
		if len(g.pending) == 0 {
			g.mu.Unlock()
			return
		}
		batch, g.pending = g.pending, batch[:0]
		g.mu.Unlock()
		err := g.commit(batch)
		if err != nil {
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
			fmt.Fprintln(os.Stderr, "linerelay:", err)
			return
		}
	}
}

func (g *groupCommit) commit(batch []byte) error {
	if _, err := g.log.Write(batch); err != nil {
		return err
	}
	if err := syscall.Fdatasync(int(g.log.Fd())); err != nil {
		return err
	}
	_, err := g.out.Write(batch)
	return err
}
