package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// HostMasks are the host paths spec masks: hidden_paths, AlwaysHidden and
// the deny scan's, not runc's own masks inside /proc and /sys.
func HostMasks(spec *specs.Spec) []string {
	if spec == nil || spec.Linux == nil {
		return nil
	}
	var out []string
	for _, p := range spec.Linux.MaskedPaths {
		if p == "/proc" || p == "/sys" || strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/") {
			continue
		}
		out = append(out, p)
	}
	return out
}

// MaskCheck follows the masks of one sandbox: NewMaskCheck takes which
// masked paths are mounts when the sandbox starts (the others did not
// exist), Lost tells which of them are no longer masked.
type MaskCheck struct {
	pid     uint32
	root    int      // O_PATH descriptor of the sandbox's root (/proc/PID/root)
	mounted []string // masked at start: must stay mount points
	absent  []string // did not exist at start: must not appear
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

// Masked is how many paths are masked by a mount of their own.
func (c *MaskCheck) Masked() int { return len(c.mounted) }

// Lost returns the masked paths the sandbox can now see: a mask that is no
// longer a mount point in its namespace, or a path that did not exist at
// start and does now in the sandbox's view.
func (c *MaskCheck) Lost() ([]string, error) {
	points, err := mountPoints(c.pid)
	if err != nil {
		return nil, err
	}
	var lost []string
	for _, p := range c.mounted {
		if !points[p] {
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
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out[unescapeMountinfo(fields[4])] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/%d/mountinfo: %w", pid, err)
	}
	return out, nil
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
