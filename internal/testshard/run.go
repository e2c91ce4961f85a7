package testshard

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Options says how [Run] runs a test binary.
type Options struct {
	// Shards is how many children run tests at once; 1 or less runs one
	// child with every test, as without sharding.
	Shards int
	// First names tests to hand out before the others, in this order:
	// the longest ones. Names that are not tests of the binary are
	// ignored.
	First []string
	// Alone names tests that run with no other test at once, after the
	// others: tests whose outcome depends on the machine being otherwise
	// idle. Names that are not tests of the binary are ignored.
	Alone []string
	// Env is the children's environment; this process's when nil.
	Env []string
	// Stdout receives the tests' output (the children's stdout and
	// stderr); os.Stdout when nil.
	Stdout io.Writer
	// Prepare, when set, is called on each child's command before it
	// starts (for its SysProcAttr). Run starts every child from one
	// locked OS thread, so a parent-death signal follows Run's caller.
	Prepare func(*exec.Cmd)
}

// drainAfterExit bounds how long a child's output is read after it
// exited: a process it left behind may hold the pipe open.
const drainAfterExit = time.Second

// Run runs the test binary self with args as o says, and returns the
// exit code for the calling process: 0 when every selected test passed
// and every child exited with 0.
func Run(self string, args []string, o Options) int {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	runtime.LockOSThread() // a child's Pdeathsig follows the thread that started it
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	defer signal.Stop(signals)

	parsed, err := parseArgs(args)
	if err != nil {
		return runOne(self, args, o, signals) // package testing says what is wrong
	}
	names, why := shardable(self, args, parsed, o)
	if why != "" {
		if o.Shards > 1 && why != fewerThanTwo {
			_, _ = fmt.Fprintf(o.Stdout, "testshard: the tests run in one process: %s\n", why)
		}
		return runOne(self, args, o, signals)
	}
	return runShards(self, args, parsed, names, o, signals)
}

// shardable lists the tests Run is to hand out, or says why the run
// stays in one child.
func shardable(self string, args []string, parsed parsedArgs, o Options) ([]string, string) {
	if o.Shards <= 1 {
		return nil, "one shard"
	}
	if why := parsed.oneChild(); why != "" {
		return nil, why
	}
	pattern := parsed.flags[flagRun]
	if pattern == "" {
		pattern = "."
	}
	cmd := exec.Command(self, append(slices.Clone(args), "-test.list="+pattern)...)
	cmd.Env = o.Env // nil: this process's
	cmd.Stderr = o.Stdout
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Sprintf("listing the tests: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		n := strings.TrimSpace(line)
		switch {
		case !listed.MatchString(n):
			// TestMain's own output
		case strings.HasPrefix(n, "Benchmark"):
			// run only with -test.bench, which stays in one process
		case !strings.HasPrefix(n, "Test"):
			return nil, "it selects " + n + ", which is not a test"
		default:
			names = append(names, n)
		}
	}
	if len(names) < 2 {
		return nil, fewerThanTwo
	}
	return order(names, o.First), ""
}

// listed matches what -test.list prints: the names of tests,
// benchmarks, fuzz targets and examples.
var listed = regexp.MustCompile(`^(Test|Benchmark|Fuzz|Example)[\pL\pN_]*$`)

// fewerThanTwo: a run of one test (or none) has nothing to share out.
const fewerThanTwo = "fewer than two tests"

// order puts the tests named in first (those that are tests) ahead of
// the others, which keep their order.
func order(names, first []string) []string {
	out := make([]string, 0, len(names))
	for _, f := range first {
		if slices.Contains(names, f) && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// runOne runs every selected test in one child, its output passed
// through.
func runOne(self string, args []string, o Options, signals <-chan os.Signal) int {
	cmd := exec.Command(self, args...)
	cmd.Env = o.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, o.Stdout, o.Stdout
	if o.Prepare != nil {
		o.Prepare(cmd)
	}
	if err := cmd.Start(); err != nil {
		_, _ = fmt.Fprintf(o.Stdout, "testshard: start the tests' process: %v\n", err)
		return 1
	}
	stop := forward(signals, []*exec.Cmd{cmd})
	defer stop()
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	_, _ = fmt.Fprintf(o.Stdout, "testshard: the tests' process: %v\n", err)
	return 1
}

// forward passes the signals Run receives on to the children until the
// returned function is called.
func forward(signals <-chan os.Signal, cmds []*exec.Cmd) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-signals:
				for _, c := range cmds {
					_ = c.Process.Signal(sig) // one that exited needs none
				}
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// newToken returns the word a child's reports start with: random, so no
// test's output is read as one.
func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return "testshard-" + hex.EncodeToString(b)
}
