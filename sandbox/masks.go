package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A masked path is a mount on the host's dentry of that path in the
// sandbox's mount namespace (a tmpfs over a directory, /dev/null over a
// file). When the host replaces the path (a rename over a file, as an
// editor's save or passwd does; a directory removed and made again; an
// ancestor renamed), the kernel detaches that mount in every namespace,
// and a running session sees the new file unmasked (found by a red-team
// helper). A path that did not exist when the session started was never
// masked, and one made later is seen as it is. MaskCheck tells either.

// WatchedMasks are the host paths of p's masks that a session must not
// see even once the host replaces them: hidden_paths and AlwaysHidden.
// The deny scan's masks are not among them: a denied file the host
// replaces is still refused by the kernel's check of every open.
func WatchedMasks(p Params) []string {
	var out []string
	for _, m := range sortedUnion(AlwaysHidden, p.Hidden) {
		if m == "/proc" || m == "/sys" || strings.HasPrefix(m, "/proc/") || strings.HasPrefix(m, "/sys/") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// MaskCheck follows the masks of one sandbox: NewMaskCheck takes which
// masked paths are mounts when the sandbox starts, and which mount each
// is (the others did not exist); Lost tells which of them are no longer
// masked. A check looks each path up in the sandbox's view and asks the
// kernel which mount it lands on (statx: a few microseconds a path),
// rather than reading the sandbox's mountinfo (about 0.1 ms, and more
// with many mounts), which at every maskCheckEvery of every session was
// most of an idle daemon's CPU.
type MaskCheck struct {
	pid     uint32
	root    int         // O_PATH descriptor of the sandbox's root (/proc/PID/root)
	mounted []maskMount // masked at start: must still be those mounts
	absent  []string    // did not exist at start: must not appear
}

// maskMount is a masked path and the mount that masks it.
type maskMount struct {
	path  string
	mntID uint64
}

// NewMaskCheck starts following masks of the sandbox whose init is pid
// (host pid namespace).
func NewMaskCheck(pid uint32, masks []string) (*MaskCheck, error) {
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the sandbox's root: %w", err)
	}
	c := &MaskCheck{pid: pid, root: root}
	for _, p := range masks {
		st, found, err := c.stat(p)
		switch {
		case err != nil:
			_ = unix.Close(root)
			return nil, fmt.Errorf("look up %s in the sandbox: %w", p, err)
		case found && st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0:
			_ = unix.Close(root)
			return nil, fmt.Errorf("the kernel does not say whether %s is a mount (statx without STATX_ATTR_MOUNT_ROOT: Linux before 5.8)", p)
		case found && st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0:
			c.mounted = append(c.mounted, maskMount{path: p, mntID: st.Mnt_id})
		default:
			c.absent = append(c.absent, p) // not there, or not masked: must not be seen
		}
	}
	return c, nil
}

// Lost returns the masked paths the sandbox can now see: one that is there
// but is no longer the root of the mount that masked it (the host
// replaced it, which detaches the mask, or renamed a directory above it
// and made the path again), one whose mask is no longer mounted anywhere
// in the sandbox (a directory above it renamed, the mask moving with it,
// and the file then replaced there: found where it is no longer, which
// costs a read of the sandbox's mountinfo), or a path that did not exist
// at start and does now in the sandbox's view.
func (c *MaskCheck) Lost() ([]string, error) {
	var lost []string
	var mounts map[uint64]bool // the sandbox's mount ids, read once if needed
	for _, m := range c.mounted {
		st, found, err := c.stat(m.path)
		if err != nil {
			return nil, err
		}
		if found {
			if st.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 || st.Mnt_id != m.mntID {
				lost = append(lost, m.path)
			}
			continue
		}
		if mounts == nil {
			if mounts, err = mountIDs(c.pid); err != nil {
				return nil, err
			}
		}
		if !mounts[m.mntID] {
			lost = append(lost, m.path)
		}
	}
	for _, p := range c.absent {
		_, found, err := c.stat(p)
		if err != nil {
			return nil, err
		}
		if found {
			lost = append(lost, p)
		}
	}
	return lost, nil
}

// stat looks p up in the sandbox's view (its root and mounts: its private
// /tmp or /run are not the host's), symlinks resolved inside that root,
// the last one not followed; found is false when nothing is there. An
// error is returned only when the sandbox's root itself is gone (its
// init exited) or the kernel refuses the look-up for another reason.
func (c *MaskCheck) stat(p string) (st unix.Statx_t, found bool, err error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(c.root, strings.TrimPrefix(p, "/"), how)
	for try := 0; err == unix.EAGAIN && try < maxLookupRetries; try++ {
		// A rename or mount raced a ".." of the walk: the kernel asks
		// for another try.
		fd, err = unix.Openat2(c.root, strings.TrimPrefix(p, "/"), how)
	}
	switch {
	case err == unix.EAGAIN:
		// Renames the sandbox can make without end must not keep its
		// masks unchecked: reported as seen.
		return st, true, nil
	case err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP:
		return st, false, nil
	case err != nil:
		return st, false, fmt.Errorf("look up %s in the sandbox: %w", p, err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &st); err != nil {
		return st, false, fmt.Errorf("statx %s in the sandbox: %w", p, err)
	}
	return st, true, nil
}

// mountIDs are the mount ids of pid's mount namespace (the first field of
// each line of /proc/PID/mountinfo, the id statx reports as STATX_MNT_ID).
func mountIDs(pid uint32) (map[uint64]bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("read the sandbox's mounts: %w", err)
	}
	ids := map[uint64]bool{}
	for line := range strings.Lines(string(b)) {
		field, _, _ := strings.Cut(line, " ")
		if id, err := strconv.ParseUint(field, 10, 64); err == nil {
			ids[id] = true
		}
	}
	return ids, nil
}

// maxLookupRetries bounds the tries of a look-up that renames in the
// sandbox keep racing.
const maxLookupRetries = 16

// Close lets go of the sandbox's root.
func (c *MaskCheck) Close() error { return unix.Close(c.root) }
