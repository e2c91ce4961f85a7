package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
)

// Passed stdio: `mcpcage run` hands the daemon the pipes its MCP client
// gave it (SCM_RIGHTS on the request frame), so messages go from the
// client's pipe to the relay without a copy through the shim. The files
// come from an untrusted process: each must be a pipe or a stream socket
// open the right way; nothing else about them is trusted (never seeked,
// never stat'ed for size). They are made non-blocking so that Go's poller
// takes them and a deadline or closing them ends a read in progress; once
// the poller has them, those that were blocking are made blocking again
// where reads and writes ask the kernel not to wait anyway (below), since
// the client shares the flag (its own stderr, often) and its own writes
// would meet EAGAIN.
//
// O_NONBLOCK is a flag of the open file, which the process that passed it
// still shares: it can clear it again at any time, and a plain read(2)
// would then block the relay's thread where no deadline reaches it (the
// session could never end: no end record, its consents and container
// kept). So every read and write asks the kernel not to wait for data or
// room, whatever the file's flags say: MSG_DONTWAIT on a socket,
// RWF_NOWAIT on a pipe (Linux 6.4+; on older kernels a pipe relies on the
// file's own flag, and mcpcage status says so; on newer ones a pipe that
// refuses it, a named FIFO, ends the session: errNoWaitRefused).
//
// The kernel still takes a pipe's lock without a timeout, and a process
// that shares the pipe can hold that lock (a splice from a blocking
// socket into the client's stdin pipe, or from its stdout pipe into a
// full socket), keeping a read or write of the daemon's waiting
// uninterruptibly. The session does not wait for it: once its server has
// exited and the relay has had its grace, the session lets go of the
// files (abandon: whatever waits ends with errAbandoned when the lock is
// released, and nothing new starts), ends, and closes them off its path
// (close). The waiting thread stays until the lock is released; sessions
// per user are bounded (max_sessions_per_user, held until the files are
// closed: see serveRun), and so are such threads.

// maxPassedFiles is the most files a request may carry: stdin, stdout
// and stderr.
const maxPassedFiles = 3

// firstReadSize is the most the first read of a connection takes in (the
// request frame, or its beginning).
const firstReadSize = 64 << 10

