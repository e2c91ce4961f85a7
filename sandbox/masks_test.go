package sandbox

import (
	"os"
	"slices"
	"testing"
)

func TestWatchedMasks(t *testing.T) {
	got := WatchedMasks(Params{Hidden: []string{"/home/u/.ssh", "/proc/kcore", "/sys/firmware", "/procfs-not", "/etc/shadow"}})
	want := sortedUnion(AlwaysHidden, []string{"/home/u/.ssh", "/procfs-not"})
	if !slices.Equal(got, want) {
		t.Fatalf("WatchedMasks = %q, want %q", got, want)
	}
}

// BenchmarkMaskCheck: one check of a session's masks (a look-up of each
// path in its root, and which mount it is on), what the daemon pays per
// session every maskCheckEvery.
func BenchmarkMaskCheck(b *testing.B) {
	masks := append([]string{"/proc"}, AlwaysHidden...) // mostly absent here: each is looked up
	c, err := NewMaskCheck(uint32(os.Getpid()), masks)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for b.Loop() {
		if _, err := c.Lost(); err != nil {
			b.Fatal(err)
		}
	}
}
