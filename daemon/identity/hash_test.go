package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
	"golang.org/x/sys/unix"
)

func sha(b string) string { s := sha256.Sum256([]byte(b)); return hex.EncodeToString(s[:]) }

// laterCtime waits until a new file gets a ctime after path's: an edit
// from now on gets a distinct ctime whatever the file system's clock
// granularity.
func laterCtime(t *testing.T, path string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(filepath.Dir(path), ".probe")
	testenv.WaitFor(t, fmt.Sprintf("the file system clock to move past %v", st.Ctim), 5*time.Second, func() (bool, string) {
		if err := os.WriteFile(probe, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		var p unix.Stat_t
		if err := unix.Stat(probe, &p); err != nil {
			t.Fatal(err)
		}
		return p.Ctim.Nano() > st.Ctim.Nano(), fmt.Sprintf("a new file's ctime %v", p.Ctim)
	})
}

func TestEditWithMtimeRestoredGetsANewHash(t *testing.T) {
	defer func(r time.Duration) { recent = r }(recent)
	recent = 0 // cache at once: the ctime must be what tells the edit
	exe := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(exe, []byte("trusted agent v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := NewHasher()
	first, err := h.sum(exe)
	if err != nil || first != sha("trusted agent v1") {
		t.Fatalf("sum = %s, %v", first, err)
	}
	if len(h.cache) != 1 {
		t.Fatalf("cache has %d entries, want 1", len(h.cache))
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	laterCtime(t, exe)
	// Same size, same inode, mtime put back.
	f, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("evil!!! agent v1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(exe, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(fi.ModTime()) || after.Size() != fi.Size() {
		t.Fatalf("the edit did not keep mtime and size: %v %d, was %v %d", after.ModTime(), after.Size(), fi.ModTime(), fi.Size())
	}
	second, err := h.sum(exe)
	if err != nil {
		t.Fatal(err)
	}
	if second != sha("evil!!! agent v1") {
		t.Fatalf("edited file hashed as %s (first %s), want the new content's digest", second, first)
	}
}

func TestRecentChangeIsNotCached(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(exe, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := NewHasher()
	if s, err := h.sum(exe); err != nil || s != sha("x") {
		t.Fatalf("sum = %s, %v", s, err)
	}
	if len(h.cache) != 0 {
		t.Fatalf("a file changed %v ago or less was cached", recent)
	}
}
