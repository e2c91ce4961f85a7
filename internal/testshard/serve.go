package testshard

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv marks a child started by Run. Its token (the word its reports
// start with) comes first on its tasks, not in its environment, which a
// test may print (/proc/self/environ keeps what Unsetenv removed).
const childEnv = "MCPCAGE_TESTSHARD_CHILD"

// tasksFD is the descriptor a child reads its token and then its tests'
// names from, one per line; the parent closes it when there are no more.
const tasksFD = 3

// Serve runs m's tests: in a child started by [Run], the tests the
// parent hands it, one m.Run each; otherwise m.Run once. It returns the
// exit code for the process: 0 when every test passed.
//
// A child keeps the run's -test.timeout for all its tests together, as
// one process would: each m.Run is given what is left of it, so a test
// still running when the run's time is up panics with every goroutine's
// stack (package testing's alarm), before go test kills the run.
func Serve(m *testing.M) int {
	if os.Getenv(childEnv) == "" {
		return m.Run()
	}
	start := time.Now()
	// Neither the tests' own processes nor their children are children
	// of the run: they inherit neither the mark nor the tasks.
	_ = os.Unsetenv(childEnv) // a valid name: cannot fail
	syscall.CloseOnExec(tasksFD)
	tasks := bufio.NewReader(os.NewFile(tasksFD, "testshard tasks"))
	token, err := tasks.ReadString('\n')
	token = strings.TrimSpace(token)
	if err != nil || token == "" {
		fmt.Fprintf(os.Stderr, "testshard: no token from the parent on descriptor %d: %v\n", tasksFD, err)
		return 2
	}
	flag.Parse() // before -test.run is set: m.Run would parse again and undo it
	timeout := runTimeout()
	code := 0
	for {
		line, err := tasks.ReadString('\n')
		name := strings.TrimSpace(line)
		if name == "" {
			if err != nil {
				return code // no more tests
			}
			continue
		}
		c := 1
		left := timeout - time.Since(start)
		switch {
		case timeout > 0 && left <= 0:
			fmt.Printf("%s--- FAIL: %s (0.00s)\n    testshard: not started: the run's -test.timeout of %v was up\n", framing(), name, timeout)
		default:
			if err := setFlags(name, timeout, left); err != nil {
				fmt.Fprintf(os.Stderr, "testshard: %v\n", err)
				return 2
			}
			c = m.Run()
		}
		fmt.Printf("%s %d\n", token, c)
		code = max(code, c)
		if c != 0 && raceEnabled {
			// The race detector's count is the process's: every later
			// m.Run here would fail for this test's race. The parent hands
			// the other tests to the other children.
			return code
		}
	}
}

// setFlags selects name alone and gives it what is left of the run's
// timeout (none when the run has none).
func setFlags(name string, timeout, left time.Duration) error {
	if err := flag.Set("test.run", "^"+regexp.QuoteMeta(name)+"$"); err != nil {
		return fmt.Errorf("select %s: %w", name, err)
	}
	if timeout > 0 {
		if err := flag.Set("test.timeout", left.String()); err != nil {
			return fmt.Errorf("set the time left for %s: %w", name, err)
		}
	}
	return nil
}

// runTimeout is -test.timeout as given (0: none).
func runTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if d, ok := g.Get().(time.Duration); ok {
			return d
		}
	}
	return 0
}

// framing is the marker byte test2json's framing puts before the
// framework's lines (-test.v=test2json), or "".
func framing() string {
	if f := flag.Lookup("test.v"); f != nil && f.Value.String() == "test2json" {
		return "\x16"
	}
	return ""
}
