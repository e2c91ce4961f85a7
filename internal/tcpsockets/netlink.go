package tcpsockets

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of one request's answer.
const (
	answerTimeout = 5 * time.Second
	recvSize      = 64 << 10 // more than the kernel puts in one reply of a dump
	// maxDatagrams: a dump's sockets in the first reply, its end in the
	// second at the latest; an exact lookup's answer in the first.
	maxDatagrams = 2
	maxSockets   = 256
)

var seq atomic.Uint32

// errTooMany: the sockets that match did not fit one reply of the
// kernel, so its table was read in more than one pass.
var errTooMany = fmt.Errorf("%w (more than one reply of the kernel holds)", ErrAmbiguous)

// run sends r to the kernel and reads its answer, from a netlink socket
// of its own connected to the kernel (no other program can write to
// it, and what does not come from the kernel is refused). A dump's
// sockets must all come in its first reply, that is from one pass of
// the kernel over its table: an answer that needs more is refused
// (errTooMany), not read.
func (r request) run() (answer, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return answer{}, fmt.Errorf("open a NETLINK_SOCK_DIAG socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	if err := unix.Connect(fd, kernel); err != nil {
		return answer{}, fmt.Errorf("connect a NETLINK_SOCK_DIAG socket to the kernel: %w", err)
	}
	tv := unix.NsecToTimeval(answerTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return answer{}, fmt.Errorf("set a NETLINK_SOCK_DIAG socket's timeout: %w", err)
	}
	s := seq.Add(1)
	if err := unix.Sendto(fd, r.marshal(s), 0, kernel); err != nil {
		return answer{}, fmt.Errorf("ask the kernel for TCP sockets (sock_diag): %w", err)
	}
	buf := make([]byte, recvSize)
	var a answer
	for i := 0; !a.done; i++ {
		if i == maxDatagrams {
			return answer{}, fmt.Errorf("the kernel's answer (sock_diag) did not end after %d replies", maxDatagrams)
		}
		n, _, flags, from, err := unix.Recvmsg(fd, buf, nil, 0)
		switch {
		case errors.Is(err, unix.EINTR):
			i--
			continue
		case errors.Is(err, unix.EAGAIN):
			return answer{}, fmt.Errorf("the kernel did not answer a sock_diag request within %s", answerTimeout)
		case err != nil:
			return answer{}, fmt.Errorf("read the kernel's answer (sock_diag): %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return answer{}, fmt.Errorf("the kernel's answer (sock_diag) is longer than %d bytes", recvSize)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			return answer{}, fmt.Errorf("a sock_diag answer that is not the kernel's (from %v)", from)
		}
		before := len(a.sockets)
		if err := decode(buf[:n], s, &a); err != nil {
			return answer{}, fmt.Errorf("the kernel's answer (sock_diag): %w", err)
		}
		if i > 0 && len(a.sockets) > before || len(a.sockets) > maxSockets {
			return answer{}, errTooMany
		}
	}
	return a, nil
}
