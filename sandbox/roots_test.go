package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestMakeRoot: a sandbox's root is the skeleton's directories, with
// their modes, and its symlinks; what runc made in it goes with it.
func TestMakeRoot(t *testing.T) {
	host := t.TempDir()
	for _, d := range []string{"usr", "etc", "work"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("usr/lib", filepath.Join(host, "lib")); err != nil {
		t.Fatal(err)
	}
	hv, err := PrepareHostView(filepath.Join(t.TempDir(), "rootfs"), host)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "c1")
	if err := makeRoot(hv.Rootfs, root); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mode fs.FileMode
		link string
	}{
		{"usr", fs.ModeDir | 0o755, ""},
		{"tmp", fs.ModeDir | fs.ModeSticky | 0o777, ""},
		{"proc", fs.ModeDir | 0o755, ""},
		{"lib", fs.ModeSymlink, "usr/lib"},
	}
	for _, tt := range tests {
		info, err := os.Lstat(filepath.Join(root, tt.name))
		if err != nil {
			t.Errorf("/%s: %v", tt.name, err)
			continue
		}
		if tt.link != "" {
			if l, err := os.Readlink(filepath.Join(root, tt.name)); err != nil || l != tt.link || info.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("/%s: a symlink to %q, %v; want one to %q", tt.name, l, err, tt.link)
			}
			continue
		}
		if got := info.Mode() & (fs.ModeDir | fs.ModeSticky | fs.ModePerm); got != tt.mode {
			t.Errorf("/%s: mode %v, want %v", tt.name, got, tt.mode)
		}
	}
	if err := makeRoot(hv.Rootfs, root); err == nil {
		t.Error("makeRoot over an existing root: no error")
	}
	// What runc makes for mounts whose targets no directory holds.
	if err := errors.Join(
		os.MkdirAll(filepath.Join(root, "projects", "acme", "src"), 0o755),
		os.MkdirAll(filepath.Join(root, ".mcpcage", "stdio"), 0o755),
		os.WriteFile(filepath.Join(root, ".mcpcage", "init"), nil, 0o644),
	); err != nil {
		t.Fatal(err)
	}
	if err := removeRoot(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the root after removeRoot: %v, want it gone", err)
	}
	if ents, err := os.ReadDir(hv.Rootfs); err != nil || len(ents) == 0 {
		t.Fatalf("the skeleton after a root's removal: %d entries, %v", len(ents), err)
	}
	if err := removeRoot(root); err != nil {
		t.Errorf("removeRoot of a root already gone: %v", err)
	}
	if err := removeRoot(""); err != nil {
		t.Errorf("removeRoot of an image's root (none): %v", err)
	}
}

// TestRemoveRootStopsAtAMount: a file system mounted in a root (in the
// daemon's namespace, which runc's mounts never are) is not the
// sandbox's: nothing under it is removed.
func TestRemoveRootStopsAtAMount(t *testing.T) {
	testenv.RequireRoot(t)
	root := filepath.Join(t.TempDir(), "c1")
	other := t.TempDir()
	keep := filepath.Join(other, "precious")
	if err := errors.Join(os.MkdirAll(filepath.Join(root, "work"), 0o755), os.WriteFile(keep, []byte("x"), 0o644)); err != nil {
		t.Fatal(err)
	}
	// A bind mount of the same file system: told apart by its mount id.
	if err := unix.Mount(other, filepath.Join(root, "work"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(filepath.Join(root, "work"), unix.MNT_DETACH) }()
	if err := removeRoot(root); err == nil {
		t.Fatal("removeRoot crossed into a mount: no error")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a file of the mounted file system: %v, want it kept", err)
	}
}
