package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every run pins its eBPF objects (the exec stamper's, and each of its
// daemons' cages) in a directory of its own, pinBase/run-PID-START (PID
// and start time of the process that ran the tests' process): the exec
// stamper removes the pins of other versions of itself in its directory,
// so two runs of different commits sharing one would take each other's
// agent records away. The run's own process removes it at the end; one a
// killed run left is removed by the next run on the machine.

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
	for _, e := range ents {
		if !runAlive(e.Name()) {
			// Best effort: what stays costs the host a tracepoint per exec.
			_ = os.RemoveAll(filepath.Join(pinBase, e.Name()))
		}
	}
	name, err := runPinName(os.Getpid())
	if err != nil {
		return "", err
	}
	return filepath.Join(pinBase, name), nil
}

// runPinName is the pin directory's name for the run of process pid.
func runPinName(pid int) (string, error) {
	start, err := processStart(pid)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("run-%d-%s", pid, start), nil
}

// runAlive says whether the run a pin directory is named for still runs:
// its process exists and started when the name says (not a reused pid).
func runAlive(name string) bool {
	var pid int
	if _, err := fmt.Sscanf(name, "run-%d-", &pid); err != nil {
		return false
	}
	now, err := runPinName(pid)
	return err == nil && now == name
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
// killed run's once the pid is gone or belongs to another process.
func TestRunPinDirOfAKilledRunIsStale(t *testing.T) {
	own, err := runPinName(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		alive bool
	}{
		{own, true},
		{fmt.Sprintf("run-%d-1", os.Getpid()), false}, // the pid reused by another process
		{"run-4194305-1", false},                      // above pid_max's highest value: no such process
		{"exec-v5-0123abcd", false},
		{"run-x-1", false},
	}
	for _, tt := range tests {
		if got := runAlive(tt.name); got != tt.alive {
			t.Errorf("runAlive(%q) = %v, want %v", tt.name, got, tt.alive)
		}
	}
}
