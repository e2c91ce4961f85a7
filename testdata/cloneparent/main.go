// Command cloneparent runs a program as its caller's child rather than its
// own: it calls clone(CLONE_PARENT), so the new process's parent is
// cloneparent's parent, execs the program there, then waits for it to
// exit (through a pidfd: it is not cloneparent's child). Tests use it to
// play a process an agent started that passes a shim of its own off as
// one the agent spawned.
//
//	cloneparent [-pid FILE] PROGRAM [ARG...]
//
// -pid writes the new process's pid to FILE.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	pidFile := flag.String("pid", "", "write the new process's pid to this file")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: cloneparent [-pid FILE] PROGRAM [ARG...]")
		os.Exit(2)
	}
	pid, err := spawnSibling(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloneparent:", err)
		os.Exit(1)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "cloneparent:", err)
			os.Exit(1)
		}
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		os.Exit(0) // gone already
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			return
		}
	}
}

// spawnSibling forks with clone(CLONE_PARENT) and execs argv in the child.
// The child runs only raw system calls on memory prepared beforehand, as
// the Go runtime does in its own fork.
func spawnSibling(argv []string) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, err
	}
	pathp, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return 0, err
	}
	envp, err := syscall.SlicePtrFromStrings(os.Environ())
	if err != nil {
		return 0, err
	}
	syscall.ForkLock.Lock()
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, syscall.CLONE_PARENT|uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno == 0 && pid == 0 {
		syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(pathp)), uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])))
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 127, 0, 0)
	}
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return 0, fmt.Errorf("clone(CLONE_PARENT): %w", errno)
	}
	return int(pid), nil
}
