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

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/a\040b`:          "/a b",
		`/tab\011x\134y`:   "/tab\tx\\y",
		`/short\04`:        `/short\04`,
		`/not\999octal`:    `/not\999octal`,
		`/new\012line\040`: "/new\nline ",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkMaskCheck: one check of a session's masks (this process's
// mountinfo, and a look-up of each absent path in its root), what the
// daemon pays per session every maskCheckEvery.
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
