package renames

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func open(t *testing.T) *Watcher {
	t.Helper()
	testenv.RequireRoot(t)
	w, err := Open(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// watched is a watcher of a new temporary directory's file system.
func watched(t *testing.T) (*Watcher, string) {
	t.Helper()
	w := open(t)
	dir := t.TempDir()
	release, err := w.Watch(dir)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(release)
	return w, dir
}

// claim claims tid's moves, failing the test on an error.
func claim(t *testing.T, w *Watcher, tid uint32) []Move {
	t.Helper()
	moves, err := w.Claim(tid, time.Time{}, 0)
	if err != nil {
		t.Fatalf("Claim(%d): %v", tid, err)
	}
	return moves
}

// renameOnThisThread renames from to to on a thread of its own and
// returns that thread's id.
func renameOnThisThread(t *testing.T, from, to string, after func()) uint32 {
	t.Helper()
	return onThread(t, func() error {
		err := os.Rename(from, to)
		if err == nil && after != nil {
			after()
		}
		return err
	})
}

// TestClaimSeesThroughARemovedSymlink: the move is where the kernel took
// the file from (the real directory), though the name the caller used
// went through a symlink removed at once after the call.
func TestClaimSeesThroughARemovedSymlink(t *testing.T) {
	w, dir := watched(t)
	secret := filepath.Join(dir, "deep", ".ssh")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secret, "id_ed25519"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	lnk := filepath.Join(dir, "lnk")
	if err := os.Symlink(secret, lnk); err != nil {
		t.Fatal(err)
	}
	tid := renameOnThisThread(t, filepath.Join(lnk, "id_ed25519"), filepath.Join(dir, "loot"), func() { _ = os.Remove(lnk) })
	if other, _ := w.Claim(tid+1_000_000, time.Time{}, 0); len(other) != 0 {
		t.Fatalf("another thread's claim got %+v", other)
	}
	moves, err := w.Claim(tid, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(moves) != 1 {
		t.Fatalf("Claim(%d) = %+v, want one move", tid, moves)
	}
	real, _ := filepath.EvalSymlinks(secret)
	top, _ := filepath.EvalSymlinks(dir)
	want := Move{Tid: tid, From: filepath.Join(real, "id_ed25519"), To: filepath.Join(top, "loot")}
	if m := moves[0]; m.Tid != want.Tid || m.From != want.From || m.To != want.To {
		t.Fatalf("move %+v, want %+v", m, want)
	}
	if again, _ := w.Claim(tid, time.Time{}, 0); len(again) != 0 {
		t.Fatalf("a claimed move came back: %+v", again)
	}
}

// A move is claimed only for the session whose thread made it, as the
// kernel's changers map says when the move is read: thread ids are
// reused, and a claim by another session's thread with the same id (its
// own thread gone, the claim late) must not take it.
func TestClaimLeavesOutAnotherSessionsMoves(t *testing.T) {
	w, dir := watched(t)
	var owners sync.Map // tid -> session
	w.CheckChanges(func(tid uint32) (uint64, bool) {
		s, ok := owners.Load(tid)
		if !ok {
			return 0, false
		}
		return s.(uint64), true
	}, func([]Change) {})
	for i, tt := range []struct {
		owner, claimer uint64
		want           int
	}{
		{owner: 7, claimer: 8, want: 0},
		{owner: 7, claimer: 7, want: 1},
		{owner: 7, claimer: 0, want: 1}, // no session given: by thread id alone
	} {
		from, to := filepath.Join(dir, fmt.Sprintf("a%d", i)), filepath.Join(dir, fmt.Sprintf("b%d", i))
		if err := os.WriteFile(from, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		tid := renameOnThisThread(t, from, to, nil)
		owners.Store(tid, tt.owner)
		moves, err := w.Claim(tid, time.Time{}, tt.claimer)
		if err != nil {
			t.Fatal(err)
		}
		if len(moves) != tt.want {
			t.Fatalf("a move of session %d claimed for %d: %+v, want %d move(s)", tt.owner, tt.claimer, moves, tt.want)
		}
	}
}

// TestRelease: marks are counted; after the last release the file
// system's renames are no longer reported.
func TestRelease(t *testing.T) {
	w := open(t)
	dir := t.TempDir()
	r1, err := w.Watch(dir)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := w.Watch(filepath.Join(dir, "."))
	if err != nil {
		t.Fatal(err)
	}
	if n := w.Watching(); n != 1 {
		t.Fatalf("watching %d file systems, want 1", n)
	}
	r1()
	r1() // once only
	if n := w.Watching(); n != 1 {
		t.Fatalf("after one release: %d, want 1", n)
	}
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if tid := renameOnThisThread(t, a, b, nil); len(claim(t, w, tid)) != 1 {
		t.Fatal("a rename while watched was not reported")
	}
	r2()
	if n := w.Watching(); n != 0 {
		t.Fatalf("after the last release: %d, want 0", n)
	}
	if tid := renameOnThisThread(t, b, a, nil); len(claim(t, w, tid)) != 0 {
		t.Fatal("a rename after the last release was reported")
	}
}

// TestClaimOutOfARemovedDirectory: a move out of a directory removed at
// once after it (a staging directory) is resolved through the
// directory's deletion, and through its parent's when the tree went
// (rm -r); one whose deletion is not known stays unresolved, with why.
func TestClaimOutOfARemovedDirectory(t *testing.T) {
	w, dir := watched(t)
	top, _ := filepath.EvalSymlinks(dir)
	tests := []struct {
		name    string
		staging string // relative to dir: made, holds the file, then removed with its top
		forget  bool   // drop the deletions seen before claiming
	}{
		{"the directory removed", "stage", false},
		{"a tree removed (rm -r): the parent too", "tree/sub/stage", false},
		{"the deletion not known: unresolved", "lost", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			staging := filepath.Join(dir, tt.staging)
			if err := os.MkdirAll(staging, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(staging, "f"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			removed := filepath.Join(dir, strings.Split(tt.staging, "/")[0])
			to := filepath.Join(dir, fmt.Sprintf("out%d", i))
			tid := renameOnThisThread(t, filepath.Join(staging, "f"), to, func() { _ = os.RemoveAll(removed) })
			if tt.forget {
				w.mu.Lock()
				w.drainLocked(time.Time{})
				clear(w.gone)
				w.mu.Unlock()
			}
			moves, err := w.Claim(tid, time.Time{}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(moves) != 1 {
				t.Fatalf("moves %+v, want one", moves)
			}
			m := moves[0]
			if tt.forget {
				if m.From != "" || !strings.Contains(m.FromErr, "stale") {
					t.Fatalf("a move out of a directory whose deletion is not known: %+v, want unresolved (stale handle)", m)
				}
				return
			}
			if want := filepath.Join(top, tt.staging, "f"); m.From != want || m.FromErr != "" || m.To != filepath.Join(top, filepath.Base(to)) {
				t.Fatalf("move %+v, want from %s", m, want)
			}
		})
	}
}

// TestClaimUnresolved: a move whose old directory cannot be resolved says
// why, so the caller takes it as unchecked: a path longer than PATH_MAX.
func TestClaimUnresolved(t *testing.T) {
	w, dir := watched(t)

	// A directory whose path is longer than PATH_MAX (4096 bytes).
	seg := strings.Repeat("d", 250)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 17; i++ {
		if err := unix.Mkdirat(fd, seg, 0o700); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, seg, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		_ = unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Mknodat(fd, "key", unix.S_IFREG|0o600, 0); err != nil {
		t.Fatal(err)
	}
	tids := make(chan uint32, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- uint32(unix.Gettid())
		if err := unix.Renameat(fd, "key", unix.AT_FDCWD, filepath.Join(dir, "loot2")); err != nil {
			t.Error(err)
		}
		tids <- 0
	}()
	tid := <-tids
	<-tids
	if moves := claim(t, w, tid); len(moves) != 1 || moves[0].From != "" || !strings.Contains(moves[0].FromErr, "too long") {
		t.Fatalf("a move out of a directory deeper than PATH_MAX: %+v", moves)
	}
}

// TestClaimSkipsAnEarlierThread: moves read before the claiming thread
// started belong to an earlier thread with the same id.
func TestClaimSkipsAnEarlierThread(t *testing.T) {
	w, dir := watched(t)
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tid := renameOnThisThread(t, a, filepath.Join(dir, "b"), nil)
	if moves, _ := w.Claim(tid, time.Now().Add(time.Hour), 0); len(moves) != 0 {
		t.Fatalf("moves of a thread started before the claimer: %+v", moves)
	}
}

// TestResolveThroughTheRightSource: two sources on one file system; a
// directory under the second resolves through it.
func TestResolveThroughTheRightSource(t *testing.T) {
	w := open(t)
	dir := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
		release, err := w.Watch(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	x := filepath.Join(dir, "b", "x")
	if err := os.WriteFile(x, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tid := renameOnThisThread(t, x, filepath.Join(dir, "b", "y"), nil)
	top, _ := filepath.EvalSymlinks(dir)
	if moves := claim(t, w, tid); len(moves) != 1 || moves[0].From != filepath.Join(top, "b", "x") {
		t.Fatalf("moves %+v", moves)
	}
}

// TestClaimUnderAFloodOfDeletions: threads removing directories as fast
// as they can (on tmpfs, the fastest) do not make a claim miss a move:
// it has the move, resolved, or fails with ErrBehind, never too few
// moves; the deleted directories kept stay within maxGone.
func TestClaimUnderAFloodOfDeletions(t *testing.T) {
	w := open(t)
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	release, err := w.Watch(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	go w.Run()
	stop := make(chan struct{})
	var flooders sync.WaitGroup
	var removed atomic.Int64
	for k := range 4 {
		flooders.Add(1)
		go func() {
			defer flooders.Done()
			name := filepath.Join(dir, fmt.Sprintf("flood%d", k))
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = unix.Mkdir(name, 0o700)
				if unix.Rmdir(name) == nil {
					removed.Add(1)
				}
			}
		}()
	}
	defer func() { close(stop); flooders.Wait() }()
	for i := range 5 {
		// Each rename once the flood has removed another 50,000
		// directories (past maxGone over the test).
		target := int64(i+1) * 50_000
		testenv.WaitFor(t, "the flood to remove directories", 60*time.Second, func() (bool, string) {
			return removed.Load() >= target, fmt.Sprintf("%d removed", removed.Load())
		})
		stage := filepath.Join(dir, fmt.Sprintf("stage%d", i))
		if err := os.Mkdir(stage, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stage, "f"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		tid := renameOnThisThread(t, filepath.Join(stage, "f"), filepath.Join(dir, fmt.Sprintf("out%d", i)), func() { _ = os.Remove(stage) })
		moves, err := w.Claim(tid, time.Time{}, 0)
		switch {
		case errors.Is(err, ErrBehind):
			t.Logf("rename %d: %v (unchecked: the caller ends the session)", i, err)
		case err != nil:
			t.Fatalf("rename %d: %v", i, err)
		case len(moves) != 1 || moves[0].From != filepath.Join(stage, "f"):
			t.Fatalf("rename %d during the flood: moves %+v, want the one from %s", i, moves, filepath.Join(stage, "f"))
		}
		w.mu.Lock()
		gone := len(w.gone)
		w.mu.Unlock()
		if gone > maxGone {
			t.Fatalf("%d deleted directories kept, want at most %d", gone, maxGone)
		}
	}
}

// onThread runs fn on a locked thread of its own and returns the thread's
// id, once fn is done.
func onThread(t *testing.T, fn func() error) uint32 {
	t.Helper()
	tid := make(chan uint32, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		tid <- uint32(unix.Gettid())
		errc <- fn()
	}()
	id := <-tid
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return id
}

// CheckChanges reports the deletions and attribute changes of a
// session's threads where the kernel acted: through a symlink removed at
// once after the call, and out of directories removed since (rm -r);
// those of other threads are not reported. The reader runs along, or
// starts once everything is removed (every directory is gone when its
// changes are read: their deletions say where they were).
func TestCheckChanges(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := "reader along"
		if late {
			name = "reader late"
		}
		t.Run(name, func(t *testing.T) { testCheckChanges(t, late) })
	}
}

func testCheckChanges(t *testing.T, late bool) {
	w, dir := watched(t)
	const session = 7
	var mine sync.Map // tid → true: the threads of the session
	var mu sync.Mutex
	var got []Change
	w.CheckChanges(func(tid uint32) (uint64, bool) {
		if _, ok := mine.Load(tid); ok {
			return session, true
		}
		return 0, false
	}, func(cs []Change) {
		mu.Lock()
		got = append(got, cs...)
		mu.Unlock()
	})
	if !late {
		go w.Run()
	}
	for _, f := range []string{".ssh/id_ed25519", ".ssh/config", "tree/a/b/f", "other"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644))
	}
	inSession := func(fn func() error) uint32 {
		return onThread(t, func() error {
			mine.Store(uint32(unix.Gettid()), true)
			return fn()
		})
	}
	tid := inSession(func() error {
		lnk := filepath.Join(dir, "lnk")
		if err := os.Symlink(".ssh", lnk); err != nil {
			return err
		}
		if err := unix.Unlink(filepath.Join(lnk, "id_ed25519")); err != nil {
			return err
		}
		if err := unix.Chmod(filepath.Join(lnk, "config"), 0o600); err != nil {
			return err
		}
		if err := unix.Unlink(lnk); err != nil {
			return err
		}
		return os.RemoveAll(filepath.Join(dir, "tree"))
	})
	onThread(t, func() error { return os.Remove(filepath.Join(dir, "other")) }) // not the session's
	// A thread the owner function takes for the session's (a host thread
	// with the id of a session's exited thread) changes a file on the same
	// file system outside every watched source: not the session's.
	elsewhere := filepath.Join(t.TempDir(), "host-file")
	must(t, os.WriteFile(elsewhere, nil, 0o644))
	inSession(func() error { return errors.Join(unix.Chmod(elsewhere, 0o600), os.Remove(elsewhere)) })
	if late {
		go w.Run()
	}
	want := []Change{
		{Op: OpDelete, Path: filepath.Join(dir, ".ssh/id_ed25519")},
		{Op: OpAttrib, Path: filepath.Join(dir, ".ssh/config")},
		{Op: OpDelete, Path: filepath.Join(dir, "lnk")},
		{Op: OpDelete, Path: filepath.Join(dir, "tree/a/b/f")},
		{Op: OpDelete, Dir: true, Path: filepath.Join(dir, "tree/a/b")},
		{Op: OpDelete, Dir: true, Path: filepath.Join(dir, "tree/a")},
		{Op: OpDelete, Dir: true, Path: filepath.Join(dir, "tree")},
	}
	testenv.WaitFor(t, "the session's changes", 10*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want), fmt.Sprintf("%d of %d", len(got), len(want))
	})
	mu.Lock()
	defer mu.Unlock()
	for i, c := range got {
		if c.Tid != tid || c.Session != session || c.Err != "" {
			t.Errorf("change %d: %+v, want thread %d of session %d, resolved", i, c, tid, session)
		}
		got[i].Tid, got[i].Session = 0, 0
	}
	// In no set order: a change out of a directory removed since waits
	// for the queue to be read through.
	byPath := func(a, b Change) int { return strings.Compare(a.Path, b.Path) }
	slices.SortFunc(got, byPath)
	slices.SortFunc(want, byPath)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes:\n got %+v\nwant %+v", got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// WatchDir watches the file system of the directory it is given, not
// the one its path names by now (a user's mount source whose path was
// pointed elsewhere after the launch checked it).
func TestWatchDirWatchesTheOpenedDirectory(t *testing.T) {
	w := open(t)
	pinned, err := os.MkdirTemp("/dev/shm", "renames-")
	testenv.Require(t, err == nil, "a tmpfs at /dev/shm")
	t.Cleanup(func() { _ = os.RemoveAll(pinned) })
	elsewhere := t.TempDir()
	var a, b unix.Statfs_t
	if unix.Statfs(pinned, &a) != nil || unix.Statfs(elsewhere, &b) != nil || a.Fsid == b.Fsid {
		t.Fatalf("want two file systems: %s and %s", pinned, elsewhere)
	}
	f, err := os.OpenFile(pinned, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	release, err := w.WatchDir(f, elsewhere) // the path is another file system's by now
	if err != nil {
		t.Fatal(err)
	}
	x, y := filepath.Join(pinned, "x"), filepath.Join(pinned, "y")
	if err := os.WriteFile(x, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if tid := renameOnThisThread(t, x, y, nil); len(claim(t, w, tid)) != 1 {
		t.Fatal("a rename in the directory given was not reported")
	}
	release()
	if n := w.Watching(); n != 0 {
		t.Fatalf("after the release: watching %d file systems, want 0", n)
	}
}
