package bpf

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/bpf/probe"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// A crashed daemon's pins are removed at the next load, and nothing else
// in the directory: daemon.bpf_pin_dir and containerd_namespace name it,
// and a directory that holds another program's pins too must keep them.
func TestRemoveStalePinsOnlyTheCages(t *testing.T) {
	dir := t.TempDir()
	own := append(slices.Clone(cagePins), observerPin+"sys_enter_openat", observerPin+"sk_data_ready")
	foreign := []string{"cilium_calls_00042", "globals", "exec-v5-0123abcd", "connect4x", "xobs-"}
	for _, n := range append(slices.Clone(own), foreign...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeStalePins(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	slices.Sort(foreign)
	if !slices.Equal(left, foreign) {
		t.Errorf("left %q, want only the foreign pins %q", left, foreign)
	}
}

// crashLoadEnv has this test binary load the cage as a daemon would
// (cgroup parent and pin directory, "PARENT:PINS"), with the bind hooks,
// and exit without closing it: a crashed daemon's pins are left.
const crashLoadEnv = "MCPCAGE_TEST_CRASH_LOAD"

func loadAndCrash(dirs string) int {
	parent, pins, _ := strings.Cut(dirs, ":")
	c, err := Load(Options{CgroupParent: parent, PinDir: pins})
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	if _, err := c.EnableBind(); err != nil {
		fmt.Fprintln(os.Stderr, "bind hooks:", err)
		return 1
	}
	return 0 // no Close: the pins stay, as after a SIGKILL
}

// A daemon started after a crash loads the cage over the crashed one's
// pins: every pin it left is taken for stale and replaced, none stands in
// the way (a pin left of a name the cage does not remove made the next
// pin of that name fail, and with it the whole eBPF layer).
func TestLoadAfterACrash(t *testing.T) {
	testenv.RequireRoot(t)
	root := probe.CgroupV2Root()
	testenv.Require(t, root != "", "cgroup v2")
	unique := fmt.Sprintf("mcpcage-unit-%d-%s", os.Getpid(), filepath.Base(t.TempDir()))
	parent, pins := filepath.Join(root, unique), filepath.Join("/sys/fs/bpf", unique)
	t.Cleanup(func() { _ = os.RemoveAll(pins); _ = os.Remove(parent) })
	crash := exec.Command(os.Args[0], "-test.run=^$")
	crash.Env = append(os.Environ(), crashLoadEnv+"="+parent+":"+pins)
	if out, err := crash.CombinedOutput(); err != nil {
		t.Fatalf("the crashing load: %v\n%s", err, out)
	}
	left, err := os.ReadDir(pins)
	if err != nil || len(left) == 0 {
		t.Fatalf("the crashed load left no pins (%v): nothing to test", err)
	}
	c, err := Load(Options{CgroupParent: parent, PinDir: pins})
	if err != nil {
		t.Fatalf("load after the crash: %v", err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if _, err := c.EnableBind(); err != nil {
		t.Fatalf("bind hooks after the crash: %v", err)
	}
	for _, e := range left {
		if !slices.Contains(cagePins, e.Name()) {
			t.Errorf("the crashed load pinned %q, which is not among cagePins: a crash leaves it in the way", e.Name())
		}
	}
}
