package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every run pins its eBPF objects (the exec stamper's, and each of its
// daemons' cages) in a directory of its own, pinBase/run-PID-START-PIDNS
// (PID and start time of the process that ran the tests' process, and
// the inode of its pid namespace): the exec stamper removes the pins of
// other versions of itself in its directory, so two runs of different
// commits sharing one would take each other's agent records away. The
// run's own process removes it at the end; one a killed run left is
// removed by the next run on the machine. The BPF file system can be
// shared by runs in other pid namespaces (containers given the host's
// /sys/fs/bpf), whose PIDs mean nothing here: their directories are
// removed only once older than any run lasts (staleAge).

// pinBase holds the runs' pin directories.
const pinBase = "/sys/fs/bpf/mcpcage-itest"

// pinDirEnv passes the run's pin directory to its tests' process.
const pinDirEnv = "MCPCAGE_ITEST_PIN_DIR"

// pinRoot is this run's daemon.bpf_pin_dir: the exec stamper's pins and
// one directory of pinned links per containerd namespace.
func pinRoot() string { return os.Getenv(pinDirEnv) }

// newRunPinDir names this process's pin directory, after removing those
// of runs whose process is gone.
func newRunPinDir() (string, error) {
	if err := os.MkdirAll(pinBase, 0o700); err != nil {
		return "", fmt.Errorf("create %s (is the BPF file system mounted on /sys/fs/bpf?): %w", pinBase, err)
	}
	ents, err := os.ReadDir(pinBase)
	if err != nil {
		return "", fmt.Errorf("list earlier runs' pins: %w", err)
	}
	ns, err := pidNamespace()
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		info, err := e.Info()
		if err == nil && staleRun(e.Name(), ns, info.ModTime()) {
			// Best effort: what stays costs the host a tracepoint per exec.
			_ = os.RemoveAll(filepath.Join(pinBase, e.Name()))
		}
	}
	name, err := runPinName(os.Getpid(), ns)
	if err != nil {
		return "", err
	}
	return filepath.Join(pinBase, name), nil
}

// staleAge is how old a pin directory of a run in another pid namespace
// must be to be taken for a killed run's: longer than any run lasts (CI
// gives one 40 minutes).
const staleAge = 24 * time.Hour

// runPinName is the pin directory's name for the run of process pid in
// pid namespace ns.
func runPinName(pid int, ns uint64) (string, error) {
	start, err := processStart(pid)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("run-%d-%s-%d", pid, start, ns), nil
}

// staleRun says whether the pin directory name, last changed at mod, is
// a killed run's, this process being in pid namespace ns: one of this
// namespace whose process is gone or started at another time (a reused
// pid), one of another namespace (whose pids cannot be looked up here)
// once older than staleAge, and whatever is not a run's. A name without
// a namespace (an earlier harness's) is judged as one of this namespace.
func staleRun(name string, ns uint64, mod time.Time) bool {
	f := strings.Split(name, "-")
	if f[0] != "run" || (len(f) != 3 && len(f) != 4) {
		return true
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil || pid <= 0 {
		return true
	}
	if len(f) == 4 {
		theirs, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return true
		}
		if theirs != ns {
			return time.Since(mod) > staleAge
		}
	}
	start, err := processStart(pid)
	return err != nil || start != f[2]
}

// pidNamespace is the inode of this process's pid namespace, the one
// /proc shows.
func pidNamespace() (uint64, error) {
	fi, err := os.Stat("/proc/self/ns/pid")
	if err != nil {
		return 0, fmt.Errorf("pid namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("pid namespace: no inode in %T", fi.Sys())
	}
	return st.Ino, nil
}

// processStart is the start time of process pid (field 22 of its stat,
// in clock ticks since boot).
func processStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	return f[19], nil
}

// A run's pin directory is kept while its process runs, and taken for a
// killed run's once the pid is gone or belongs to another process. One
// named by a run in another pid namespace (a container sharing the BPF
// file system) is kept until older than any run: its pid means nothing
// here (it was removed, the other run's agents then refused).
func TestRunPinDirOfAKilledRunIsStale(t *testing.T) {
	ns, err := pidNamespace()
	if err != nil {
		t.Fatal(err)
	}
	own, err := runPinName(os.Getpid(), ns)
	if err != nil {
		t.Fatal(err)
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	now, old := time.Now(), time.Now().Add(-staleAge-time.Minute)
	other := ns + 1
	tests := []struct {
		name  string
		mod   time.Time
		stale bool
	}{
		{own, now, false},
		{own, old, false}, // a long run of this namespace: its process says
		{fmt.Sprintf("run-%d-1-%d", os.Getpid(), ns), now, true},     // the pid reused by another process
		{fmt.Sprintf("run-4194305-1-%d", ns), now, true},             // above pid_max's highest value: no such process
		{fmt.Sprintf("run-%d-%s", os.Getpid(), start), now, false},   // an earlier harness's name, of a running process
		{"run-4194305-1", now, true},                                 // an earlier harness's name, no such process
		{fmt.Sprintf("run-4194305-1-%d", other), now, false},         // a run in another pid namespace
		{fmt.Sprintf("run-%d-1-%d", os.Getpid(), other), now, false}, // its pid reused here means nothing
		{fmt.Sprintf("run-4194305-1-%d", other), old, true},          // another namespace's, older than any run
		{"exec-v5-0123abcd", now, true},
		{"run-x-1", now, true},
		{"run-1-1-x", now, true},
		{"run-1-2-3-4", now, true},
	}
	for _, tt := range tests {
		if got := staleRun(tt.name, ns, tt.mod); got != tt.stale {
			t.Errorf("staleRun(%q, mod %v ago) = %v, want %v", tt.name, time.Since(tt.mod).Round(time.Minute), got, tt.stale)
		}
	}
}
