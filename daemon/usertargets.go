package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/userservers"
	"github.com/mcpcage/mcpcage/internal/fscred"
)

// Mount targets of a user's own server. runc, as root, makes a target
// that does not exist yet (a directory, or an empty file for a file's
// mount) where the sandbox's view has it, and the runc of this host
// (before 1.1.14, CVE-2024-45310) resolves that path once and creates
// it by name afterwards: a directory on the way that the user can change
// (their own mounted directory, a directory of theirs on a host view
// such as /var/tmp/u) swapped for a symlink in between has root create
// the file or directory wherever the symlink points, /etc/nologin
// included (found by a red-team helper). So a target of a user's server
// lies only where the user can change nothing on its way: not inside
// another of its mounts, and on the host's view only below directories
// that are root's and writable by nobody else. The sandbox's own
// directories (/tmp, /home, /run...: new file systems of each sandbox)
// and an image's root (a snapshot of root's) hold nothing of the user's.

// errTargetWay is a target whose way the user could change.
var errTargetWay = errors.New("runc would make it through a directory you can change")

// checkUserTargets refuses a mount target of srv, a user's own server
// that peer runs, that lies inside another of its mounts, or on the
// host's view (hostDirs, its top-level directories; none for an image)
// below a directory that is not root's alone. The directories are
// looked at as peer (fscred): what they cannot reach is refused, whether
// or not it exists, so nothing is told of it.
func checkUserTargets(srv *config.Server, peer Peer, hostDirs []string) error {
	var onHost []string
	for _, m := range srv.Mounts {
		t := path.Clean(m.Target)
		for _, o := range srv.Mounts {
			if o.Target != t && strings.HasPrefix(t, strings.TrimSuffix(path.Clean(o.Target), "/")+"/") {
				return fmt.Errorf("mount target %s lies inside the mount at %s: %w (mount the directory that holds both, or give each a target of its own)", m.Target, o.Target, errTargetWay)
			}
		}
		top := "/" + strings.SplitN(strings.TrimPrefix(t, "/"), "/", 2)[0]
		if t != top && hostDirs != nil && (slices.Contains(hostDirs, top) || hostSymlink(top)) {
			onHost = append(onHost, t) // a top-level symlink (/lib -> usr/lib) leads into the host's view
		}
	}
	if len(onHost) == 0 {
		return nil
	}
	check := func() error {
		for _, t := range onHost {
			if err := checkTargetWay(t); err != nil {
				return err
			}
		}
		return nil
	}
	if peer.UID == 0 && peer.GID == 0 {
		return check()
	}
	return fscred.Do(fscred.Cred(userservers.CredOf(peer.UID, peer.GID)), check)
}

// checkTargetWay checks each directory from target's top-level one to its
// parent on the host, with the calling thread's credentials: each must be
// a directory (not a symlink) of root's that nobody else may write. A
// directory that does not exist ends the walk: its parent, root's alone,
// lets nobody else make it.
func checkTargetWay(target string) error {
	parts := strings.Split(strings.TrimPrefix(target, "/"), "/")
	dir := ""
	for _, p := range parts[:len(parts)-1] {
		dir += "/" + p
		var st unix.Stat_t
		err := unix.Lstat(dir, &st)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case err != nil:
			return fmt.Errorf("mount target %s: %s cannot be looked at as you: %w", target, dir, errTargetWay)
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("mount target %s: %s is not a directory (a symlink or a file) on the host: %w", target, dir, errTargetWay)
		case st.Uid != 0 || fs.FileMode(st.Mode).Perm()&0o022 != 0:
			return fmt.Errorf("mount target %s: %s on the host is not root's alone (owner uid %d, mode %#o): %w; choose a target under /home, /tmp or a new top-level directory", target, dir, st.Uid, st.Mode&0o7777, errTargetWay)
		}
	}
	return nil
}

// hostSymlink reports whether the host's top-level name is a symlink
// (the sandbox's root copies those).
func hostSymlink(top string) bool {
	var st unix.Stat_t
	return unix.Lstat(top, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// checkHomeTargets refuses, for an administrator's server, a mount target
// inside the target of a "~" mount: the delegating user owns that
// directory, so runc would make the inner target through it (see above).
func checkHomeTargets(srv *config.Server) error {
	for _, h := range srv.Mounts {
		if h.Source != "~" && !strings.HasPrefix(h.Source, "~/") {
			continue
		}
		for _, m := range srv.Mounts {
			if strings.HasPrefix(m.Target, strings.TrimSuffix(h.Target, "/")+"/") {
				return fmt.Errorf("mount target %s lies inside the mount of %s at %s, a directory of the user's: %w; give it a target of its own in [servers.%s]", m.Target, h.Source, h.Target, errTargetWay, srv.Name)
			}
		}
	}
	return nil
}
