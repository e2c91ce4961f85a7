package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	n := 0
	ok, seen := Poll(10*time.Second, func() (bool, string) { n++; return n == 3, fmt.Sprint(n) })
	if !ok || seen != "3" {
		t.Fatalf("Poll = %v %q, want true after three asks", ok, seen)
	}
	start := time.Now()
	ok, seen = Poll(50*time.Millisecond, func() (bool, string) { return false, "never" })
	if ok || seen != "never" || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Poll of a false condition = %v %q after %v", ok, seen, time.Since(start))
	}
}

// recorder is a testing.TB that records Fatalf instead of failing.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestWaitForReportsWhatItLastSaw(t *testing.T) {
	r := &recorder{TB: t}
	WaitFor(r, "the moon", 30*time.Millisecond, func() (bool, string) { return false, "clouds" })
	if !strings.Contains(r.msg, "the moon") || !strings.Contains(r.msg, "clouds") {
		t.Fatalf("failure message %q names neither the wait nor what was seen", r.msg)
	}
	r.msg = ""
	WaitFor(r, "the sun", time.Second, func() (bool, string) { return true, "" })
	if r.msg != "" {
		t.Fatalf("a condition that holds failed: %q", r.msg)
	}
}
