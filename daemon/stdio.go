package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Passed stdio: `mcpcage run` hands the daemon the pipes its MCP client
// gave it (SCM_RIGHTS on the request frame), so messages go from the
// client's pipe to the relay without a copy through the shim. The files
// come from an untrusted process: each must be a pipe or a stream socket
// open the right way; nothing else about them is trusted (never seeked,
// never stat'ed for size). They are made non-blocking so that closing
// them ends a read in progress; the shim no longer uses them.

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
		closeFDs(fds)
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

// passedStdio are the client's own pipes, handed over by the shim.
type passedStdio struct {
	stdin, stdout *os.File
	stderr        *os.File // nil: the server's stderr goes to the shim in frames
	// blocking are the files that were blocking when passed: they are
	// made blocking again before they are closed, since a process that
	// shares them (a shell that ran mcpcage run and waits) would
	// otherwise meet EAGAIN.
	blocking []*os.File
}

// close closes the daemon's copies: the client sees end of file once the
// shim has exited too.
func (p *passedStdio) close() {
	for _, f := range p.blocking {
		if raw, err := f.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { _ = unix.SetNonblock(int(fd), false) })
		}
	}
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// errBadStdio says a passed file cannot serve as the client's stream.
var errBadStdio = errors.New("passed stdio refused")

// adoptStdio checks the passed files (stdin, stdout, optional stderr) and
// takes them over; on error it closes them all.
func adoptStdio(fds []int) (*passedStdio, error) {
	if len(fds) < 2 || len(fds) > maxPassedFiles {
		closeFDs(fds)
		return nil, fmt.Errorf("%w: want stdin, stdout and optionally stderr, got %d files", errBadStdio, len(fds))
	}
	names := []string{"stdin", "stdout", "stderr"}
	wasBlocking := make([]bool, len(fds))
	for i, fd := range fds {
		var err error
		if wasBlocking[i], err = checkStream(fd, i == 0); err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("%w: %s: %v", errBadStdio, names[i], err)
		}
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "client "+names[i])
	}
	p := &passedStdio{stdin: files[0], stdout: files[1]}
	if len(fds) == 3 {
		p.stderr = files[2]
	}
	for i, f := range files {
		if wasBlocking[i] {
			p.blocking = append(p.blocking, f)
		}
	}
	return p, nil
}

// checkStream accepts a pipe or a stream socket open for reading (read)
// or writing, and makes it non-blocking; it reports whether it was
// blocking.
func checkStream(fd int, read bool) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return false, err
		}
		if typ != unix.SOCK_STREAM {
			return false, errors.New("a socket, but not a stream socket")
		}
	default:
		return false, fmt.Errorf("not a pipe or a stream socket (file mode %#o)", st.Mode&unix.S_IFMT)
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
	return fl&unix.O_NONBLOCK == 0, unix.SetNonblock(fd, true)
}
