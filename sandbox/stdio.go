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
	stop         chan struct{} // closed: the open of stdin ends
	stdout       *os.File      // the daemon's read ends, open from Open on
	stderr       *os.File
	openErr      error // opening them failed
	opening      bool  // Open ran: the daemon's opens are under way
	settled      bool  // Connect ran: its opens completed, or it ended them
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

// NewServerStdio makes dir (which must not exist) with the three FIFOs.
// Call Open just before the sandbox starts (or let Connect do it),
// Connect once it started, Close always.
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
		inCh: make(chan opened, 1), stop: make(chan struct{})}
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

// stdinRetry is how often the daemon tries again to open its end of the
// server's stdin while mcpcage-init has not opened its own.
const stdinRetry = 500 * time.Microsecond

// Open opens the daemon's ends, so that mcpcage-init finds them open the
// moment it opens its own: call it just before the sandbox's task starts
// (then Connect does not wait for containerd to report the start first).
// Connect calls it when nobody did; Close ends it when Connect is never
// called. Once only.
//
// No open waits in the kernel for the other end: a goroutine blocked in a
// system call can hold up a garbage collection's stop of the world for as
// long as the call waits (Go 1.26 and 1.27: one that enters the call as
// the stop begins is missed, and the stop then waits for it to return),
// which here would be until the sandbox opened the FIFO, or for good if it
// never did, and every session would stop with it. The read ends (the
// server's stdout and stderr) open at once without waiting (O_NONBLOCK);
// the write end (its stdin) cannot open before a reader has, so it is
// tried again every stdinRetry until mcpcage-init opens it, which it does
// after its stdout and stderr: once the daemon's stdin is open, the
// server's three ends are. Nothing is opened before Open, so a prepared
// sandbox in the warm pool holds nothing.
func (s *ServerStdio) Open() {
	if s.opening {
		return
	}
	s.opening = true
	if s.stdout, s.openErr = openNonBlocking(s.out, unix.O_RDONLY); s.openErr == nil {
		s.stderr, s.openErr = openNonBlocking(s.err, unix.O_RDONLY)
	}
	go func() { f, err := s.openStdin(); s.inCh <- opened{f, err} }()
}

// openStdin opens the daemon's end of the server's stdin once
// mcpcage-init opened its own, or returns nil when s.stop is closed first.
func (s *ServerStdio) openStdin() (*os.File, error) {
	t := time.NewTicker(stdinRetry)
	defer t.Stop()
	for {
		f, err := openNonBlocking(s.in, unix.O_WRONLY)
		if !errors.Is(err, unix.ENXIO) { // ENXIO: no reader yet
			return f, err
		}
		select {
		case <-s.stop:
			return nil, nil
		case <-t.C:
		}
	}
}

// openNonBlocking opens the FIFO at path without waiting for its other
// end (flag: unix.O_RDONLY or unix.O_WRONLY); the file is non-blocking,
// on Go's poller.
func openNonBlocking(path string, flag int) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Connect waits until mcpcage-init has opened the three FIFOs and returns
// the daemon's ends: the server's stdin to write, its stdout and stderr
// to read. It fails when exited is closed first (the sandbox died before)
// or after within.
func (s *ServerStdio) Connect(exited <-chan struct{}, within time.Duration) (stdin, stdout, stderr *os.File, err error) {
	s.Open()
	s.settled = true
	if s.openErr != nil {
		s.release()
		return nil, nil, nil, fmt.Errorf("server stdio: %w", s.openErr)
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case o := <-s.inCh:
		if o.err != nil {
			// An end the daemon cannot open fails the launch at once (the
			// sandbox would wait for it until the timeout).
			s.release()
			return nil, nil, nil, fmt.Errorf("server stdio: %w", o.err)
		}
		stdin = o.f
	case <-exited:
		s.release()
		return nil, nil, nil, fmt.Errorf("%w: it exited first", ErrStdioNotConnected)
	case <-t.C:
		s.release()
		return nil, nil, nil, fmt.Errorf("%w within %v", ErrStdioNotConnected, within)
	}
	// Every end is open: the names have done their work.
	for _, p := range []string{s.in, s.out, s.err} {
		if err := os.Remove(p); err != nil {
			for _, f := range []*os.File{stdin, s.stdout, s.stderr} {
				_ = f.Close()
			}
			return nil, nil, nil, fmt.Errorf("server stdio: %w", err)
		}
	}
	return stdin, s.stdout, s.stderr, nil
}

// release closes the read ends and ends the open of stdin, waiting for
// it (so no goroutine stays), closing what it opened meanwhile.
func (s *ServerStdio) release() {
	for _, f := range []*os.File{s.stdout, s.stderr} {
		if f != nil {
			_ = f.Close()
		}
	}
	s.stdout, s.stderr = nil, nil
	close(s.stop)
	if o := <-s.inCh; o.f != nil {
		_ = o.f.Close()
	}
}

// Close removes the directory; the daemon's ends are the caller's to
// close once Connect returned them (Connect ends its own waiting opens
// when it fails).
func (s *ServerStdio) Close() error {
	if s.opening && !s.settled {
		s.release() // Open ran, Connect never did
	}
	s.settled = true
	return os.RemoveAll(s.dir)
}
