package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Hasher hashes executables and scripts. A digest is cached per file
// (device and inode) together with the file's size, mtime and ctime: the
// ctime moves on every change and no user can set it, so an edit with
// the mtime put back still misses the cache. On any doubt the entry is
// dropped: the file changed while it was hashed, or it changed so
// recently that a second edit within the timestamps' granularity would
// keep all three.
type Hasher struct {
	mu    sync.Mutex
	cache map[fileID]cached

	// Stamps is the kernel's exec record; nil where the eBPF layer is
	// missing (agent identity is then weaker, see Agent). Set before use.
	Stamps Stamps
}

type fileID struct{ dev, ino uint64 }

type cached struct {
	size         int64
	mtime, ctime unix.Timespec
	sum          string
}

// recent is how old a change must be before its digest is cached (a
// variable for tests).
var recent = 2 * time.Second

// NewHasher returns an empty cache.
func NewHasher() *Hasher { return &Hasher{cache: map[fileID]cached{}} }

func (h *Hasher) sum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open agent executable: %w", err)
	}
	defer func() { _ = f.Close() }()
	return h.sumFile(f)
}

// sumFile returns the SHA-256 of the open file f.
func (h *Hasher) sumFile(f *os.File) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	h.mu.Lock()
	c, ok := h.cache[id]
	if ok && c.size == st.Size && c.mtime == st.Mtim && c.ctime == st.Ctim {
		h.mu.Unlock()
		return c.sum, nil
	}
	delete(h.cache, id)
	h.mu.Unlock()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	s := hex.EncodeToString(d.Sum(nil))
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil {
		return "", fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if after.Size != st.Size || after.Mtim != st.Mtim || after.Ctim != st.Ctim {
		return "", fmt.Errorf("%s changed while it was hashed", f.Name())
	}
	if time.Since(time.Unix(st.Ctim.Unix())) > recent && time.Since(time.Unix(st.Mtim.Unix())) > recent {
		h.mu.Lock()
		h.cache[id] = cached{size: st.Size, mtime: st.Mtim, ctime: st.Ctim, sum: s}
		h.mu.Unlock()
	}
	return s, nil
}