// readFirst reads the beginning of a connection with recvmsg, so that
// files passed with the request frame are received (plain reads discard
// them, and the kernel closes them). It returns the bytes read and the
// files; a caller that does not adopt a file must close it.
func readFirst(c *net.UnixConn) ([]byte, []int, error) {
	buf := make([]byte, firstReadSize)
	oob := make([]byte, unix.CmsgSpace(maxPassedFiles*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds, perr := parseRights(oob[:oobn])
	if err == nil && perr != nil {
		err = perr
	}
	if err == nil && (flags&unix.MSG_CTRUNC != 0 || len(fds) > maxPassedFiles) {
		err = fmt.Errorf("more than %d files passed with the request", maxPassedFiles)
	}
	if err != nil {
		closeRefused(fds)
		return nil, nil, err
	}
	return buf[:n], fds, nil
}

// parseRights returns the file descriptors of SCM_RIGHTS messages.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("passed files: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// errAbandoned ends a read or write of a client file its session let go
// of (see abandon).
var errAbandoned = errors.New("the session ended without this client file: another process held its lock")

// closeWait bounds how long the end of a session waits to close the
// client's files: closing waits for a read or write in progress, which
// waits on a pipe's lock when another process holds it.
const closeWait = time.Second

// passedStdio are the client's own pipes, handed over by the shim.
type passedStdio struct {
	stdin, stdout *clientStream
	stderr        *clientStream // nil: the server's stderr goes to the shim in frames
	// blocking are the files that were blocking when passed and are kept
	// non-blocking for the session (pipes on a kernel before 6.4): they
	// are made blocking again before they are closed, since a process that
	// shares them (a shell that ran mcpcage run and waits) would
	// otherwise meet EAGAIN.
	blocking []*clientStream
}

// streams are the passed files.
func (p *passedStdio) streams() []*clientStream {
	all := []*clientStream{p.stdin, p.stdout}
	if p.stderr != nil {
		all = append(all, p.stderr)
	}
	return all
}

// abandon lets go of the client's files: a read or write that waits in
// the kernel (on a pipe's lock another process holds) ends with
// errAbandoned, what it read dropped, whenever the lock is released; no
// new one starts.
func (p *passedStdio) abandon() {
	for _, c := range p.streams() {
		c.abandoned.Store(true)
	}
}

// expire ends every read and write of the client's files that waits for
// data or room (in Go's poller), and lets go of them: the session has
// nothing more to say to the client.
func (p *passedStdio) expire() {
	p.abandon()
	now := time.Now()
	for _, c := range p.streams() {
		_ = c.f.SetDeadline(now)
	}
}

// close closes the daemon's copies: the client sees end of file once the
// shim has exited too. It returns once every file is closed, which waits
// for a read or write in progress, and that can wait on a pipe's lock
// another process holds (callers bound their wait: see serveRun). The
// files are closed each on its own, so that one held pipe does not keep
// the others open.
func (p *passedStdio) close() {
	for _, c := range p.blocking {
		_ = c.raw.Control(func(fd uintptr) { _ = unix.SetNonblock(int(fd), false) })
	}
	var wg sync.WaitGroup
	for _, c := range p.streams() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
	}
	wg.Wait()
}

// receiveStdio asks the shim for the client's files and takes them: the
// connection takes passed files only for this one frame (passrights.go).
// It returns the files and the frame reader for the rest of the
// connection; on error no file is kept.
func receiveStdio(c *net.UnixConn, fw *api.FrameWriter, owner uint32) (*passedStdio, *api.FrameReader, error) {
	if refusesUnaskedFiles() {
		if err := passRights(c, true); err != nil {
			return nil, nil, fmt.Errorf("%w: cannot take the files (SO_PASSRIGHTS: %v)", errBadStdio, err)
		}
	}
	if err := fw.Write(api.FrameFilesWanted, nil); err != nil {
		return nil, nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(requestWait))
	data, fds, err := readFirst(c)
	if refusesUnaskedFiles() {
		// Nothing sent from now on brings files. More sent in the
		// moment it was on stay queued, and are dropped by the reads
		// or the close of the connection, inside the session's slot.
		_ = passRights(c, false)
	}
	if err != nil {
		_ = c.SetReadDeadline(time.Time{})
		return nil, nil, fmt.Errorf("%w: %v", errBadStdio, err)
	}
	// The deadline holds until the whole frame is in: a shim that sent
	// the files with the frame's first byte only held the session's
	// start, its slots and a daemon stop for good (found by a red-team
	// helper).
	fr := api.NewFrameReader(io.MultiReader(bytes.NewReader(data), c))
	t, _, err := fr.Next()
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || t != api.FrameFiles {
		closeRefused(fds)
		return nil, nil, fmt.Errorf("%w: the shim did not send its files when asked (frame %q, %v)", errBadStdio, t, err)
	}
	p, err := adoptStdio(fds, owner)
	return p, fr, err
}

// errBadStdio says a passed file cannot serve as the client's stream.
var errBadStdio = errors.New("passed stdio refused")

// errForeignStream says a passed file is a socket the daemon does not
// write to itself: one of another family than AF_UNIX (a TCP socket's
// close can linger in the daemon's thread for as long as its SO_LINGER
// says), or a unix socket whose other end is not the session user's. The
// kernel credits what the daemon writes to a unix socket to mcpcaged
// (uid 0) for a receiver that asks (SO_PASSCRED): a user who passed a
// stream to journald's /run/systemd/journal/stdout would have the
// server's lines logged as mcpcaged's own, and flood its rate limit. The
// shim relays such a session's stdio in frames, as its user.
var errForeignStream = errors.New("not a socket mcpcaged writes itself")

// adoptStdio checks the passed files (stdin, stdout, optional stderr) of
// the session of user owner and takes them over; on error it closes them
// all.
func adoptStdio(fds []int, owner uint32) (*passedStdio, error) {
	if len(fds) < 2 || len(fds) > maxPassedFiles {
		closeRefused(fds)
		return nil, fmt.Errorf("%w: want stdin, stdout and optionally stderr, got %d files", errBadStdio, len(fds))
	}
	names := []string{"stdin", "stdout", "stderr"}
	wasBlocking := make([]bool, len(fds))
	for i, fd := range fds {
		var err error
		if wasBlocking[i], err = checkStream(fd, i == 0, owner); err != nil {
			closeRefused(fds)
			return nil, fmt.Errorf("%w: %s: %w", errBadStdio, names[i], err)
		}
	}
	// Made non-blocking only once all are taken: the flag belongs to the
	// open file, which the shim (and its client) share, and a session
	// refused here, or relayed by the shim in frames instead, must leave
	// the shim's files as they were (found by a red-team helper: a
	// client with journald's socket as stderr had its stdin made
	// non-blocking, the shim read EAGAIN as the end of its input and the
	// session ended at once).
	for i, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			for j := range i {
				if wasBlocking[j] {
					_ = unix.SetNonblock(fds[j], false)
				}
			}
			closeRefused(fds)
			return nil, fmt.Errorf("%w: %s: %w", errBadStdio, names[i], err)
		}
	}
	streams := make([]*clientStream, len(fds))
	var err error
	for i, fd := range fds {
		if streams[i], err = newClientStream(fd, "client "+names[i], wasBlocking[i]); err != nil {
			// Refused after all: every file goes back as it came.
			for j, c := range streams[:i] {
				if wasBlocking[j] {
					_ = c.raw.Control(func(fd uintptr) { _ = unix.SetNonblock(int(fd), false) })
				}
				_ = c.Close()
			}
			for j := i + 1; j < len(fds); j++ {
				if wasBlocking[j] {
					_ = unix.SetNonblock(fds[j], false)
				}
			}
			closeRefused(fds[i+1:])
			return nil, fmt.Errorf("%w: %s: %v", errBadStdio, names[i], err)
		}
	}
	p := &passedStdio{stdin: streams[0], stdout: streams[1]}
	if len(fds) == 3 {
		p.stderr = streams[2]
	}
	for i, c := range streams {
		if !wasBlocking[i] {
			continue
		}
		if c.plain {
			p.blocking = append(p.blocking, c) // made blocking again at the end
			continue
		}
		// Its reads and writes never wait whatever the flag says, and Go's
		// poller has it: the client's file is given back its flag now.
		// The client shares it (often its own stderr: the TypeScript SDK
		// inherits it), and its own writes would meet EAGAIN meanwhile.
		if err := c.raw.Control(func(fd uintptr) { _ = unix.SetNonblock(int(fd), false) }); err != nil {
			p.blocking = append(p.blocking, c)
		}
	}
	return p, nil
}

