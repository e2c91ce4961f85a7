package bpf

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
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
		if e.Cgroup == cgid && e.Kind == KindFileOpen && e.Hint == missingPath {
			mu.Lock()
			opens++
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 5; round++ {
		const n = 40
		child(t, "open", n, session, missingPath) // failed opens: never folded
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
	tests := []lostEventsCase{
		{"event budget spent", 30000, true, func(rb, th uint64) bool { return th > 0 }, "throttled events"},
		{"ring buffer full", 400000, false, func(rb, th uint64) bool { return rb > 0 }, "failed ring-buffer reservations"},
	}
	for _, rp := range readPaths {
		for _, tt := range tests {
			t.Run(rp.name+"/"+tt.name, func(t *testing.T) { denyHoldsWhenEventsAreLost(t, rp.opts, secret, tt) })
		}
	}
}

// lostEventsCase is a way of losing events before a denied open.
type lostEventsCase struct {
	name      string
	opens     int  // before the denied one
	reader    bool // an Events reader drains the ring
	wantLost  func(ringbuf, throttled uint64) bool
	lostDescr string
}

func denyHoldsWhenEventsAreLost(t *testing.T, o Options, secret string, tt lostEventsCase) {
	c, parent := loadWith(t, o)
	session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	if tt.reader {
		if err := c.Events(func(Event) {}, func(err error) { t.Error(err) }); err != nil {
			t.Fatal(err)
		}
	}
	err := openThen(t, session, tt.opens, missingPath, secret)
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
}

// Repeated opens of one file by a session are folded: the first is an
// event, the next ones within a second are counted (OpensFolded, and the
// file's next event's Repeats), never dropped from the count, and each
// one is still deny-checked: a file whose path became denied after it was
// recorded (its directory renamed) kills the opener at once. An open that
// truncates is never folded (the open file keeps no O_TRUNC).
func TestRepeatedOpensFold(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) { repeatedOpensFold(t, rp.opts) })
	}
}

