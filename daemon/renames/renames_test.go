package renames

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

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

// renameOnThisThread renames from to to on a thread of its own and
// returns that thread's id.
func renameOnThisThread(t *testing.T, from, to string, after func()) uint32 {
	t.Helper()
	tid := make(chan uint32, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- uint32(unix.Gettid())
		err := os.Rename(from, to)
		if err == nil && after != nil {
			after()
		}
		errc <- err
	}()
	id := <-tid
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return id
}

// TestClaimSeesThroughARemovedSymlink: the move is where the kernel took
// the file from (the real directory), though the name the caller used
// went through a symlink removed at once after the call.
func TestClaimSeesThroughARemovedSymlink(t *testing.T) {
	w := open(t)
	dir := t.TempDir()
	release, err := w.Watch(dir)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer release()
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
	if other := w.Claim(tid + 1_000_000); len(other) != 0 {
		t.Fatalf("another thread's claim got %+v", other)
	}
	moves := w.Claim(tid)
	if len(moves) != 1 {
		t.Fatalf("Claim(%d) = %+v, want one move", tid, moves)
	}
	real, _ := filepath.EvalSymlinks(secret)
	top, _ := filepath.EvalSymlinks(dir)
	want := Move{Tid: tid, From: filepath.Join(real, "id_ed25519"), To: filepath.Join(top, "loot")}
	if m := moves[0]; m.Tid != want.Tid || m.From != want.From || m.To != want.To {
		t.Fatalf("move %+v, want %+v", m, want)
	}
	if again := w.Claim(tid); len(again) != 0 {
		t.Fatalf("a claimed move came back: %+v", again)
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
	if tid := renameOnThisThread(t, a, b, nil); len(w.Claim(tid)) != 1 {
		t.Fatal("a rename while watched was not reported")
	}
	r2()
	if n := w.Watching(); n != 0 {
		t.Fatalf("after the last release: %d, want 0", n)
	}
	if tid := renameOnThisThread(t, b, a, nil); len(w.Claim(tid)) != 0 {
		t.Fatal("a rename after the last release was reported")
	}
}
