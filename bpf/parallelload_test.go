package bpf

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestProgramGroups(t *testing.T) {
	prog := func(n int) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Instructions: make(asm.Instructions, n)}
	}
	tests := []struct {
		name   string
		sizes  map[string]int
		n      int
		groups [][]string
	}{
		{"one loader", map[string]int{"a": 1, "b": 2}, 1, [][]string{{"b", "a"}}},
		{"the two largest apart", map[string]int{"big": 100, "large": 90, "s1": 10, "s2": 10, "s3": 5}, 2, [][]string{{"big", "s2"}, {"large", "s1", "s3"}}},
		{"more loaders than programs", map[string]int{"a": 3, "b": 2}, 4, [][]string{{"a"}, {"b"}}},
		{"no program", map[string]int{}, 2, [][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{}}
			for name, n := range tt.sizes {
				spec.Programs[name] = prog(n)
			}
			got := programGroups(spec, tt.n)
			if !slices.EqualFunc(got, tt.groups, slices.Equal) {
				t.Fatalf("groups %v, want %v", got, tt.groups)
			}
		})
	}
}
