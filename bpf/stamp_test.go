package bpf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	defer unix.Close(fd)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, ok, err := s.Lookup(fd)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no exec stamp for pid %d after 5s", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExecStamp(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := LoadExecStamps("")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	cmd := exec.Command("sleep", "5")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
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
	defer unix.Close(fd)
	if _, ok, err := s.Lookup(fd); ok || err != nil {
		t.Errorf("the test process has a stamp (%v, %v), yet it exec'd before stamping began", ok, err)
	}
}

func TestExecStampsPinned(t *testing.T) {
	testenv.RequireRoot(t)
	pin := filepath.Join("/sys/fs/bpf", "mcpcage-unit-stamps-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { UnpinExecStamps(pin); os.Remove(pin) })
	first, err := LoadExecStamps(pin)
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // the daemon stops: stamping goes on
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	second, err := LoadExecStamps(pin)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Since() != first.Since() {
		t.Errorf("a second load started a new record (since %d, first %d)", second.Since(), first.Since())
	}
	if st := stampOf(t, second, cmd.Process.Pid); st.Exec < first.Since() {
		t.Errorf("exec while no daemon ran: stamp %d before %d", st.Exec, first.Since())
	}
}
