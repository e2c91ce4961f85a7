package bpf

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// legacyOpenCalls are open(2) and creat(2), which amd64 still has.
func legacyOpenCalls() []openCall {
	return []openCall{
		{"open", unix.O_RDONLY | unix.O_NONBLOCK, func(p string) (int, error) {
			return rawOpen(unix.SYS_OPEN, p, unix.O_RDONLY|unix.O_NONBLOCK)
		}},
		{"creat", unix.O_CREAT | unix.O_WRONLY | unix.O_TRUNC, func(p string) (int, error) {
			return rawOpen(unix.SYS_CREAT, p, 0o644)
		}},
	}
}

// rawOpen makes open(2) or creat(2), which the Go library no longer
// calls, with one integer argument after the path.
func rawOpen(nr uintptr, path string, arg uintptr) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, _, errno := unix.Syscall(nr, uintptr(unsafe.Pointer(p)), arg, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}
