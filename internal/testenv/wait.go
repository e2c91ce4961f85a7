package testenv

import (
	"testing"
	"time"
)

// pollInterval is how often WaitFor asks its condition again.
const pollInterval = 10 * time.Millisecond

// WaitFor is how tests wait: it polls cond until cond reports true, and
// fails the test when that has not happened within the given time. cond
// returns whether the condition holds and a description of what it saw;
// the failure names what was awaited and the last description, so that a
// timeout says what the test was looking at. A negative check ("no event
// arrived") waits for a positive marker that comes after the thing that
// must not appear, never for a fixed time.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	if ok, seen := Poll(within, cond); !ok {
		t.Fatalf("timed out after %v waiting for %s; last saw: %s", within, what, seen)
	}
}

// Poll is WaitFor's loop for code that has no test to fail, such as a
// TestMain: it polls cond until cond reports true or within has passed,
// and returns cond's last answer.
func Poll(within time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(within)
	for {
		ok, seen := cond()
		if ok || time.Now().After(deadline) {
			return ok, seen
		}
		time.Sleep(pollInterval) // the poll interval: the one sleep of the tests
	}
}
