package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The eBPF benchmark's line as `make bench` printed it on 2026-12-05.
const syscallLine = `pkg: github.com/mcpcage/mcpcage/bpf
BenchmarkSyscallOverhead-2   	       1	148686608736 ns/op	      3917 detached-open-ns	         1.081 floor-open-x	         1.158 floor-open-x-max	         1.032 floor-open-x-min	       4544 inside-open-ns	         1.148 inside-open-x	         1.306 inside-open-x-max	         1.108 inside-open-x-min	         1.106 outside-open-x	         1.235 outside-open-x-max	         0.9841 outside-open-x-min
BenchmarkEventPipeline-2     	       1	1665994510 ns/op	     15984 events/s-1sessions
`

func TestKernelTargets(t *testing.T) {
	tests := []struct {
		name   string
		output string
		want   []string // substrings, in order, one per line
	}{
		{"one met, one missed", syscallLine, []string{
			"inside a session, ÷ no program (median of 5 rounds, 1.108..1.306): 1.148×; target ≤ 1.15×: **met**, 0.002× to spare",
			"the floor of inside-open-x: one empty program on the same tracepoint, 1.081× (median of 5 rounds, 1.032..1.158); the cage's programs add 0.067× over it",
			"outside a session while one runs, ÷ no program (median of 5 rounds, 0.984..1.235): 1.106×; target ≤ 1.03×: **missed by 0.076×**",
			"the floor of outside-open-x: one empty program on the same tracepoint, 1.081× (median of 5 rounds, 1.032..1.158); the cage's programs add 0.025× over it (the target, 1.03×, is below this floor",
		}},
		{"a metric missing", "BenchmarkSyscallOverhead-2 1 5 ns/op 1.2 inside-open-x\n", []string{
			"inside a session, ÷ no program (median of 5 rounds): 1.200×; target ≤ 1.15×: **missed by 0.050×**",
			"outside a session while one runs, ÷ no program (median of 5 rounds): not measured (target ≤ 1.03×)",
		}},
		{"the benchmark did not run", "BenchmarkSyscallOverheadOther-2 1 5 ns/op\nok x 1s\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kernelTargets(tt.output)
			if len(got) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("line %d:\n got %s\nwant it to contain %s", i, got[i], w)
				}
			}
		})
	}
}

func TestAppendKernelTargets(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "gobench.txt"), filepath.Join(dir, "results.md")
	if err := os.WriteFile(in, []byte(syscallLine), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte("# results\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	if err := appendKernelTargets(in, out, &printed); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# results\n\n## Kernel targets") || !strings.HasSuffix(string(b), printed.String()) || strings.Count(string(b), "\n- ") != 4 {
		t.Fatalf("results file:\n%s", b)
	}
	if err := appendKernelTargets(filepath.Join(dir, "missing"), out, &printed); err == nil {
		t.Fatal("a missing benchmark output was taken")
	}
}
