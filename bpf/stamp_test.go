package bpf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
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
		if ok && st.Pending {
			return false, "its exec under way" // marked at the point of no return, written once loaded
		}
		return ok, "no stamp"
	})
	return st
}

func TestExecStamp(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := LoadExecStamps("", testEnvNames)
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
	first, err := LoadExecStamps(pin, testEnvNames)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, "exec-v1")); !os.IsNotExist(err) {
		t.Errorf("the exec-v1 pin is still there (%v)", err)
	}
	for _, name := range []string{"stamps", "forks", "meta", "env", "exec", "fork"} {
		if _, err := os.Stat(filepath.Join(pin, pinVersion(testEnvNames), name)); err != nil {
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
	second, err := LoadExecStamps(pin, testEnvNames)
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
	// A daemon that keeps other environment variables starts a record of
	// its own, and the other one's pins go.
	other := append([]EnvName{{Pattern: "PYTHON"}}, testEnvNames...)
	third, err := LoadExecStamps(pin, other)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = third.Close() }()
	if third.Since() == first.Since() {
		t.Errorf("other names reused the record of %v", testEnvNames)
	}
	if _, err := os.Stat(filepath.Join(pin, pinVersion(testEnvNames))); !os.IsNotExist(err) {
		t.Errorf("the pins of the earlier names are still there (%v)", err)
	}
}

// testEnvNames are the variables the unit tests' stampers keep.
var testEnvNames = []EnvName{{"PATH=", true}, {"NODE_OPTIONS=", true}, {"LD_", false}, {"ENV=", false}, {"BASH_", false}}

// The stamp keeps, in order, the variables its names match as they were
// at exec (whole for the names whose values are read, else the name and
// whether the value is empty), and says when it could not look at them
// all.
func TestExecStampKeepsEnvironment(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := LoadExecStamps("", testEnvNames)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	long := "X=" + strings.Repeat("x", 5000)
	many := func(n int, format string) []string {
		env := make([]string, 0, n)
		for i := range n {
			env = append(env, fmt.Sprintf(format, i))
		}
		return env
	}
	shellFunc := func(name string) string {
		return "BASH_FUNC_" + name + "%%=() { " + strings.Repeat("echo x; ", 250) + "}"
	}
	tests := []struct {
		name      string
		env       []string
		kept      string
		cut       []string
		unchecked bool
	}{
		{"matches kept, others not", []string{"PATH=/usr/bin", "HOME=/root", "LD_PRELOAD=/x.so", "ENVX=1", "ENV=/e", "NODE_OPTIONSX=1", "LD_=2", "LD_EMPTY="},
			"PATH=/usr/bin\x00LD_PRELOAD=x\x00ENV=x\x00LD_=x\x00LD_EMPTY=\x00", nil, false},
		{"long strings skipped", []string{long, "LD_AUDIT=/a.so", long + "y", "NODE_OPTIONS=--require /r.js"},
			"LD_AUDIT=x\x00NODE_OPTIONS=--require /r.js\x00", nil, false},
		{"a name of 21 bytes: the '=' and the value's first byte in the first look", []string{"LD_" + strings.Repeat("A", 18) + "=1", "LD_" + strings.Repeat("B", 18) + "="},
			"LD_" + strings.Repeat("A", 18) + "=x\x00LD_" + strings.Repeat("B", 18) + "=\x00", nil, false},
		{"a name of 22 bytes or more: kept whole", []string{"LD_" + strings.Repeat("A", 19) + "=1", "LD_" + strings.Repeat("C", 20) + "=", "LD_LIBRARY_PATH_IS_LONGER_THAN_THAT=1"},
			"LD_" + strings.Repeat("A", 19) + "=1\x00LD_" + strings.Repeat("C", 20) + "=\x00LD_LIBRARY_PATH_IS_LONGER_THAN_THAT=1\x00", nil, false},
		{"none", []string{"HOME=/root"}, "", nil, false},
		{"8000 variables", append(many(8000, "V%d=1"), "LD_PRELOAD=/y.so"), "LD_PRELOAD=x\x00", nil, false},
		{"9000 variables: not all looked at", append(many(9000, "V%d=1"), "LD_PRELOAD=/y.so"), "", nil, true},
		{"values over 510 bytes: cut, named, and the rest still kept",
			[]string{"PATH=" + strings.Repeat("/usr/bin:", 100), "LD_PRELOAD=" + strings.Repeat("/x", 300), "ENV=/e", "X=" + strings.Repeat("x", 600), "LD_AUDIT=/a.so"},
			"LD_PRELOAD=x\x00ENV=x\x00LD_AUDIT=x\x00", []string{"PATH"}, false},
		{"shell functions' bodies take no room", append([]string{"PATH=" + strings.Repeat("p", 400)},
			shellFunc("module"), shellFunc("ml"), shellFunc("scl"), shellFunc("which"), shellFunc("nvm"), shellFunc("switchml")),
			"PATH=" + strings.Repeat("p", 400) + "\x00BASH_FUNC_module%%=x\x00BASH_FUNC_ml%%=x\x00BASH_FUNC_scl%%=x\x00BASH_FUNC_which%%=x\x00BASH_FUNC_nvm%%=x\x00BASH_FUNC_switchml%%=x\x00", nil, false},
		{"510 bytes: whole", []string{"PATH=" + strings.Repeat("p", 505)}, "PATH=" + strings.Repeat("p", 505) + "\x00", nil, false},
		{"whole ones over 2 KiB", many(5, "LD_A_NAME_KEPT_WHOLE_%d="+strings.Repeat("p", 480)), "", nil, true},
		{"more than 64 matches", many(65, "LD_%d=1"), "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "5")
			cmd.Env = tt.env
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			st := stampOf(t, s, cmd.Process.Pid)
			if (st.EnvUnchecked != "") != tt.unchecked {
				t.Fatalf("unchecked %q, want unchecked %v", st.EnvUnchecked, tt.unchecked)
			}
			if !tt.unchecked && (string(st.Env) != tt.kept || !slices.Equal(st.EnvCut, tt.cut)) {
				t.Fatalf("kept %q, cut %q; want %q, cut %q", st.Env, st.EnvCut, tt.kept, tt.cut)
			}
		})
	}
}

// The names' table takes what fits and refuses the rest.
func TestEnvConfig(t *testing.T) {
	tests := []struct {
		name  string
		names []EnvName
		ok    bool
	}{
		{"the daemon's kind", testEnvNames, true},
		{"empty name", []EnvName{{}}, false},
		{"23 bytes", []EnvName{{Pattern: strings.Repeat("A", 23)}}, true},
		{"24 bytes: the first look could not match it", []EnvName{{Pattern: strings.Repeat("A", 24)}}, false},
		{"too many", make([]EnvName, EnvPatternsMax+1), false},
	}
	for _, tt := range tests {
		c, err := envConfig(tt.names)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
		if err == nil && (int(c.N) != len(tt.names) || c.Value != 0b11 && tt.name == "the daemon's kind") {
			t.Errorf("%s: %d patterns (values %b), want %d", tt.name, c.N, c.Value, len(tt.names))
		}
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
	s, err := LoadExecStamps("", testEnvNames)
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
