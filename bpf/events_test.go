package bpf

import (
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A session's last events are submitted without a wakeup; Sync must hand
// every one of them to the callback before it returns, long before the
// reader's next poll.
func TestSyncDeliversEverySubmittedEvent(t *testing.T) {
	c, parent := loadForTest(t)
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{}})
	var mu sync.Mutex
	opens := 0
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind == KindFileOpen && e.Path == "/etc/hostname" {
			mu.Lock()
			opens++
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 5; round++ {
		const n = 40
		child(t, "open", n, session, "")
		if err := c.Sync(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := opens
		mu.Unlock()
		if got != round*n {
			t.Fatalf("round %d: %d open events delivered by Sync, want %d", round, got, round*n)
		}
	}
}

// A denied open kills the opener even when its event cannot be recorded:
// the session's event budget is spent, or the ring buffer is full (no
// reader). The deny check never depends on the event.
func TestDenyHoldsWhenEventsAreLost(t *testing.T) {
	secret := deniedFile(t)
	tests := []struct {
		name      string
		opens     int  // before the denied one
		reader    bool // an Events reader drains the ring
		wantLost  func(ringbuf, throttled uint64) bool
		lostDescr string
	}{
		{"event budget spent", 30000, true, func(rb, th uint64) bool { return th > 0 }, "throttled events"},
		{"ring buffer full", 400000, false, func(rb, th uint64) bool { return rb > 0 }, "failed ring-buffer reservations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, parent := loadForTest(t)
			session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
			if tt.reader {
				if err := c.Events(func(Event) {}, func(err error) { t.Error(err) }); err != nil {
					t.Fatal(err)
				}
			}
			err := openThen(t, session, tt.opens, secret)
			var ee *exec.ExitError
			errors.As(err, &ee)
			var ws syscall.WaitStatus
			if ee != nil {
				ws, _ = ee.Sys().(syscall.WaitStatus)
			}
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the opener of a denied path was not killed: %v", err)
			}
			if rb, th, err := c.Lost(); err != nil || !tt.wantLost(rb, th) {
				t.Fatalf("lost counters ringbuf=%d throttled=%d (%v): want %s", rb, th, err, tt.lostDescr)
			}
		})
	}
}
