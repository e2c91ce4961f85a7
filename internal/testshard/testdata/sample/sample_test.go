package sample

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testshard"
)

// The environment the tests read.
const (
	parentEnv = "SAMPLE_PARENT"       // "N": this process is the run's parent, with N shards
	dirEnv    = "SAMPLE_DIR"          // where the tests leave and look for files
	failEnv   = "SAMPLE_FAIL"         // "1": TestFails fails
	crashEnv  = "SAMPLE_CRASH"        // "1": TestCrash ends its process
	setupEnv  = "SAMPLE_SET_UP_FAILS" // "1": a child's TestMain ends before its tests
)

func TestMain(m *testing.M) {
	if n := os.Getenv(parentEnv); n != "" {
		_ = os.Unsetenv(parentEnv)
		shards, _ := strconv.Atoi(n)
		self, err := os.Executable()
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		os.Exit(testshard.Run(self, os.Args[1:], testshard.Options{
			Shards: shards, First: []string{"TestFails", "TestCrash", "TestMeetA", "TestMeetB", "TestSlowA", "TestSlowB", "TestNotATestOfThisBinary"}, Env: os.Environ(),
			Alone: []string{"TestAlone"},
		}))
	}
	listing := slices.ContainsFunc(os.Args, func(a string) bool { return strings.HasPrefix(a, "-test.list") })
	if os.Getenv(setupEnv) == "1" && !listing {
		fmt.Println("sample: the set-up failed")
		os.Exit(4)
	}
	code := testshard.Serve(m)
	fmt.Printf("sample: teardown of process %d\n", os.Getpid())
	os.Exit(code)
}

// file is a path in the tests' directory.
func file(name string) string { return filepath.Join(os.Getenv(dirEnv), name) }

// touch creates a file in the tests' directory.
func touch(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(file(name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// await waits up to 20 s for a file in the tests' directory.
func await(t *testing.T, name string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(file(name)); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within 20s", name)
}

// TestMeetA and TestMeetB each wait for the other: they pass only when
// they run at the same time.
func TestMeetA(t *testing.T) {
	touch(t, "a")
	await(t, "b")
	t.Logf("process %d", os.Getpid())
}

func TestMeetB(t *testing.T) {
	touch(t, "b")
	await(t, "a")
	t.Logf("process %d", os.Getpid())
}

func TestFails(t *testing.T) {
	if os.Getenv(failEnv) == "1" {
		t.Error("told to fail")
	}
}

// TestHolds runs until the file "go-on" appears (created by whoever
// reads the run's output).
func TestHolds(t *testing.T) {
	if os.Getenv(failEnv) == "1" {
		await(t, "go-on")
	}
}

func TestCrash(t *testing.T) {
	if os.Getenv(crashEnv) == "1" {
		fmt.Println("sample: ending the process in the middle of a test")
		os.Exit(3)
	}
}

func TestSub(t *testing.T) {
	for _, name := range []string{"one", "two"} {
		t.Run(name, func(t *testing.T) { t.Logf("subtest %s", name) })
	}
}

func TestUnterminated(t *testing.T) {
	fmt.Print("sample: a line without its end")
}

// BenchmarkNothing is listed by -test.list, as the integration tests'
// benchmark is, and runs only with -test.bench.
func BenchmarkNothing(b *testing.B) {
	for b.Loop() {
	}
}

// TestSlowA, B and C each take 1.2 s: a run whose -test.timeout covers
// two of them but not three in one process.
// Each leaves a file while it runs.
func TestSlowA(t *testing.T) { slow(t, "A") }
func TestSlowB(t *testing.T) { slow(t, "B") }
func TestSlowC(t *testing.T) { slow(t, "C") }

func slow(t *testing.T, name string) {
	touch(t, "slow-running-"+name)
	defer func() { _ = os.Remove(file("slow-running-" + name)) }()
	takes(1200 * time.Millisecond)
}

// TestAlone runs alone (Options.Alone): no slow test runs while it does.
func TestAlone(t *testing.T) {
	for range 2 {
		if running, _ := filepath.Glob(file("slow-running-*")); len(running) > 0 {
			t.Fatalf("running beside %v", running)
		}
		takes(300 * time.Millisecond)
	}
}

// takes stands for a test's work of duration d.
func takes(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Until(end))
	}
}
