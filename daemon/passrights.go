package daemon

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Files passed over the daemon's socket are taken only when the daemon
// asks for them: SO_PASSRIGHTS is off on the listener, so every
// connection starts refusing them (the sender's sendmsg fails with
// EPERM), and a session the daemon admitted, holding one of its user's
// session slots, turns it on just long enough to receive the client's
// pipes (receiveStdio); a refused one never takes any. A connection made before the listener refused files
// (systemd's backlog while the daemon starts) holds a slot until it is
// closed (handle). A file the daemon holds
// is one it may have to close, and closing a pipe takes the pipe's lock,
// which a process sharing it can hold without end (see stdio.go): files
// nobody asked for, sent with any request, would each keep a daemon
// thread waiting, with no bound. Linux 6.16+; older kernels take files on
// every connection, and mcpcage status says so.

// soPassRights is SO_PASSRIGHTS (Linux 6.16; the generic value, x86_64
// and arm64 alike), which golang.org/x/sys does not name yet.
const soPassRights = 83

// passRights turns the taking of passed files on or off for a socket.
func passRights(sc syscall.Conn, on bool) error {
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, soPassRights, v) }); err != nil {
		return err
	}
	return serr
}

// refusesUnaskedFiles says whether this kernel lets the daemon refuse
// files it did not ask for (SO_PASSRIGHTS), tried once on a socket pair.
var refusesUnaskedFiles = sync.OnceValue(func() bool {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer closeFDs(p[:])
	if unix.SetsockoptInt(p[1], unix.SOL_SOCKET, soPassRights, 0) != nil {
		return false
	}
	err = unix.Sendmsg(p[0], []byte{0}, unix.UnixRights(p[0]), nil, unix.MSG_DONTWAIT)
	return errors.Is(err, unix.EPERM)
})

// takesFiles says whether a socket takes passed files now (false on a
// kernel without SO_PASSRIGHTS, which cannot say).
func takesFiles(sc syscall.Conn) bool {
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	on := false
	_ = raw.Control(func(fd uintptr) {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPassRights)
		on = err == nil && v != 0
	})
	return on
}

// refuseFiles turns the taking of passed files off on the listener (its
// connections inherit it) or a connection; a kernel without
// SO_PASSRIGHTS is left as it is.
func refuseFiles(sc any) {
	if c, ok := sc.(syscall.Conn); ok && refusesUnaskedFiles() {
		_ = passRights(c, false)
	}
}