func repeatedOpensFold(t *testing.T, o Options) {
	c, parent := loadWith(t, o)
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	var mu sync.Mutex
	events := map[string]int{} // kernel path: events
	repeats, truncs := 0, 0
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind == KindFileOpen {
			mu.Lock()
			events[e.Path]++
			repeats += int(e.Repeats)
			if e.Flags&syscall.O_TRUNC != 0 {
				truncs++
			}
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "keys", "f")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	if err := openThen(t, session, n, file, "/"); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	folded, err := c.OpensFolded(cgid)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got, rep := events[file], repeats
	mu.Unlock()
	// One event a second at most (the opens take a few ms; 5 allows for
	// a loaded machine); every other open counted (the folded total also
	// counts repeats of the test binary's own start-up files).
	if got < 1 || got > 5 || got+int(folded) < n {
		t.Fatalf("%d opens: %d events + %d folded, want 1 to 5 events and the rest folded", n, got, folded)
	}
	t.Logf("%d opens of %s: %d event(s) (carrying %d repeats), %d folded in the session", n, file, got, rep, folded)
	if rep > int(folded) {
		t.Fatalf("events carry %d repeats, more than the %d folded", rep, folded)
	}
	// A repeat that truncates the file is recorded, though once open it
	// has the flags and mode of the plain opens before it.
	if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-then-trunc", "MCPCAGE_BENCH_N=500", "MCPCAGE_BENCH_ADDR="+file); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got = truncs
	mu.Unlock()
	if got != 1 {
		t.Fatalf("%d records of the open with O_TRUNC after 500 plain opens of %s, want 1", got, file)
	}
	// The same dentry, now under a denied name: the repeat is checked.
	renamed := filepath.Join(dir, ".ssh")
	if err := os.Rename(filepath.Dir(file), renamed); err != nil {
		t.Fatal(err)
	}
	err = openThen(t, session, 0, "", filepath.Join(renamed, "f"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("opening a recorded file after its directory became %s: %v, want SIGKILL", renamed, err)
	}
}

// A rename's names are checked by the daemon alone, so its event is made
// whatever the session's budget, from the ring's reserve that other
// events leave it, within the session's share of the ring; one beyond
// the share (or that the ring buffer cannot take) fails closed: the
// renamer is killed, the session marked (Unchecked), and every later
// opener in it killed until the daemon ends the session.
func TestRenamesAreAlwaysReported(t *testing.T) {
	t.Run("over the budget", func(t *testing.T) {
		c, parent := loadForTest(t)
		session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
		var mu sync.Mutex
		var renames []Event
		if err := c.Events(func(e Event) {
			if e.Cgroup == cgid && e.Kind == KindRename {
				mu.Lock()
				renames = append(renames, e)
				mu.Unlock()
			}
		}, func(err error) { t.Error(err) }); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-then-rename", "MCPCAGE_BENCH_N=30000", "MCPCAGE_BENCH_ADDR="+missingPath, "MCPCAGE_BENCH_PATH="+file); err != nil {
			t.Fatal(err)
		}
		if err := c.Sync(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		if _, th, err := c.Lost(); err != nil || th == 0 {
			t.Fatalf("throttled %d (%v): the opens did not spend the budget", th, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(renames) != 1 || renames[0].Hint != file || renames[0].NewHint != file+".moved" {
			t.Fatalf("rename events %v, want the one rename of %s", renames, file)
		}
	})
	t.Run("ring full of other events", func(t *testing.T) {
		c, parent := loadForTest(t)
		session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		// No reader: the failed opens fill the ring but for its reserve,
		// where the rename finds room (at 0ebd4ee the renamer was killed:
		// another session's flood of opens could get it done).
		if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-then-rename", "MCPCAGE_BENCH_N=400000", "MCPCAGE_BENCH_ADDR="+missingPath, "MCPCAGE_BENCH_PATH="+file); err != nil {
			t.Fatalf("the renamer after a ring's worth of opens: %v, want it to live (its event in the reserve)", err)
		}
		if rb, _, err := c.Lost(); err != nil || rb == 0 {
			t.Fatalf("ring buffer reservations failed %d (%v): the opens did not fill the ring", rb, err)
		}
		renames := readRenames(t, c)
		if len(renames) != 1 || renames[0].Hint != file {
			t.Fatalf("rename events %v, want the one rename of %s", renames, file)
		}
	})
	t.Run("over its share of the ring", func(t *testing.T) {
		c, parent := loadForTest(t)
		if !c.FairShare() {
			t.Fatal("the call slots are not mapped: no share of the ring to test")
		}
		session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
		other, otherID := namedSessionForTest(t, c, parent, "s2", Policy{DenyComponents: map[string]int{".ssh": 0}})
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		// No reader: the renames fill the ring until its reserve runs
		// low, and then, over the session's share, one finds no room.
		// Before the share (at 0ebd4ee) they filled the whole ring, and
		// another session's next rename killed that session as
		// unreportable.
		err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=renames", "MCPCAGE_BENCH_N=40000", "MCPCAGE_BENCH_PATH="+file)
		if !killed(t, err) {
			t.Fatalf("the renamer over its share: %v, want killed (SIGKILL)", err)
		}
		if rb, _, err := c.Lost(); err != nil || rb == 0 {
			t.Fatalf("ring buffer reservations failed %d (%v): the share was not spent", rb, err)
		}
		if unchecked, err := c.Unchecked(cgid); err != nil || !unchecked {
			t.Fatalf("Unchecked = %v (%v), want the session marked", unchecked, err)
		}
		// Any later successful open in the session kills its caller.
		if err := openThen(t, session, 0, "", "/etc/hostname"); !killed(t, err) {
			t.Fatalf("an open in the marked session: %v, want the opener killed (SIGKILL)", err)
		}
		// The other session's renames find room, still without a reader.
		otherFile := filepath.Join(t.TempDir(), "g")
		if err := os.WriteFile(otherFile, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := runChildIn(t, other, "MCPCAGE_BENCH_LOOP=renames", "MCPCAGE_BENCH_N=100", "MCPCAGE_BENCH_PATH="+otherFile); err != nil {
			t.Fatalf("another session's renames: %v, want them done", err)
		}
		if unchecked, err := c.Unchecked(otherID); err != nil || unchecked {
			t.Fatalf("the other session: Unchecked = %v (%v), want it unmarked", unchecked, err)
		}
		// Read, the session's urgent events give its share back.
		counts := map[uint64]int{}
		for _, e := range readRenames(t, c) {
			counts[e.Cgroup]++
		}
		// As many as fit below URGENT_CONTESTED (8 MiB - 2 MiB), a few
		// less for the session's other events (its exec, its opens).
		contested := (eventsBytes - eventsReserve/2) / eventRecordSize
		if counts[cgid] < contested-64 || counts[cgid] > contested+1 || counts[otherID] != 100 {
			t.Fatalf("rename events: %d of the flooding session, %d of the other; want about %d (the ring but for half its reserve) and 100",
				counts[cgid], counts[otherID], contested)
		}
		if put, read := c.slots.share(otherID); put != 100 || read != 100 {
			t.Fatalf("the other session's share: %d put, %d read; want 100 and 100", put, read)
		}
	})
}

// A change by name carries the call's directory descriptors and the
// kernel's path of the first, absolute name or not: a rename's new name
// is relative to the second (before, the daemon joined it to the first,
// and to none when the first name was absolute).
func TestChangesCarryTheirDirectoryDescriptors(t *testing.T) {
	c, parent := loadForTest(t)
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	changes := collectChanges(t, c, cgid)
	// A short name: the event's components are cut at 47 bytes.
	dir, err := os.MkdirTemp("", "fds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=renameat", "MCPCAGE_BENCH_N=1", "MCPCAGE_BENCH_PATH="+dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	got := changes.events()
	want := []struct {
		kind            Kind
		dir, hint, new  string
		dirfd, newDirfd int32
	}{
		{KindRename, filepath.Join(dir, "a"), "f", "g", 100, 101},
		{KindMkdir, dir, "c", "", unix.AT_FDCWD, unix.AT_FDCWD},
		// An absolute first name: the kernel's path is still that of
		// the working directory, where the new name is.
		{KindRename, dir, filepath.Join(dir, "b/g"), "h", unix.AT_FDCWD, unix.AT_FDCWD},
	}
	if len(got) != len(want) {
		t.Fatalf("change events %+v, want %d", got, len(want))
	}
	for i, w := range want {
		e := got[i]
		if e.Kind != w.kind || e.Dir != w.dir || e.DirCut || e.Hint != w.hint || e.NewHint != w.new || e.Dirfd != w.dirfd || e.NewDirfd != w.newDirfd {
			t.Errorf("event %d: %v in %q (cut %v): %q -> %q, descriptors %d and %d; want %v in %q (whole): %q -> %q, descriptors %d and %d",
				i, e.Kind, e.Dir, e.DirCut, e.Hint, e.NewHint, e.Dirfd, e.NewDirfd, w.kind, w.dir, w.hint, w.new, w.dirfd, w.newDirfd)
		}
	}
}

// changeEvents are the change events (Kind.Changes) of one session, as
// c's reader hands them over (collectChanges).
type changeEvents struct {
	mu  sync.Mutex
	got []Event
}

// collectChanges starts c's reader, keeping the change events of session
// cgid.
func collectChanges(t *testing.T, c *Cage, cgid uint64) *changeEvents {
	t.Helper()
	ce := &changeEvents{}
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind.Changes() {
			ce.mu.Lock()
			ce.got = append(ce.got, e)
			ce.mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	return ce
}

// events returns the events kept so far.
func (ce *changeEvents) events() []Event {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	return slices.Clone(ce.got)
}

// reset forgets the events kept so far.
func (ce *changeEvents) reset() {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	ce.got = nil
}

// readRenames starts c's reader and returns the rename events in the
// ring, once it is read through.
func readRenames(t *testing.T, c *Cage) []Event {
	t.Helper()
	var mu sync.Mutex
	var renames []Event
	if err := c.Events(func(e Event) {
		if e.Kind == KindRename {
			mu.Lock()
			renames = append(renames, e)
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(renames)
}

// changesForTest makes the files of the loop open-then-changes in a new
// directory: it unlinks plain, abcd (as long as ".ssh") and sub/f,
// chmods g (0600), lchowns h and truncates g.
func changesForTest(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"plain", "abcd", "sub/f", "g", "h"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Changes by name are reported with their kind, mode and AT_* flags;
// over the session's budget, only those whose name could lead into a
// denied directory beyond the base directory the kernel checked (a '/',
// a component as long as a denied one, a call that follows a symlink in
// its last name), marked OverBudget for the daemon to check unrecorded;
// and in a session whose changes fanotify watches, only a truncate.
func TestChangesByName(t *testing.T) {
	type change struct {
		kind    Kind
		hint    string
		flags   uint32
		atFlags uint32
	}
	all := []change{
		{KindUnlink, "plain", 0, 0}, {KindUnlink, "abcd", 0, 0}, {KindUnlink, "sub/f", 0, 0},
		{KindChmod, "g", 0o600, 0}, {KindChown, "h", AtSymlinkNofollow, AtSymlinkNofollow}, {KindTruncate, "g", 0, 0},
	}
	tests := []struct {
		name    string
		opens   int  // failed opens first (at least one): over 2000 spend the budget
		watched bool // Policy.ChangesWatched: fanotify sees deletions and attribute changes
		want    []change
		over    bool
	}{
		{"within the budget: all", 1, false, all, false},
		{"over the budget: those the daemon must check", 30000, false, []change{all[1], all[2], all[3], all[5]}, true},
		{"over the budget, changes watched: the truncate", 30000, true, []change{all[5]}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, parent := loadForTest(t)
			session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}, ChangesWatched: tt.watched})
			changes := collectChanges(t, c, cgid)
			var dir string
			// Over the budget, the loop spends a fresh window (2001 opens)
			// before each change; on a loaded machine those opens can
			// outlast the window (100 ms), and the change falls in the
			// next one, within its budget: such a run says nothing of
			// what is reported over the budget, and is run again.
			var got []Event
			for attempt := 1; ; attempt++ {
				changes.reset()
				dir = changesForTest(t)
				if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-then-changes", fmt.Sprintf("MCPCAGE_BENCH_N=%d", tt.opens),
					"MCPCAGE_BENCH_ADDR="+missingPath, "MCPCAGE_BENCH_PATH="+dir); err != nil {
					t.Fatal(err)
				}
				if err := c.Sync(2 * time.Second); err != nil {
					t.Fatal(err)
				}
				got = changes.events()
				if !tt.over || !slices.ContainsFunc(got, func(e Event) bool { return !e.OverBudget }) {
					break
				}
				if attempt == 5 {
					t.Fatalf("in 5 runs, a change always fell in a new budget window (the machine too slow for 2001 opens in 100 ms)")
				}
				t.Logf("run %d: a change fell in a new budget window; again", attempt)
			}
			var reported []change
			for _, e := range got {
				// (The event's components are cut to 47 bytes: t.TempDir's
				// own is longer.)
				if e.OverBudget != tt.over || e.Result != 0 || filepath.Base(e.Dir) != filepath.Base(dir) {
					t.Errorf("%s %q: over budget %v, result %d, dir %q; want %v, 0, .../%s", e.Kind, e.Hint, e.OverBudget, e.Result, e.Dir,
						tt.over, filepath.Base(dir))
				}
				reported = append(reported, change{e.Kind, e.Hint, e.Flags, e.AtFlags})
			}
			if diff := cmp.Diff(tt.want, reported, cmp.AllowUnexported(change{})); diff != "" {
				t.Fatalf("changes reported (-want +got):\n%s", diff)
			}
		})
	}
}

// pathMayBeCut: a walk stopped short of the root, or a component as long
// as the event keeps (it may have been longer); the bytes after a shorter
// component's NUL are left from earlier events, and do not count.
func TestPathMayBeCut(t *testing.T) {
	long := strings.Repeat("n", ComponentCut)
	tests := []struct {
		name  string
		comps []string // leaf first
		cut   bool     // PATH_CUT
		want  bool
	}{
		{"whole", []string{"f", "work"}, false, false},
		{"the root", nil, false, false},
		{"stopped short", []string{"f", "d"}, true, true},
		{"no component walked", nil, true, true},
		{"a component as long as kept", []string{"f", long, "work"}, false, true},
		{"one byte shorter", []string{"f", long[1:], "work"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e cageEvent
			for i := range e.Comp {
				for j := range e.Comp[i] {
					e.Comp[i][j] = 'x' // what an earlier event left
				}
			}
			for i, c := range tt.comps {
				for j := 0; j < len(c); j++ {
					e.Comp[i][j] = int8(c[j])
				}
				e.Comp[i][len(c)] = 0
			}
			e.Ncomp = uint8(len(tt.comps))
			if tt.cut {
				e.Ncomp |= pathCut
			}
			if got := pathMayBeCut(&e); got != tt.want {
				t.Errorf("pathMayBeCut(%q, cut %v) = %v, want %v (path %q)", tt.comps, tt.cut, got, tt.want, kernelPath(&e))
			}
		})
	}
}
