package testshard

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// sampleDir holds the sample binary; TestMain removes it.
var sampleDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if sampleDir != "" {
		_ = os.RemoveAll(sampleDir) // under the system's temporary directory: cleaned some day anyway
	}
	os.Exit(code)
}

// sampleBinary builds testdata/sample's test binary once.
var sampleBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "testshard-")
	if err != nil {
		return "", err
	}
	sampleDir = dir
	bin := filepath.Join(dir, "sample.test")
	out, err := exec.Command("go", "test", "-c", "-o", bin, "./testdata/sample").CombinedOutput()
	if err != nil {
		return "", &buildError{err, string(out)}
	}
	return bin, nil
})

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "build testdata/sample: " + e.err.Error() + "\n" + e.out }

// runSample runs the sample binary as a run's parent with shards
// children, the environment env and arguments args; onLine sees each
// line of output as it comes. It returns the output and the exit code.
func runSample(t *testing.T, shards string, env []string, onLine func(string), args ...string) (string, int) {
	t.Helper()
	bin, err := sampleBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "SAMPLE_PARENT="+shards, "SAMPLE_DIR="+dir), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr // the runner prints to stdout: only the Go runtime's own words come here
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		all.WriteString(sc.Text() + "\n")
		if onLine != nil {
			onLine(sc.Text())
		}
	}
	_ = cmd.Wait() // the exit code is read below
	return all.String(), cmd.ProcessState.ExitCode()
}

