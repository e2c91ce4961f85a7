package bpf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// hostNetnsCookie returns the cookie of this process's network namespace,
// the host's: the daemon runs there, and network = "host" sandboxes join
// it. The connect, sendmsg and bind hooks refuse a socket of this
// namespace to a session without host networking (cage.h's host_socket):
// it can only have been passed in. Needs Linux 5.14 (SO_NETNS_COOKIE).
func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("host network namespace: socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("host network namespace: SO_NETNS_COOKIE: %w", err)
	}
	return cookie, nil
}
