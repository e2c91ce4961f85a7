package main

import (
	"fmt"
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"
)

// open32 is open(2) made as a 32-bit system call (int $0x80): the i386
// entry point, which a 64-bit process can reach too. path must be an
// address below 4 GiB.
func open32(path uint32, flags uint32) int32

// compatPath holds the path for open32: a global of a static, non-PIE
// binary lies below 4 GiB, where the 32-bit call can name it (the heap
// does not).
var compatPath [4096]byte

// readCompat opens path with the 32-bit open(2) and reads it with the
// ordinary 64-bit read(2). A kernel without the 32-bit entry (ia32
// emulation off, or a PVM guest) faults on int $0x80: errNoCompat.
func readCompat(path string) (_ []byte, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w (%v)", errNoCompat, r)
		}
	}()
	if len(path) >= len(compatPath) {
		return nil, fmt.Errorf("path too long")
	}
	addr := uintptr(unsafe.Pointer(&compatPath[0]))
	if addr >= 1<<32 {
		return nil, fmt.Errorf("the path buffer is at %#x, above 4 GiB: build without -buildmode=pie", addr)
	}
	copy(compatPath[:], path)
	compatPath[len(path)] = 0
	fd := open32(uint32(addr), unix.O_RDONLY)
	if fd < 0 {
		return nil, unix.Errno(-fd)
	}
	defer unix.Close(int(fd))
	b := make([]byte, 1<<16)
	n, err := unix.Read(int(fd), b)
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}
