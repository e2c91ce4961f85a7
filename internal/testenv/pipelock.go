package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SpliceHoldingLock starts a splice from fd in to fd out, with at most
// n bytes, on a thread of its own, and returns once that thread waits
// inside the call; the splice's result arrives on the returned channel.
// With a pipe on one side and a socket that has no data (in) or no room
// (out) on the other, the splice waits with the pipe's lock held: what a
// client that shares its pipes with mcpcaged can do.
//
// A signal (a child's SIGCHLD) would make the splice let go of the lock
// and start again: none reaches the thread while it is in the call. The
// thread goes back to Go as it was: a thread that exits takes with it the
// children forked on it that asked for a parent-death signal (the tests'
// containerd).
func SpliceHoldingLock(t testing.TB, in, out, n int) <-chan error {
	t.Helper()
	ended := make(chan error, 1)
	tids := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		var all, old unix.Sigset_t
		for i := range all.Val {
			all.Val[i] = ^uint64(0)
		}
		_ = unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old)
		tids <- unix.Gettid()
		_, err := unix.Splice(in, nil, out, nil, n, 0)
		_ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		runtime.UnlockOSThread()
		ended <- err
	}()
	tid := <-tids
	WaitFor(t, "the splice to wait inside the kernel", 10*time.Second, func() (bool, string) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
		if err != nil {
			return false, err.Error()
		}
		f := strings.Fields(string(b))
		return len(f) > 0 && f[0] == strconv.Itoa(unix.SYS_SPLICE), string(b)
	})
	return ended
}

// ThreadState is a thread's state letter (as in /proc/PID/stat) and the
// kernel function it sleeps in.
type ThreadState struct{ State, Wchan string }

// ThreadStates reads the state of every thread of pid.
func ThreadStates(pid int) map[int]ThreadState {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, _ := os.ReadDir(dir)
	out := map[int]ThreadState{}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+3 > len(s) {
			continue
		}
		wchan, _ := os.ReadFile(filepath.Join(dir, e.Name(), "wchan"))
		out[tid] = ThreadState{State: s[i+2 : i+3], Wchan: string(wchan)}
	}
	return out
}

// ThreadOnPipe finds a thread of pid in uninterruptible sleep on a pipe
// (anon_pipe_read or anon_pipe_write: waiting for its lock).
func ThreadOnPipe(pid int) (string, bool) {
	for tid, st := range ThreadStates(pid) {
		if st.State == "D" && strings.Contains(st.Wchan, "pipe") {
			return fmt.Sprintf("thread %d, %s", tid, st.Wchan), true
		}
	}
	return "", false
}
