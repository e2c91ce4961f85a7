package daemon

import (
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/renames"
)

// TestBugInAKernelEventStopsItsSession: a bug of mcpcaged's (a panic)
// dealing with one session's kernel event ends that session (its end
// says internal_error, its stop is asked for) and nothing else, whatever
// else holds the daemon's lock at that moment and whether or not its
// server runs yet. Found by a red-team helper: the session was looked up
// after the panic with TryLock, which failed whenever the lock was busy
// (the server then ran on), and a stop asked for before the server's
// handle existed was lost, or the stop closed a server stdin not yet
// attached and ended the daemon.
func TestBugInAKernelEventStopsItsSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		bug  func(f *kernelFixture)
	}{
		{"alone", func(*kernelFixture) {}},
		{"while another holds the daemon's lock", func(f *kernelFixture) {
			locked, release := make(chan struct{}), make(chan struct{})
			go func() { f.d.mu.Lock(); close(locked); <-release; f.d.mu.Unlock() }()
			<-locked
			t.Cleanup(func() { close(release) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newKernelFixture(t, &config.Server{}, audit.Options{})
			old := beforeSessionEvent
			t.Cleanup(func() { beforeSessionEvent = old })
			beforeSessionEvent = func(*bpf.Event) { tc.bug(f); panic("a bug dealing with a kernel event") }
			f.d.containedKernelEvent(bpf.Event{Cgroup: testCgroup, Kind: bpf.KindExec, Path: "/bin/true"})
			select {
			case <-f.s.policyStop:
			default:
				t.Fatal("the session's stop was not asked for")
			}
			if !f.s.internalEnd.Load() {
				t.Fatal("the session's end does not say internal_error")
			}
		})
	}
}

// TestBugInAFileChangeEndsOnlyItsSession: the checks of file changes
// come in one list for every session; a bug on one session's change ends
// that session and the other changes are still checked (found by a
// red-team helper: the panic dropped the others and ended whichever
// session's goroutine had read them).
func TestBugInAFileChangeEndsOnlyItsSession(t *testing.T) {
	f := newKernelFixture(t, &config.Server{}, audit.Options{})
	other := newKernelFixture(t, &config.Server{}, audit.Options{}).s
	f.d.byCgroup[testCgroup+1] = other
	other.log = nil // dealing with its change panics: a bug
	f.d.onFsChanges([]renames.Change{
		{Session: testCgroup + 1, Op: renames.OpFlood},
		{Session: testCgroup, Op: renames.OpFlood},
	})
	if !other.internalEnd.Load() {
		t.Fatal("the session whose change hit the bug does not end saying internal_error")
	}
	if f.s.killedBy.Load() == nil {
		t.Fatal("the other session's change was not checked after the bug")
	}
}