// blocks splits -test.v output into top-level tests' blocks (from its
// === RUN to the line before the next test's) and says which tests ran
// in more than one block, as interleaved output would.
func blocks(out string) (ran []string, split []string) {
	seen := map[string]bool{}
	current := ""
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^=== (RUN|CONT|NAME) +([^/ ]+)$`).FindStringSubmatch(line); m != nil && m[2] != current {
			if seen[m[2]] {
				split = append(split, m[2])
			}
			seen[m[2]] = true
			current = m[2]
			if m[1] == "RUN" {
				ran = append(ran, m[2])
			}
		}
	}
	return ran, split
}

func TestRunShards(t *testing.T) {
	tests := []struct {
		name     string
		shards   string
		env      []string
		args     []string
		wantCode int
		want     []string // lines the output must have, each once
		notWant  []string // text the output must not have
		ran      int      // top-level tests that ran
		children int      // distinct processes whose teardown ran
	}{
		{
			name: "tests that must run at once pass", shards: "2",
			args:     []string{"-test.v", "-test.run=^Test(MeetA|MeetB|Sub|Unterminated|Fails|Holds)$"},
			wantCode: 0,
			want:     []string{"--- PASS: TestMeetA (", "--- PASS: TestMeetB (", "--- PASS: TestSub (", "--- PASS: TestFails (", "--- PASS: TestHolds (", "testshard: 6 tests in 2 processes at once", "PASS"},
			notWant:  []string{"FAIL"},
			ran:      6, children: 2,
		},
		{
			name: "every test when none is named (a benchmark is listed, not run)", shards: "2",
			args:     []string{"-test.v"},
			wantCode: 0,
			want:     []string{"testshard: 11 tests in 2 processes at once", "--- PASS: TestAlone (", "PASS"},
			notWant:  []string{"FAIL", "Benchmark", "in one process"},
			ran:      11, children: 2,
		},
		{
			name: "one failure fails the run, the others still run", shards: "3",
			env:      []string{"SAMPLE_FAIL=1"},
			args:     []string{"-test.run=^Test(Fails|Sub|Unterminated)$"},
			wantCode: 1,
			want:     []string{"--- FAIL: TestFails (", "testshard: failed: TestFails", "FAIL"},
			notWant:  []string{"not run", "\nPASS\n"},
			children: 3,
		},
		{
			name: "a process that ends mid-test fails it and the rest run elsewhere", shards: "2",
			env:      []string{"SAMPLE_CRASH=1"},
			args:     []string{"-test.v", "-test.run=^Test(Crash|Sub|Unterminated|Fails|Holds)$"},
			wantCode: 1,
			want:     []string{"sample: ending the process in the middle of a test", "--- PASS: TestSub (", "--- PASS: TestUnterminated (", "--- PASS: TestFails (", "--- PASS: TestHolds (", "testshard: failed: TestCrash", "FAIL"},
			notWant:  []string{"not run"},
			ran:      5, children: 1,
		},
		{
			name: "a set-up that fails in every process fails the run", shards: "2",
			env:      []string{"SAMPLE_SET_UP_FAILS=1"},
			args:     []string{"-test.run=^Test(Sub|Fails|Unterminated)$"},
			wantCode: 1,
			want:     []string{"testshard: not run: TestUnterminated", "testshard: failed: TestFails TestSub", "FAIL"},
			notWant:  []string{"PASS"},
		},
		{
			name: "the run's timeout covers each process's tests together", shards: "2",
			args:     []string{"-test.timeout=2s", "-test.run=^TestSlow[ABC]$"},
			wantCode: 1,
			want:     []string{"panic: test timed out after", "testshard: failed: TestSlowC", "FAIL"},
			children: 1,
		},
		{
			name: "a test that runs alone waits for the others", shards: "2",
			args:     []string{"-test.v", "-test.run=^Test(Alone|SlowA|Sub)$"},
			wantCode: 0,
			want:     []string{"--- PASS: TestAlone (", "--- PASS: TestSlowA (", "testshard: 3 tests in 2 processes at once", "PASS"},
			notWant:  []string{"FAIL"},
			ran:      3, children: 2,
		},
		{
			name: "subtests by pattern run in one process", shards: "2",
			args:     []string{"-test.v", "-test.run=TestSub/one"},
			wantCode: 0,
			want:     []string{"testshard: the tests run in one process: -test.run selects subtests", "--- PASS: TestSub (", "PASS"},
			notWant:  []string{"processes at once", "subtest two"},
			ran:      1, children: 1,
		},
		{
			name: "one shard runs one process", shards: "1",
			args:     []string{"-test.run=^Test(Sub|Fails)$"},
			wantCode: 0,
			want:     []string{"PASS"},
			notWant:  []string{"testshard"},
			children: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runSample(t, tt.shards, tt.env, nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			lines := strings.Split(out, "\n")
			for _, w := range tt.want {
				n := 0
				for _, l := range lines {
					if strings.HasPrefix(l, w) || strings.HasPrefix(w, "--- ") && strings.Contains(l, w) {
						n++ // a test's result may follow a line it left without its end
					}
				}
				if n != 1 {
					t.Errorf("%d lines start with %q, want 1", n, w)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(out, nw) {
					t.Errorf("output has %q", nw)
				}
			}
			if tt.ran > 0 {
				ran, split := blocks(out)
				if len(ran) != tt.ran || len(split) > 0 {
					t.Errorf("ran %v (want %d tests), split over several blocks: %v", ran, tt.ran, split)
				}
			}
			if got := len(regexp.MustCompile(`(?m)^sample: teardown of process \d+$`).FindAllString(out, -1)); got != tt.children {
				t.Errorf("%d processes tore down, want %d", got, tt.children)
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestFailFastStartsNothingAfterAFailure: TestFails fails while TestHolds
// runs in the other process; TestHolds ends only once the failure is in
// the output (recorded before it is printed), and no test starts after.
func TestFailFastStartsNothingAfterAFailure(t *testing.T) {
	var dir string
	onLine := func(line string) {
		if strings.HasPrefix(line, "--- FAIL: TestFails (") {
			if err := os.WriteFile(filepath.Join(dir, "go-on"), nil, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	dir = t.TempDir()
	out, code := runSample(t, "2", []string{"SAMPLE_FAIL=1", "SAMPLE_DIR=" + dir}, onLine,
		"-test.v", "-test.failfast", "-test.run=^Test(Fails|Holds|Sub|Unterminated)$")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, w := range []string{"--- FAIL: TestFails (", "--- PASS: TestHolds (", "testshard: not run: TestSub TestUnterminated"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if strings.Contains(out, "=== RUN   TestSub") || strings.Contains(out, "=== RUN   TestUnterminated") {
		t.Error("a test started after the failure")
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestJSONFraming: under test2json (go test -json), each test's events
// are its own, and the run passes once.
func TestJSONFraming(t *testing.T) {
	bin, err := sampleBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "test2json", "-t", bin, "-test.v=test2json", "-test.run=^Test(MeetA|MeetB|Sub|Fails)$")
	cmd.Env = append(os.Environ(), "SAMPLE_PARENT=2", "SAMPLE_DIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("test2json: %v\n%s", err, out)
	}
	type event struct{ Action, Test, Output string }
	actions := map[string][]string{}
	var last event
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not an event: %q: %v", line, err)
		}
		if e.Action != "output" {
			actions[e.Test] = append(actions[e.Test], e.Action)
		} else if e.Test != "" && strings.Contains(e.Output, "subtest") && !strings.HasPrefix(e.Test, "TestSub") {
			t.Errorf("TestSub's output attributed to %s: %q", e.Test, e.Output)
		}
		last = e
	}
	for _, name := range []string{"TestMeetA", "TestMeetB", "TestSub", "TestSub/one", "TestSub/two", "TestFails"} {
		if got := strings.Join(actions[name], " "); got != "run pass" {
			t.Errorf("%s: events %q, want \"run pass\"", name, got)
		}
	}
	if got := strings.Join(actions[""], " "); got != "start pass" || last.Action != "pass" || last.Test != "" {
		t.Errorf("the run's events %q (last %+v), want \"start pass\", the pass last", got, last)
	}
	if t.Failed() {
		t.Logf("events:\n%s", out)
	}
}
