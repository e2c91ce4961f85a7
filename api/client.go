package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is the daemon's socket unless configured otherwise.
const DefaultSocket = "/run/mcpcage/mcpcage.sock"

// EnvSocket overrides DefaultSocket for clients.
const EnvSocket = "MCPCAGE_SOCKET"

// SocketPath picks the socket: the flag, then $MCPCAGE_SOCKET, then the
// default.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(EnvSocket); env != "" {
		return env
	}
	return DefaultSocket
}

// ErrDaemonUnreachable wraps every failure to reach the daemon.
var ErrDaemonUnreachable = errors.New("mcpcaged is not reachable")

// Conn is a client connection to the daemon.
type Conn struct {
	net.Conn
	R *FrameReader
	W *FrameWriter
	// EarlyStderr takes the server's stderr that comes before the reply
	// that starts a framed session: an older mcpcaged sent what a server
	// (or mcpcage-init) wrote as it started as soon as it came; this one
	// keeps it until the reply is out. nil drops it.
	EarlyStderr io.Writer
}

// Dial connects to the daemon's socket and explains failures in terms a
// user can act on.
func Dial(socket string) (*Conn, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, explainDial(socket, err)
	}
	if err := checkServer(c, socket); err != nil {
		_ = c.Close()
		return nil, err
	}
	return &Conn{Conn: c, R: NewFrameReader(c), W: NewFrameWriter(c)}, nil
}

// checkServer refuses a socket that neither root nor the caller serves.
// mcpcaged runs as root; the socket's path can come from the environment
// ($MCPCAGE_SOCKET), which an MCP client's configuration sets for the
// shim: a project's configuration could point it at a socket another
// user listens on, and the shim would hand that user the client's pipes
// (and `mcpcage secret set` its secret). The caller's own uid is allowed:
// a daemon the user runs is no one else's.
func checkServer(c net.Conn, socket string) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w at %s: %v", ErrDaemonUnreachable, socket, err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		return fmt.Errorf("%w at %s: cannot tell who serves it: %v", ErrDaemonUnreachable, socket, cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s is served by a process of uid %d, not by mcpcaged (which runs as root): nothing was sent; check --socket and $%s", ErrDaemonUnreachable, socket, cred.Uid, EnvSocket)
	}
	return nil
}

func explainDial(socket string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: mcpcaged is not running (no daemon at %s): start it with `systemctl start mcpcaged`, or point --socket/%s at its socket", ErrDaemonUnreachable, socket, EnvSocket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w: permission denied on %s: add your user to the mcpcage group (`sudo usermod -aG mcpcage $USER`, then log in again)", ErrDaemonUnreachable, socket)
	}
	return fmt.Errorf("%w at %s: %v", ErrDaemonUnreachable, socket, err)
}

// Do sends req and reads the daemon's reply.
func (c *Conn) Do(req Request) (*Reply, error) { return c.DoPassing(req, nil) }

// DoPassing sends req with the open files fds attached to it (SCM_RIGHTS;
// the daemon gets duplicates, the caller keeps its own) and reads the
// daemon's reply.
func (c *Conn) DoPassing(req Request, fds []int) (*Reply, error) {
	req.Version = Version
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFrame {
		return nil, ErrFrameTooLarge
	}
	uc, isUnix := c.Conn.(*net.UnixConn)
	if len(fds) > 0 && !isUnix {
		return nil, errors.New("open files can only be passed over a unix socket")
	}
	if err := c.W.Write(FrameRequest, b); err != nil {
		return nil, fmt.Errorf("send request to mcpcaged: %w", err)
	}
	t, payload, err := c.R.Next()
	if err != nil {
		return nil, fmt.Errorf("read reply from mcpcaged: %w", err)
	}
	t, payload, err = c.skipEarlyStderr(t, payload, err)
	if err != nil {
		return nil, fmt.Errorf("read reply from mcpcaged: %w", err)
	}
	if t == FrameFilesWanted && len(fds) > 0 {
		// The daemon admitted the session and takes the files now: one
		// sendmsg, the files on the frame's first byte.
		frame := AppendFrame(nil, FrameFiles, nil)
		if _, _, err := uc.WriteMsgUnix(frame, syscall.UnixRights(fds...), nil); err != nil {
			return nil, fmt.Errorf("pass the client's stdio to mcpcaged: %w", err)
		}
		if t, payload, err = c.R.Next(); err != nil {
			return nil, fmt.Errorf("read reply from mcpcaged: %w", err)
		}
		if t, payload, err = c.skipEarlyStderr(t, payload, err); err != nil {
			return nil, fmt.Errorf("read reply from mcpcaged: %w", err)
		}
	}
	if t != FrameReply {
		return nil, fmt.Errorf("mcpcaged answered with frame %q, want a reply: client and daemon versions differ?", t)
	}
	var r Reply
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("decode reply from mcpcaged: %w", err)
	}
	return &r, nil
}

// skipEarlyStderr hands the server's stderr frames that come before the
// reply to EarlyStderr and returns the first other frame.
func (c *Conn) skipEarlyStderr(t FrameType, payload []byte, err error) (FrameType, []byte, error) {
	for err == nil && t == FrameStderr {
		if c.EarlyStderr != nil {
			_, _ = c.EarlyStderr.Write(payload)
		}
		t, payload, err = c.R.Next()
	}
	return t, payload, err
}

// ReplyError is a reply that is not OK: the daemon's message and code.
type ReplyError struct {
	Code Code
	Msg  string
}

func (e *ReplyError) Error() string { return e.Msg }

// Call is Dial + Do + close for one-shot requests; a reply that is not OK
// becomes a *ReplyError holding the daemon's message.
func Call(socket string, req Request, data any) error {
	c, err := Dial(socket)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Do(req)
	if err != nil {
		return err
	}
	if !r.OK {
		return &ReplyError{Code: r.Code, Msg: r.Error}
	}
	if data != nil && len(r.Data) > 0 {
		return json.Unmarshal(r.Data, data)
	}
	return nil
}
