package bpf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// stampOf waits for pid's stamp (the exec tracepoint fires just after the
// parent learns that exec succeeded).
func stampOf(t *testing.T, s *ExecStamps, pid int) ExecStamp {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	var st ExecStamp
	testenv.WaitFor(t, fmt.Sprintf("the exec stamp of pid %d", pid), 5*time.Second, func() (bool, string) {
		var ok bool
		var err error
		st, ok, err = s.Lookup(fd)
		if err != nil {
			t.Fatal(err)
		}
		return ok, "no stamp"
	})
	return st
}

func TestExecStamp(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := LoadExecStamps("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	dir := t.TempDir()
	cmd := exec.Command("sleep", "5")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	st := stampOf(t, s, cmd.Process.Pid)
	if st.Exec < s.Since() || st.Start > st.Exec {
		t.Errorf("exec %d, start %d, stamping since %d: want since <= exec and start <= exec", st.Exec, st.Start, s.Since())
	}
	if want := "sleep\x005\x00"; string(st.Argv) != want || st.ArgvLen != len(want) {
		t.Errorf("argv %q (%d bytes), want %q", st.Argv, st.ArgvLen, want)
	}
	var fi unix.Stat_t
	if err := unix.Stat(dir, &fi); err != nil {
		t.Fatal(err)
	}
	if st.CwdDev != fi.Dev || st.CwdIno != fi.Ino {
		t.Errorf("cwd %d:%d, want %d:%d", st.CwdDev, st.CwdIno, fi.Dev, fi.Ino)
	}
	// The fork time agrees with /proc's start time (clock ticks).
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ticks, _ := strconv.ParseUint(f[19], 10, 64)
	const tick = uint64(10 * time.Millisecond) // USER_HZ 100
	if d := int64(st.Start/tick) - int64(ticks); d < -1 || d > 1 {
		t.Errorf("start %d ns is %d ticks away from /proc's %d", st.Start, d, ticks)
	}
	// A task that has not exec'd since stamping began has no stamp.
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	if _, ok, err := s.Lookup(fd); ok || err != nil {
		t.Errorf("the test process has a stamp (%v, %v), yet it exec'd before stamping began", ok, err)
	}
}

func TestExecStampsPinned(t *testing.T) {
	testenv.RequireRoot(t)
	pin := filepath.Join("/sys/fs/bpf", "mcpcage-unit-stamps-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { _ = UnpinExecStamps(pin); _ = os.Remove(pin) })
	// A pin of an earlier layout is removed, never reused.
	if err := os.MkdirAll(filepath.Join(pin, "exec-v1"), 0o700); err != nil {
		t.Fatal(err)
	}
	first, err := LoadExecStamps(pin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, "exec-v1")); !os.IsNotExist(err) {
		t.Errorf("the exec-v1 pin is still there (%v)", err)
	}
	for _, name := range []string{"stamps", "forks", "meta", "exec", "fork"} {
		if _, err := os.Stat(filepath.Join(pin, stampPinVersion, name)); err != nil {
			t.Errorf("pin %s: %v", name, err)
		}
	}
	// The daemon stops: stamping goes on.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	second, err := LoadExecStamps(pin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = second.Close() }()
	if second.Since() != first.Since() {
		t.Errorf("a second load started a new record (since %d, first %d)", second.Since(), first.Since())
	}
	if st := stampOf(t, second, cmd.Process.Pid); st.Exec < first.Since() {
		t.Errorf("exec while no daemon ran: stamp %d before %d", st.Exec, first.Since())
	}
}

// startTicks is a process's start time in clock ticks (/proc/PID/stat
// field 22) and its parent.
func startTicks(t *testing.T, pid int) (ppid int, ticks uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ = strconv.Atoi(f[1])
	ticks, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, ticks
}

// TestForkStamp: the fork record names the process that called clone,
// not the child's parent.
func TestForkStamp(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := LoadExecStamps("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	_, selfTicks := startTicks(t, os.Getpid())
	const tick = uint64(10 * time.Millisecond)

	// Forked from a thread that is not the main one: the forker is the
	// process (tgid), with the process's start time.
	started := make(chan *exec.Cmd)
	go func() {
		runtime.LockOSThread() // this thread ends with the goroutine
		cmd := exec.Command("sleep", "5")
		if err := cmd.Start(); err != nil {
			started <- nil
			return
		}
		started <- cmd
	}()
	cmd := <-started
	if cmd == nil {
		t.Fatal("start sleep failed")
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	st := stampOf(t, s, cmd.Process.Pid)
	if int(st.Forker) != os.Getpid() || st.ForkerStart/tick != selfTicks {
		t.Errorf("forker %d started %d ns, want this process %d started at tick %d", st.Forker, st.ForkerStart, os.Getpid(), selfTicks)
	}

	// clone(CLONE_PARENT): the child's parent is this process, its forker
	// is cloneparent.
	sibling, forker := testenv.CloneParentSibling(t, "..", "sleep", "5")
	st = stampOf(t, s, sibling)
	_, cpTicks := startTicks(t, forker)
	if ppid, _ := startTicks(t, sibling); ppid != os.Getpid() {
		t.Fatalf("sibling's parent is %d, want this process %d: CLONE_PARENT did not take", ppid, os.Getpid())
	}
	if int(st.Forker) != forker || st.ForkerStart/tick != cpTicks {
		t.Errorf("forker %d started %d ns, want cloneparent %d started at tick %d", st.Forker, st.ForkerStart, forker, cpTicks)
	}
	if l := s.Lost(); l.Execs != 0 || l.Forks != 0 {
		t.Logf("lost stamps: %+v", l)
	}
}