// clientStream is one of the client's passed files, read and written so
// that no call waits in the kernel (see the comment at the top): waiting
// is left to Go's poller, which deadlines and closing end.
type clientStream struct {
	f      *os.File
	raw    syscall.RawConn
	socket bool
	// plain: pipes on a kernel before 6.4, which take no RWF_NOWAIT:
	// plain reads and writes, which the file's O_NONBLOCK alone keeps
	// from waiting.
	plain bool
	// abandoned: the session let go of the file (passedStdio.abandon).
	abandoned atomic.Bool
}

// fileKind is what a passed file is (streamKind), asked of the pipe code
// (F_GETPIPE_SZ) and the socket code (SO_TYPE) only.
type fileKind int

const (
	pipeStream fileKind = iota + 1
	socketStream
)

func streamKind(fd int) (fileKind, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err == nil {
		return pipeStream, nil
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	switch {
	case errors.Is(err, unix.ENOTSOCK):
		return 0, errors.New("not a pipe or a stream socket")
	case err != nil:
		return 0, err
	case typ != unix.SOCK_STREAM:
		return 0, errors.New("a socket, but not a stream socket")
	}
	return socketStream, nil
}

// newClientStream takes over fd, checked and made non-blocking by
// checkStream. Go's poller takes a file only while it is non-blocking,
// and whoever shares the open file may clear the flag in between: the
// client, or another session of the same client given the same file
// (the TypeScript SDK gives every server it starts its own stderr, and
// each session gives the flag back once the poller has its copy; found
// by `make bench` opening 50 sessions at once). So the poller is given a
// duplicate of fd, and when it does not take it, the flag is set again
// and a new duplicate tried, up to maxTakeovers times. It fails, closing
// fd (made blocking again first when it wasBlocking), when the poller
// never took the file.
func newClientStream(fd int, name string, wasBlocking bool) (*clientStream, error) {
	giveBack := func() {
		if wasBlocking {
			_ = unix.SetNonblock(fd, false)
		}
	}
	kind, err := streamKind(fd)
	if err != nil {
		giveBack()
		_ = unix.Close(fd)
		return nil, err
	}
	f, err := pollerFile(fd, name)
	if err != nil {
		giveBack()
		_ = unix.Close(fd)
		return nil, err
	}
	_ = unix.Close(fd) // f holds the open file through its duplicate
	raw, err := f.SyscallConn()
	if err != nil {
		giveBack()
		_ = f.Close()
		return nil, err
	}
	c := &clientStream{f: f, raw: raw, socket: kind == socketStream}
	c.plain = !c.socket && !pipesTakeNoWait()
	return c, nil
}

// maxTakeovers bounds the tries of pollerFile.
const maxTakeovers = 8

// pollerFile is an *os.File on a duplicate of fd that Go's poller has
// taken (see newClientStream); fd stays open either way.
func pollerFile(fd int, name string) (*os.File, error) {
	var last error
	for range maxTakeovers {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(dup), name)
		if last = f.SetReadDeadline(time.Time{}); last == nil {
			return f, nil
		}
		_ = f.Close() // the duplicate only
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("its O_NONBLOCK flag was cleared again, %d times, while mcpcage took it over (%v)", maxTakeovers, last)
}

// errNoWaitRefused ends a passed pipe that refuses RWF_NOWAIT on a kernel
// whose pipes take it: a named FIFO, or a pipe reopened through
// /proc/PID/fd. Falling back to plain reads would let whoever shares it
// make it blocking again (see the comment at the top); no MCP client
// passes such a pipe.
var errNoWaitRefused error = noWaitRefused{}

// noWaitRefused is errNoWaitRefused: the session ends with it, and the
// shim prints it (relay.ClientStreamError).
type noWaitRefused struct{}

func (noWaitRefused) Error() string {
	return "the client's pipe does not take non-waiting reads and writes (a named FIFO, or a pipe reopened through /proc): give mcpcage run the pipes the client made"
}
func (noWaitRefused) ClientStreamError() {}

// pipesTakeNoWait says whether this kernel's pipes take RWF_NOWAIT
// (Linux 6.4+), tried once on a pipe of the daemon's own.
var pipesTakeNoWait = sync.OnceValue(func() bool {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return false
	}
	defer closeFDs(p[:])
	_, err := unix.Preadv2(p[0], [][]byte{make([]byte, 1)}, -1, unix.RWF_NOWAIT)
	return errors.Is(err, unix.EAGAIN)
})

