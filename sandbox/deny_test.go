package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDeniedPaths(t *testing.T) {
	src := t.TempDir()
	for _, d := range []string{".ssh", "a/b/.aws", "a/b/c/d/e/f/g/.ssh", "x"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(src, ".ssh", "id"), []byte("k"), 0o600),
		os.WriteFile(filepath.Join(src, "x", ".gnupg"), []byte("f"), 0o600), // a file named like a rule
		os.Symlink(filepath.Join(src, ".ssh"), filepath.Join(src, "x", "link")),
		os.Symlink(filepath.Join(src, ".ssh"), filepath.Join(src, "x", ".aws")), // a symlink: not masked
	); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(src, ".ssh")
	mounts := []BindMount{{Source: src, Target: "/work"}, {Source: keys, Target: "/keys"}}
	scan := ScanDenied(mounts, []string{".ssh", ".aws", ".gnupg"})
	want := []string{"/keys", "/work/.ssh", "/work/a/b/.aws", "/work/x/.gnupg"}
	if !slices.Equal(scan.Masks, want) {
		t.Fatalf("masks = %q, want %q", scan.Masks, want)
	}
	if want := []IncompleteScan{{Mount: "/work", Reason: ScanCutDepth}}; !slices.Equal(scan.Incomplete, want) {
		t.Fatalf("incomplete = %v, want %v (a .ssh below the depth bound)", scan.Incomplete, want)
	}
	if scan := ScanDenied(mounts[:1], nil); scan.Masks != nil || scan.Incomplete != nil {
		t.Fatalf("no rules: %+v", scan)
	}
	spec, err := BuildSpec(Params{Args: []string{"/bin/true"}, Rootfs: "/r", Mounts: mounts, DenyNames: []string{".ssh"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spec.Linux.MaskedPaths, "/work/.ssh") {
		t.Fatalf("spec masks %q, want /work/.ssh among them", spec.Linux.MaskedPaths)
	}
}

func TestSeccompRefusesSharedFilesAndLinks(t *testing.T) {
	p := defaultProfile(SeccompOptions{})
	for _, r := range p.Syscalls {
		for _, refused := range []string{"link", "linkat", "truncate", "truncate64"} {
			if r.Action == "SCMP_ACT_ALLOW" && slices.Contains(r.Names, refused) {
				t.Fatalf("%s allowed", refused)
			}
		}
	}
	// Simulate the clone rules: allowed when any rule matches.
	allowed := func(flags uint64) bool {
		for _, r := range p.Syscalls {
			if !slices.Contains(r.Names, "clone") || r.Action != "SCMP_ACT_ALLOW" {
				continue
			}
			a := r.Args[0]
			if flags&a.Value == a.ValueTwo {
				return true
			}
		}
		return false
	}
	const thread = 0x7d0f00 // glibc pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
	for _, tt := range []struct {
		flags uint64
		want  bool
	}{{0x11, true}, {0x01200011, true}, {0x4111, true}, {thread, true}, {0x400 | 0x11, false}, {0x20000 | 0x11, false}, {thread | 0x20000000, false}} {
		if got := allowed(tt.flags); got != tt.want {
			t.Errorf("clone(%#x) allowed = %v, want %v", tt.flags, got, tt.want)
		}
	}
}

// A source the user chose is searched through its pin (the object
// checked at launch): pointed elsewhere since by a symlink, its path
// would have root search another tree (a FIFO, a device) and mask the
// wrong names.
func TestDeniedPathsSearchedThroughThePin(t *testing.T) {
	base := t.TempDir()
	proj, elsewhere := filepath.Join(base, "proj"), filepath.Join(base, "elsewhere")
	for _, d := range []string{filepath.Join(proj, ".ssh"), filepath.Join(elsewhere, ".aws")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pin, err := os.OpenFile(proj, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pin.Close() }()
	// After the pin: proj moved away, its name a symlink to another tree.
	if err := errors.Join(os.Rename(proj, filepath.Join(base, "moved")), os.Symlink(elsewhere, proj)); err != nil {
		t.Fatal(err)
	}
	scan := ScanDenied([]BindMount{{Source: proj, Target: "/work", Pin: pin}}, []string{".ssh", ".aws"})
	if want := []string{"/work/.ssh"}; !slices.Equal(scan.Masks, want) {
		t.Fatalf("masks = %q, want %q (the pinned tree's, not the one its path names now)", scan.Masks, want)
	}
	// A FIFO where a source was is never opened (root would wait on it).
	fifo := filepath.Join(base, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if scan := ScanDenied([]BindMount{{Source: fifo, Target: "/f"}}, []string{".ssh"}); scan.Masks != nil {
		t.Fatalf("masks of a FIFO: %q", scan.Masks)
	}
}
