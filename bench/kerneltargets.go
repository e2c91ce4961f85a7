package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// The kernel-cost targets (an open/close loop, as a ratio to the same
// loop with no program attached): inside a session, and outside one
// while a session runs. BenchmarkSyscallOverhead (./bpf) measures both
// over 5 rounds and reports each as the rounds' median with their least
// and greatest (metrics NAME, NAME-min, NAME-max), beside its floor: one
// empty program on the same tracepoint.
const (
	targetInsideOpenX  = 1.15
	targetOutsideOpenX = 1.03
	syscallBenchName   = "BenchmarkSyscallOverhead"
)

// benchMetrics reads the metrics of the first result line of benchmark
// name in go test -bench output: unit → value.
func benchMetrics(output, name string) map[string]float64 {
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// "BenchmarkX-2  N  v1 unit1  v2 unit2 ..."
		if len(f) < 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"-")) {
			continue
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		return m
	}
	return nil
}

// kernelTargets compares the eBPF benchmark's open/close ratios in
// output (go test -bench output) with the targets; nil when the
// benchmark's line is not in it.
func kernelTargets(output string) []string {
	m := benchMetrics(output, syscallBenchName)
	if m == nil {
		return nil
	}
	get := func(name string) float64 {
		if v, ok := m[name]; ok {
			return v
		}
		return math.NaN()
	}
	rounds := func(name string) string {
		lo, hi := get(name+"-min"), get(name+"-max")
		if math.IsNaN(lo) || math.IsNaN(hi) {
			return "median of 5 rounds"
		}
		return fmt.Sprintf("median of 5 rounds, %.3f..%.3f", lo, hi)
	}
	floor := get("floor-open-x")
	var out []string
	for _, t := range []struct {
		what, metric string
		limit        float64
	}{
		{"eBPF, open/close inside a session, ÷ no program", "inside-open-x", targetInsideOpenX},
		{"eBPF, open/close outside a session while one runs, ÷ no program", "outside-open-x", targetOutsideOpenX},
	} {
		got := get(t.metric)
		out = append(out, goal{what: t.what + " (" + rounds(t.metric) + ")", got: got, limit: t.limit,
			limitText: fmt.Sprintf("%.2f×", t.limit), unit: "×", digits: 3}.String())
		if !math.IsNaN(floor) && !math.IsNaN(got) {
			line := fmt.Sprintf("the floor of %s: one empty program on the same tracepoint, %.3f× (%s); the cage's programs add %.3f× over it",
				t.metric, floor, rounds("floor-open-x"), got-floor)
			if floor > t.limit {
				line += fmt.Sprintf(" (the target, %.2f×, is below this floor: any program on the tracepoint costs more)", t.limit)
			}
			out = append(out, line)
		}
	}
	return out
}

// appendKernelTargets reads go test -bench output from benchOut and
// appends its kernel targets to the results file out (and to stdout).
func appendKernelTargets(benchOut, out string, stdout io.Writer) error {
	b, err := os.ReadFile(benchOut)
	if err != nil {
		return err
	}
	lines := kernelTargets(string(b))
	if lines == nil {
		lines = []string{syscallBenchName + " did not run: the kernel targets are not measured"}
	}
	var s strings.Builder
	s.WriteString("\n## Kernel targets (" + syscallBenchName + ", same run)\n\n")
	for _, l := range lines {
		s.WriteString("- " + l + "\n")
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s.String()); err != nil {
		_ = f.Close()
		return err
	}
	_, _ = io.WriteString(stdout, s.String())
	return f.Close()
}