func (c *clientStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.abandoned.Load() {
		return 0, errAbandoned
	}
	n, err := c.read(p)
	if c.abandoned.Load() {
		return 0, errAbandoned // the session ended while the read waited
	}
	return n, err
}

func (c *clientStream) read(p []byte) (int, error) {
	if c.plain {
		return c.f.Read(p)
	}
	var n int
	var serr error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			if c.socket {
				n, _, serr = unix.Recvfrom(int(fd), p, unix.MSG_DONTWAIT)
			} else {
				n, serr = unix.Preadv2(int(fd), [][]byte{p}, -1, unix.RWF_NOWAIT)
			}
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(serr, unix.EOPNOTSUPP) && !c.socket:
		return 0, errNoWaitRefused
	case serr != nil:
		return 0, &os.PathError{Op: "read", Path: c.f.Name(), Err: serr}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *clientStream) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		if c.abandoned.Load() {
			return written, errAbandoned
		}
		if c.plain {
			n, err := c.f.Write(p[written:])
			return written + n, err
		}
		var n int
		var serr error
		err := c.raw.Write(func(fd uintptr) bool {
			for {
				if c.socket {
					n, serr = unix.SendmsgN(int(fd), p[written:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
				} else {
					n, serr = unix.Pwritev2(int(fd), [][]byte{p[written:]}, -1, unix.RWF_NOWAIT)
				}
				if serr != unix.EINTR {
					return serr != unix.EAGAIN
				}
			}
		})
		switch {
		case err != nil:
			return written, err
		case errors.Is(serr, unix.EOPNOTSUPP) && !c.socket:
			return written, errNoWaitRefused
		case serr != nil:
			return written, &os.PathError{Op: "write", Path: c.f.Name(), Err: serr}
		}
		written += n
	}
	if c.abandoned.Load() {
		return written, errAbandoned // the session ended while the write waited
	}
	return written, nil
}

func (c *clientStream) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *clientStream) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }
func (c *clientStream) Close() error                       { return c.f.Close() }

// ownUnixSocket checks that socket fd is an AF_UNIX one whose other end
// is owner's (errForeignStream otherwise).
func ownUnixSocket(fd int, owner uint32) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	if domain != unix.AF_UNIX {
		return fmt.Errorf("%w: a socket of address family %d, not a unix socket", errForeignStream, domain)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return err
	}
	if cred.Uid != owner {
		return fmt.Errorf("%w: a unix socket whose other end is uid %d's, not the session user's", errForeignStream, cred.Uid)
	}
	return nil
}

// checkStream accepts a pipe or a unix stream socket whose other end is
// owner's, open for reading (read) or writing; it reports whether it is
// blocking (adoptStdio makes it non-blocking). Another socket is
// errForeignStream. It asks the file's kind of the pipe and socket code
// only, never its file system: fstat of a file on a FUSE mount the user
// serves waits for that server, which could keep the daemon's thread for
// good (found by a red-team helper).
func checkStream(fd int, read bool, owner uint32) (bool, error) {
	switch kind, err := streamKind(fd); {
	case err != nil:
		return false, err
	case kind == socketStream:
		if err := ownUnixSocket(fd, owner); err != nil {
			return false, err
		}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return false, err
	}
	switch acc := fl & unix.O_ACCMODE; {
	case read && acc == unix.O_WRONLY:
		return false, errors.New("not open for reading")
	case !read && acc == unix.O_RDONLY:
		return false, errors.New("not open for writing")
	}
	return fl&unix.O_NONBLOCK == 0, nil
}
