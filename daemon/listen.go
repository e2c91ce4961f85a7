package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/internal/subid"
)

// Listen creates the daemon's unix socket: its directory is created, a
// stale socket from a dead daemon is replaced (a live one is an error),
// and the socket gets mode 0660 and group mcpcage when that group exists.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("another mcpcaged is already listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	refuseFiles(ln) // before anyone but root may connect (passrights.go)
	gid := -1
	if g, err := user.LookupGroup(config.SocketGroup); err == nil {
		if n, err := strconv.Atoi(g.Gid); err == nil {
			gid = n
		}
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("give socket to group mcpcage: %w", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return ln, nil
}

// Peer is who is on the other end of a connection, per the kernel.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
	// PidFD is the peer process as it was when it connected (SO_PEERPIDFD,
	// see peerPidfd); nil where the kernel lacks it. Closed with the
	// connection.
	PidFD *os.File
	// Owner: UID is a subordinate uid of this user (/etc/subuid), whose
	// per-user bounds it counts toward (account.go); nil for an account
	// of its own.
	Owner *subid.Owner
}

func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
