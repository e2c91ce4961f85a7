package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A sandbox on the host's view runs in a root of its own: a copy of the
// skeleton (HostView.Rootfs: a directory per top-level host directory
// and mount point, the host's top-level symlinks) made for its container
// and removed with it. runc creates a mount target that no directory of
// the root holds (a server's mount at /projects/acme) in the root itself,
// before it makes the root read-only: in one skeleton shared by every
// sandbox, each such target stayed for good, seen by every later
// sandbox of every server and user as an empty directory.

// makeRoot makes dir, which must not exist, a copy of the skeleton
// template: its directories (empty, with their modes) and its symlinks.
func makeRoot(template, dir string) (retErr error) {
	ents, err := os.ReadDir(template)
	if err != nil {
		return fmt.Errorf("sandbox root: read the skeleton: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("sandbox root: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = removeRoot(dir) // what was made so far, nothing mounted yet
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		return fmt.Errorf("sandbox root: %w", err)
	}
	for _, e := range ents {
		src, dst := filepath.Join(template, e.Name()), filepath.Join(dir, e.Name())
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err != nil {
				return fmt.Errorf("sandbox root: %w", err)
			}
			if err := os.Symlink(link, dst); err != nil {
				return fmt.Errorf("sandbox root: %w", err)
			}
		case e.IsDir():
			info, err := e.Info()
			if err != nil {
				return fmt.Errorf("sandbox root: %w", err)
			}
			if err := os.Mkdir(dst, 0o700); err != nil {
				return fmt.Errorf("sandbox root: %w", err)
			}
			// The skeleton's mode (a sticky, world-writable /tmp: runc
			// gives a tmpfs the mode of the directory it covers).
			if err := os.Chmod(dst, info.Mode()&(fs.ModePerm|fs.ModeSticky)); err != nil {
				return fmt.Errorf("sandbox root: %w", err)
			}
		}
	}
	return nil
}

// removeRoot removes a sandbox's root once its container is gone: the
// copy makeRoot made and the mount targets runc created in it (empty
// directories and files). It never leaves dir's file system (a mount
// there in this namespace is not the sandbox's: it is an error, and
// nothing under it is touched) and never follows a symlink.
func removeRoot(dir string) error {
	if dir == "" {
		return nil // an image's root: its snapshot goes with the container
	}
	top, err := mountOf(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove sandbox root: %w", err)
	}
	if !top.dir {
		return fmt.Errorf("remove sandbox root: %s is not a directory", dir)
	}
	var remove func(path string) error
	remove = func(path string) error {
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := filepath.Join(path, e.Name())
			if e.IsDir() {
				m, err := mountOf(p)
				if err != nil {
					return err
				}
				if m.id != top.id {
					return fmt.Errorf("%s is another file system mounted in a sandbox's root: left as it is", p)
				}
				if err := remove(p); err != nil {
					return err
				}
				continue
			}
			if err := os.Remove(p); err != nil {
				return err
			}
		}
		return os.Remove(path)
	}
	if err := remove(dir); err != nil {
		return fmt.Errorf("remove sandbox root: %w", err)
	}
	return nil
}

// mount is where a file is: its mount's id (the device's on a kernel
// without STATX_MNT_ID, before 5.8), and whether it is a directory.
type mount struct {
	id  uint64
	dir bool
}

// mountOf is path's mount, path not followed if a symlink.
func mountOf(path string) (mount, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_MNT_ID, &st); err != nil {
		return mount{}, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	m := mount{id: st.Mnt_id, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		m.id = unix.Mkdev(st.Dev_major, st.Dev_minor)
	}
	return m, nil
}
