package testshard

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		oneChild  string // "" when the run can be sharded
		run       string
		json      bool
		failFast  bool
		wantError bool
	}{
		{name: "go test's form", args: []string{"-test.paniconexit0", "-test.timeout=40m0s", "-test.count=1", "-test.v=true", "-test.run=^TestA$"}, run: "^TestA$"},
		{name: "value in the next argument", args: []string{"-test.run", "TestB", "-test.v"}, run: "TestB"},
		{name: "two dashes", args: []string{"--test.run=TestC", "--test.failfast"}, run: "TestC", failFast: true},
		{name: "test2json", args: []string{"-test.v=test2json"}, json: true},
		{name: "failfast false", args: []string{"-test.failfast=false"}},
		{name: "subtests", args: []string{"-test.run=TestA/one"}, run: "TestA/one", oneChild: "-test.run selects subtests"},
		{name: "skip", args: []string{"-test.skip=TestA"}, oneChild: "-test.skip"},
		{name: "benchmarks", args: []string{"-test.bench=."}, oneChild: "-test.bench"},
		{name: "no benchmarks", args: []string{"-test.bench="}},
		{name: "profile", args: []string{"-test.cpuprofile", "cpu.out"}, oneChild: "-test.cpuprofile"},
		{name: "coverage", args: []string{"-test.gocoverdir=/tmp/x"}, oneChild: "-test.gocoverdir"},
		{name: "shuffle", args: []string{"-test.shuffle=on"}, oneChild: "-test.shuffle"},
		{name: "shuffle off", args: []string{"-test.shuffle=off"}},
		{name: "an argument of the package", args: []string{"-update"}, oneChild: "arguments that are not test flags (-update)"},
		{name: "a value missing", args: []string{"-test.run"}, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseArgs(tt.args)
			if (err != nil) != tt.wantError {
				t.Fatalf("parseArgs(%q): error %v, want an error: %v", tt.args, err, tt.wantError)
			}
			if err != nil {
				return
			}
			if got := p.oneChild(); got != tt.oneChild {
				t.Errorf("oneChild() = %q, want %q", got, tt.oneChild)
			}
			if got := p.flags[flagRun]; got != tt.run {
				t.Errorf("-test.run = %q, want %q", got, tt.run)
			}
			if p.json() != tt.json || p.failFast() != tt.failFast {
				t.Errorf("json %v failFast %v, want %v %v", p.json(), p.failFast(), tt.json, tt.failFast)
			}
		})
	}
}

func TestOrder(t *testing.T) {
	got := order([]string{"TestA", "TestB", "TestC", "TestD"}, []string{"TestC", "TestGone", "TestA", "TestC"})
	if want := []string{"TestC", "TestA", "TestB", "TestD"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func TestDropEndOfRun(t *testing.T) {
	tests := []struct{ block, want string }{
		{"=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS\n", "=== RUN   TestA\n--- PASS: TestA (0.00s)\n"},
		{"--- FAIL: TestA (0.00s)\nFAIL\n", "--- FAIL: TestA (0.00s)\n"},
		{"\x16--- PASS: TestA (0.00s)\n\x16PASS\n", "\x16--- PASS: TestA (0.00s)\n"},
		{"a line without its endPASS\n", "a line without its end\n"},
		{"PASS\n", ""},
		{"ok PASSED\n", "ok PASSED\n"},
		{"--- PASS: TestA (0.00s)\n", "--- PASS: TestA (0.00s)\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		b.WriteString(tt.block)
		last := strings.LastIndex(strings.TrimSuffix(tt.block, "\n"), "\n") + 1
		dropEndOfRun(&b, last)
		if b.String() != tt.want {
			t.Errorf("dropEndOfRun(%q) = %q, want %q", tt.block, b.String(), tt.want)
		}
	}
}

// pipeShard is a shard whose tasks are read back by the test.
func pipeShard(t *testing.T, n int) (*shard, *bufio.Reader) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(); _ = w.Close() })
	return &shard{n: n, tasks: w}, bufio.NewReader(r)
}

func TestQueueHandsOut(t *testing.T) {
	tests := []struct {
		name     string
		failFast bool
		pending  []string
		alone    []string
		fail     bool     // the first test fails
		want     []string // handed to shard 1, shard 2, then to whoever finishes first (shard 1)
	}{
		{name: "in order", pending: []string{"TestA", "TestB", "TestC"}, want: []string{"TestA", "TestB", "TestC"}},
		{name: "failfast stops", failFast: true, fail: true, pending: []string{"TestA", "TestB", "TestC"}, want: []string{"TestA", "TestB", ""}},
		{name: "a failure without failfast goes on", fail: true, pending: []string{"TestA", "TestB", "TestC"}, want: []string{"TestA", "TestB", "TestC"}},
		{name: "alone waits for the others", pending: []string{"TestA", "TestB"}, alone: []string{"TestZ"}, want: []string{"TestA", "TestB", "(parked)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &queue{out: io.Discard, failFast: tt.failFast, pending: tt.pending, alone: tt.alone}
			s1, r1 := pipeShard(t, 1)
			s2, r2 := pipeShard(t, 2)
			q.start([]*shard{s1, s2})
			got := []string{s1.current, s2.current}
			q.finished(s1, !tt.fail)
			switch {
			case slices.Contains(q.parked, s1):
				got = append(got, "(parked)")
			default:
				got = append(got, s1.current)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("handed %q, want %q", got, tt.want)
			}
			for _, r := range []*bufio.Reader{r1, r2} {
				if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "Test") {
					t.Errorf("a shard read %q, want a test's name", line)
				}
			}
			if len(tt.alone) > 0 {
				// Shard 2 finishes: nothing runs, so shard 2 takes the test
				// that runs alone, and the parked shard 1 is done.
				q.finished(s2, true)
				if s2.current != "TestZ" || s1.current != "" || !s1.closed || q.running != 1 {
					t.Errorf("after the others: shard 2 runs %q, shard 1 %q (closed %v), %d running; want TestZ, none, closed, 1",
						s2.current, s1.current, s1.closed, q.running)
				}
			}
		})
	}
}
