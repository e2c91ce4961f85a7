package bpf

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
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
