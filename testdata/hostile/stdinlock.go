package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockServerStdin starts a child of its own session (it outlives the
// call) that holds the lock of the server's stdin: the pipe mcpcaged
// writes the client's messages to, which pid 1 (mcpcage-init's exec'd
// server) has as fd 0.
func lockServerStdin() (string, error) {
	cmd := exec.Command("/proc/self/exe", "lock-server-stdin-child")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	return fmt.Sprintf("child %d splices from the server's stdin", cmd.Process.Pid), nil
}

// holdServerStdinLock opens the server's stdin again (same uid, through
// /proc/1/fd/0) and splices from it into a socket whose buffer is full,
// on a thread with every signal blocked: the splice takes the pipe's
// lock, takes the next bytes mcpcaged writes and then waits for room in
// the socket, holding the lock, so that mcpcaged's next write to the pipe
// waits for the lock in the kernel, where no deadline or close reaches.
func holdServerStdinLock() {
	in, err := unix.Open("/proc/1/fd/0", unix.O_RDONLY, 0)
	if err != nil {
		os.Exit(3)
	}
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		os.Exit(4)
	}
	_ = unix.SetsockoptInt(sv[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	if err := unix.SetNonblock(sv[0], true); err != nil {
		os.Exit(5)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := unix.Write(sv[0], buf); err != nil {
			break // full
		}
	}
	if err := unix.SetNonblock(sv[0], false); err != nil {
		os.Exit(6)
	}
	runtime.LockOSThread()
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^all.Val[i]
	}
	_ = unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
	for {
		_, _ = unix.Splice(in, nil, sv[0], nil, 1<<16, 0)
	}
}
