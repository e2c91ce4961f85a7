package sandbox

import (
	"bytes"
	"fmt"
	"io"
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
// masked paths are mounts when the sandbox starts (the others did not
// exist), Lost tells which of them are no longer masked.
type MaskCheck struct {
	pid     uint32
	root    int             // O_PATH descriptor of the sandbox's root (/proc/PID/root)
	mounted []string        // masked at start: must stay mount points
	absent  []string        // did not exist at start: must not appear
	buf     []byte          // the last mountinfo read, kept for the next
	want    map[string]bool // mounted, and whether the last read had each
}

// NewMaskCheck starts following masks of the sandbox whose init is pid
// (host pid namespace).
func NewMaskCheck(pid uint32, masks []string) (*MaskCheck, error) {
	points, err := mountPoints(pid)
	if err != nil {
		return nil, err
	}
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the sandbox's root: %w", err)
	}
	c := &MaskCheck{pid: pid, root: root}
	for _, p := range masks {
		if points[p] {
			c.mounted = append(c.mounted, p)
		} else {
			c.absent = append(c.absent, p)
		}
	}
	return c, nil
}

// Lost returns the masked paths the sandbox can now see: a mask that is no
// longer a mount point in its namespace, or a path that did not exist at
// start and does now in the sandbox's view.
func (c *MaskCheck) Lost() ([]string, error) {
	var err error
	if c.buf, err = readAll(fmt.Sprintf("/proc/%d/mountinfo", c.pid), c.buf[:0]); err != nil {
		return nil, err
	}
	if c.want == nil {
		c.want = make(map[string]bool, len(c.mounted))
	}
	for _, p := range c.mounted {
		c.want[p] = false
	}
	forEachMountPoint(c.buf, func(point []byte) {
		if _, ok := c.want[string(point)]; ok {
			c.want[string(point)] = true
		}
	})
	var lost []string
	for _, p := range c.mounted {
		if !c.want[p] {
			lost = append(lost, p)
		}
	}
	for _, p := range c.absent {
		if c.exists(p) {
			lost = append(lost, p)
		}
	}
	return lost, nil
}

// exists says whether path p exists in the sandbox's view (its root and
// mounts: its private /tmp or /run are not the host's), symlinks resolved
// inside that root, the last one not followed.
func (c *MaskCheck) exists(p string) bool {
	fd, err := unix.Openat2(c.root, strings.TrimPrefix(p, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	_ = unix.Close(fd)
	return true
}

// Close lets go of the sandbox's root.
func (c *MaskCheck) Close() error { return unix.Close(c.root) }

// mountPoints are the mount points of pid's mount namespace
// (/proc/PID/mountinfo, its fifth field, octal escapes decoded).
func mountPoints(pid uint32) (map[string]bool, error) {
	b, err := readAll(fmt.Sprintf("/proc/%d/mountinfo", pid), nil)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	forEachMountPoint(b, func(point []byte) { out[string(point)] = true })
	return out, nil
}

// forEachMountPoint calls f with the mount point of each line of
// mountinfo (its fifth field, escapes decoded; f must not keep it).
func forEachMountPoint(mountinfo []byte, f func(point []byte)) {
	var scratch []byte
	for len(mountinfo) > 0 {
		line := mountinfo
		if i := bytes.IndexByte(mountinfo, '\n'); i >= 0 {
			line, mountinfo = mountinfo[:i], mountinfo[i+1:]
		} else {
			mountinfo = nil
		}
		field := line
		for range 4 { // skip id, parent id, major:minor, root
			i := bytes.IndexByte(field, ' ')
			if i < 0 {
				field = nil
				break
			}
			field = field[i+1:]
		}
		if i := bytes.IndexByte(field, ' '); i >= 0 {
			field = field[:i]
		}
		if len(field) == 0 {
			continue
		}
		if bytes.IndexByte(field, '\\') >= 0 {
			scratch = append(scratch[:0], unescapeMountinfo(string(field))...)
			field = scratch
		}
		f(field)
	}
}

// readAll reads the file at path into buf (grown as needed).
func readAll(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer func() { _ = f.Close() }()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// unescapeMountinfo decodes mountinfo's \ooo escapes (space, tab, newline,
// backslash).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
