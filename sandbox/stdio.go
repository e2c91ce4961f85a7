package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ServerStdio are the server's stdin, stdout and stderr as pipes the
// daemon owns end to end: three FIFOs in a per-session directory, which
// mcpcage-init (see Params.StdioDir) opens as fds 0, 1 and 2 before it
// execs the server. No process copies the bytes in between (containerd
// gives the sandbox no stdio of its own), and once every end is open the
// names are removed, so nothing else can open them.
type ServerStdio struct {
	dir          string
	in, out, err string // the FIFOs: the server reads in, writes out and err
	inCh         chan opened
	outCh, errCh chan opened
	opening      bool // Open ran: the daemon's opens are under way
	settled      bool // Connect ran: its opens completed, or it ended them
}

// The FIFOs' names in their directory, as mcpcage-init opens them.
const (
	StdioIn  = "in"
	StdioOut = "out"
	StdioErr = "err"
)

type opened struct {
	f   *os.File
	err error
}

// NewServerStdio makes dir (which must not exist) with the three FIFOs
// and starts opening the daemon's ends: each open completes when
// mcpcage-init opens the other end. Call Connect once the server started,
// Close always.
//
// The directory and the FIFOs belong to root and to the server's group,
// which alone may use them (0750 and 0660): the daemon needs no
// CAP_DAC_OVERRIDE to open them (its packaged unit has none), and the
// directory is visible only inside the session's sandbox.
func NewServerStdio(dir string, gid uint32) (*ServerStdio, error) {
	if err := os.Mkdir(dir, 0o750); err != nil {
		return nil, fmt.Errorf("server stdio: %w", err)
	}
	s := &ServerStdio{dir: dir, in: filepath.Join(dir, StdioIn), out: filepath.Join(dir, StdioOut), err: filepath.Join(dir, StdioErr),
		inCh: make(chan opened, 1), outCh: make(chan opened, 1), errCh: make(chan opened, 1)}
	for _, p := range []string{s.in, s.out, s.err} {
		if err := unix.Mkfifo(p, 0o660); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("server stdio: mkfifo %s: %w", p, err)
		}
	}
	for _, p := range []string{dir, s.in, s.out, s.err} {
		// Mode bits as asked, whatever the umask; root keeps ownership.
		err := os.Lchown(p, 0, int(gid))
		if err == nil {
			mode := os.FileMode(0o660)
			if p == dir {
				mode = 0o750 | os.ModeDir
			}
			err = os.Chmod(p, mode.Perm())
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("server stdio: %w", err)
		}
	}
	return s, nil
}

// Dir is the directory to mount for mcpcage-init.
func (s *ServerStdio) Dir() string { return s.dir }

// ErrStdioNotConnected says the server never opened its stdio.
var ErrStdioNotConnected = errors.New("the sandbox did not open its stdin, stdout and stderr")

// Open starts opening the daemon's ends, so that mcpcage-init finds them
// open the moment it opens its own: call it just before the sandbox's
// task starts (then Connect does not wait for containerd to report the
// start first). Connect calls it when nobody did; Close ends the opens
// when Connect is never called. Once only.
func (s *ServerStdio) Open() {
	if s.opening {
		return
	}
	s.opening = true
	// An open of one end of a FIFO blocks until the other end is opened
	// (mcpcage-init opens its ends once the sandbox starts): each waits
	// on its own goroutine (Go makes the opened FIFO non-blocking and
	// pollable). Nothing waits before Open, so a prepared sandbox in the
	// warm pool holds no thread.
	go func() { f, err := os.OpenFile(s.in, os.O_WRONLY, 0); s.inCh <- opened{f, err} }()
	go func() { f, err := os.OpenFile(s.out, os.O_RDONLY, 0); s.outCh <- opened{f, err} }()
	go func() { f, err := os.OpenFile(s.err, os.O_RDONLY, 0); s.errCh <- opened{f, err} }()
}

// Connect waits until mcpcage-init has opened the three FIFOs and returns
// the daemon's ends: the server's stdin to write, its stdout and stderr
// to read. It fails when exited is closed first (the sandbox died before)
// or after within.
func (s *ServerStdio) Connect(exited <-chan struct{}, within time.Duration) (stdin, stdout, stderr *os.File, err error) {
	s.Open()
	s.settled = true
	t := time.NewTimer(within)
	defer t.Stop()
	var in, out, errOut *opened
	for in == nil || out == nil || errOut == nil {
		var got *opened
		select {
		case o := <-s.inCh:
			in, got = &o, &o
		case o := <-s.outCh:
			out, got = &o, &o
		case o := <-s.errCh:
			errOut, got = &o, &o
		case <-exited:
			s.release(in, out, errOut)
			return nil, nil, nil, fmt.Errorf("%w: it exited first", ErrStdioNotConnected)
		case <-t.C:
			s.release(in, out, errOut)
			return nil, nil, nil, fmt.Errorf("%w within %v", ErrStdioNotConnected, within)
		}
		if got.err != nil {
			// An end the daemon cannot open fails the launch at once (the
			// sandbox would wait for it until the timeout).
			s.release(in, out, errOut)
			return nil, nil, nil, fmt.Errorf("server stdio: %w", got.err)
		}
	}
	// Every end is open: the names have done their work.
	for _, p := range []string{s.in, s.out, s.err} {
		if err := os.Remove(p); err != nil {
			s.release(in, out, errOut)
			return nil, nil, nil, fmt.Errorf("server stdio: %w", err)
		}
	}
	return in.f, out.f, errOut.f, nil
}

// release closes the ends the daemon holds and ends the opens still
// waiting (nil: not received yet), so no goroutine stays blocked.
func (s *ServerStdio) release(in, out, errOut *opened) {
	for _, o := range []*opened{in, out, errOut} {
		if o != nil && o.f != nil {
			_ = o.f.Close()
		}
	}
	if in == nil {
		unblock(s.in, unix.O_RDONLY, s.inCh) // a writer waits for a reader
	}
	if out == nil {
		unblock(s.out, unix.O_WRONLY, s.outCh) // a reader waits for a writer
	}
	if errOut == nil {
		unblock(s.err, unix.O_WRONLY, s.errCh)
	}
}

// unblockRetry is how often unblock tries again while the waiting open
// has not started yet (a writer's non-blocking open needs a reader).
const unblockRetry = 10 * time.Millisecond

// unblock opens path's other end without blocking until the open waiting
// on ch completes, then closes both.
func unblock(path string, flag int, ch chan opened) {
	for {
		fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			o := <-ch
			if o.f != nil {
				_ = o.f.Close()
			}
			_ = unix.Close(fd)
			return
		}
		if !errors.Is(err, unix.ENXIO) {
			return // the FIFO is gone: nothing can complete the open
		}
		select {
		case o := <-ch:
			if o.f != nil {
				_ = o.f.Close()
			}
			return
		case <-time.After(unblockRetry):
		}
	}
}

// Close removes the directory; the daemon's ends are the caller's to
// close once Connect returned them (Connect ends its own waiting opens
// when it fails).
func (s *ServerStdio) Close() error {
	if s.opening && !s.settled {
		s.release(nil, nil, nil) // Open ran, Connect never did
	}
	s.settled = true
	return os.RemoveAll(s.dir)
}
