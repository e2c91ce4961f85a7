package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// neverShared are top-level host directories that are never bound into a
// sandbox: kernel interfaces the container gets its own of, and places that
// hold users' files, secrets or runtime sockets.
var neverShared = map[string]bool{
	"proc": true, "sys": true, "dev": true, "run": true, "tmp": true,
	"home": true, "root": true, "mnt": true, "media": true, "lost+found": true,
	"boot": true, "var/run": true,
}

// HostView is the skeleton root plus the host directories bound into it.
type HostView struct {
	Rootfs string   // skeleton directory
	Dirs   []string // absolute top-level host directories to bind
}

// PrepareHostView (re)builds the skeleton root under dir from the host's
// top-level entries: a directory per shared directory and per mount point
// of the spec, and a copy of each top-level symlink. Anything else in it
// is removed (a skeleton that earlier versions ran sandboxes in directly
// kept their mount targets). Each sandbox runs in a copy of it (see
// makeRoot), never in it. It is idempotent and safe to call at every
// daemon start, once no sandbox of a previous daemon runs.
func PrepareHostView(dir, hostRoot string) (*HostView, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create rootfs skeleton: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create rootfs skeleton: %w", err)
	}
	entries, err := os.ReadDir(hostRoot)
	if err != nil {
		return nil, fmt.Errorf("list host root: %w", err)
	}
	hv := &HostView{Rootfs: dir}
	want := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		target := filepath.Join(dir, name)
		switch {
		case e.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(filepath.Join(hostRoot, name))
			if err != nil {
				return nil, fmt.Errorf("read host symlink /%s: %w", name, err)
			}
			if cur, err := os.Readlink(target); err != nil || cur != link {
				if err := os.RemoveAll(target); err != nil {
					return nil, fmt.Errorf("replace stale /%s: %w", name, err)
				}
				if err := os.Symlink(link, target); err != nil {
					return nil, fmt.Errorf("mirror symlink /%s: %w", name, err)
				}
			}
			want[name] = true
		case e.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("create mount point /%s: %w", name, err)
			}
			want[name] = true
			if !neverShared[name] {
				hv.Dirs = append(hv.Dirs, "/"+name)
			}
		}
	}
	// Mount points the spec needs even when the host lacks them.
	for _, name := range []string{"proc", "sys", "dev", "run", "tmp", "home", "root"} {
		if !want[name] {
			if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
				return nil, fmt.Errorf("create mount point /%s: %w", name, err)
			}
			want[name] = true
		}
	}
	have, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list rootfs skeleton: %w", err)
	}
	for _, e := range have {
		if want[e.Name()] {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			err = removeRoot(p)
		} else {
			err = os.Remove(p)
		}
		if err != nil {
			return nil, fmt.Errorf("remove /%s from the rootfs skeleton: %w", e.Name(), err)
		}
	}
	// runc gives a tmpfs the mode of the directory it covers, whatever
	// the spec's mode=: the sandbox's /tmp is sticky and world-writable
	// only if its mount point is (the skeleton lives in the daemon's
	// 0700 state directory: no host user reaches it).
	if err := os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777); err != nil {
		return nil, fmt.Errorf("create mount point /tmp: %w", err)
	}
	sort.Strings(hv.Dirs)
	return hv, nil
}
