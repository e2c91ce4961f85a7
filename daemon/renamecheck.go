package daemon

import (
	"path/filepath"
	"slices"
	"strings"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/sandbox"
)

// A rename in a writable mount is checked where the kernel took the file
// from and put it (renames.Watcher: fanotify's directory handles), not
// by resolving the names the server used again afterwards, which a
// symlink swapped or removed at once after the call defeats.

// renameMount is a writable mount whose renames the watcher reports: the
// host's path of its source and where the sandbox sees it.
type renameMount struct{ source, target string }

// watchRenames asks the watcher for the renames in the session's
// writable mounts, before the server runs.
func (d *Daemon) watchRenames(s *session, mounts []sandbox.BindMount) {
	if d.renames == nil {
		return
	}
	for _, m := range mounts {
		if !m.Writable {
			continue
		}
		src, err := filepath.EvalSymlinks(m.Source)
		if err != nil {
			src = m.Source
		}
		release, err := d.renames.Watch(src)
		if err != nil {
			s.log.Warn("renames in this mount are checked by name after the fact: a symlink swapped or removed at once escapes the check", "mount", m.Target, "err", err)
			continue
		}
		s.renameReleases = append(s.renameReleases, release)
		s.renameMounts = append(s.renameMounts, renameMount{source: src, target: m.Target})
	}
	// The deepest source first: a mount inside another is the one the
	// sandbox sees there.
	slices.SortFunc(s.renameMounts, func(a, b renameMount) int { return len(b.source) - len(a.source) })
}

// releaseRenames ends the session's watches.
func (s *session) releaseRenames() {
	for _, release := range s.renameReleases {
		release()
	}
	s.renameReleases = nil
}

// sandboxPath is where the sandbox sees host path p: under the writable
// mount that holds it; "" when none does.
func (s *session) sandboxPath(p string) string {
	for _, m := range s.renameMounts {
		if p == m.source {
			return m.target
		}
		if rest, ok := strings.CutPrefix(p, m.source+"/"); ok {
			return filepath.Join(m.target, rest)
		}
	}
	return ""
}

// movedFromDenied checks the renames the kernel did for the thread of ev
// (where it took each file from, and where it put it) against the
// session's deny_paths. It returns the rule hit and the sandbox's path
// that hit it.
func (d *Daemon) movedFromDenied(s *session, ev bpf.Event) (rule, touched string) {
	if d.renames == nil || len(s.renameMounts) == 0 {
		return "", ""
	}
	for _, m := range d.renames.Claim(ev.Pid) {
		for _, p := range []string{s.sandboxPath(m.From), s.sandboxPath(m.To)} {
			if p == "" {
				continue
			}
			if rule := deniedComponent(s.srv, p); rule != "" {
				return rule, p
			}
		}
	}
	return "", ""
}
