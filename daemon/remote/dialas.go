package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/fscred"
)

// Owner is the user a user's own remote server's connections are made
// for.
type Owner struct{ UID, GID uint32 }

// dialAs connects to addr (an address and port) with a socket made with
// owner's file-system credentials: the socket is the user's for the
// kernel (its uid in /proc/net/tcp, uid routing, and the owner matches
// of a host firewall, which read the credentials the socket's file was
// made with), not root's, though mcpcaged makes it.
func dialAs(ctx context.Context, addr string, owner Owner, timeout time.Duration) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if zone := ap.Addr().Zone(); zone != "" { // a link-local address's interface
		ifi, err := net.InterfaceByName(zone)
		if err != nil {
			return nil, fmt.Errorf("interface %q of %s: %w", zone, addr, err)
		}
		sa6.ZoneId = uint32(ifi.Index)
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(sa6)
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	fd, err := socketAs(family, owner)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: on Go's poller
	defer func() { _ = f.Close() }()    // FileConn holds a copy
	if err := connect(ctx, f, sa); err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(30 * time.Second)
	}
	return c, nil
}

// socketAs makes a non-blocking TCP socket with owner's file-system
// credentials, on a thread of its own: setgroups, setfsgid and setfsuid
// act on one thread only, and the thread is never given back (it ends
// with its goroutine), so no other goroutine runs with them.
func socketAs(family int, owner Owner) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := fscred.Take(fscred.Cred{UID: owner.UID, GID: owner.GID}); err != nil {
			ch <- result{-1, fmt.Errorf("cannot make a socket as the user: %w", err)}
			return
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// connect connects f's socket to sa, waiting on Go's poller until it is
// connected, refused, or ctx ends.
func connect(ctx context.Context, f *os.File, sa unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	if cerr == nil {
		return nil
	}
	if !errors.Is(cerr, unix.EINPROGRESS) {
		return os.NewSyscallError("connect", cerr)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
		case v != 0:
			cerr = unix.Errno(v)
		default:
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false // still connecting: wait until writable
			}
			cerr = nil
		}
		return true
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case werr != nil:
		return werr
	case cerr != nil:
		return os.NewSyscallError("connect", cerr)
	}
	return nil
}
