package bpf

import (
	"sync"
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
