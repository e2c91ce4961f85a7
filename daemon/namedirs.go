package daemon

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf"
)

// The directories of a change's names. The kernel's event names the
// directory of the first name (bpf.Event.Dir), in components of at most
// bpf.ComponentCut bytes and at most as deep as its walk goes; a rename's
// or link's new name is relative to a directory descriptor of its own
// (bpf.Event.NewDirfd), which the event does not name. Where the event
// falls short, the directory is looked up in /proc after the call.

// errDirChanged: the process's descriptor (or working directory) names
// another directory than the one the kernel checked at the call.
var errDirChanged = errors.New("the directory descriptor names another directory than at the call")

// nameDir returns the sandbox's path of directory descriptor fd of the
// process that made change ev (unix.AT_FDCWD: its working directory): the
// kernel's path when it is fd's and whole, else what /proc says the
// descriptor names now. A lookup of the first name's directory must end
// as the kernel's (cut) path does, component by component, or it fails
// with errDirChanged.
func nameDir(ev bpf.Event, fd int32) (string, error) {
	first := fd == ev.Dirfd && ev.Dir != ""
	if first && !ev.DirCut {
		return ev.Dir, nil
	}
	dir, err := procDir(ev.Tgid, fd)
	if err != nil {
		return "", err
	}
	if first && !endsAs(dir, ev.Dir) {
		return "", fmt.Errorf("%w: %s, the kernel's path at the call %s", errDirChanged, dir, ev.Dir)
	}
	return dir, nil
}

// procDir reads the path, in the process's root, of its directory
// descriptor fd (unix.AT_FDCWD: its working directory).
func procDir(tgid uint32, fd int32) (string, error) {
	link := fmt.Sprintf("/proc/%d/fd/%d", tgid, fd)
	if fd == unix.AT_FDCWD {
		link = fmt.Sprintf("/proc/%d/cwd", tgid)
	}
	dir, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("look up the directory: %w", err)
	}
	if !strings.HasPrefix(dir, "/") || strings.HasSuffix(dir, " (deleted)") {
		return "", fmt.Errorf("look up the directory: %s is %q, not a directory in the sandbox", link, dir)
	}
	return dir, nil
}

// endsAs reports whether dir ends as the kernel's path kernel does: its
// components from the last, each equal, or cut by the kernel to
// bpf.ComponentCut bytes; a kernel path without "…" in front must match
// dir whole.
func endsAs(dir, kernel string) bool {
	cut := strings.HasPrefix(kernel, "…")
	got := strings.Split(strings.Trim(dir, "/"), "/")
	want := strings.Split(strings.Trim(strings.TrimPrefix(kernel, "…"), "/"), "/")
	if len(want) > len(got) || (!cut && len(want) != len(got)) {
		return false
	}
	got = got[len(got)-len(want):]
	for i, w := range want {
		if got[i] != w && !(len(w) == bpf.ComponentCut && strings.HasPrefix(got[i], w)) {
			return false
		}
	}
	return true
}

// newNamePath is the path a rename's or link's new name is recorded
// with: absolute as given, or joined to its directory (nameDir); as given
// when that directory cannot be looked up (the record then shows a
// relative name, whose directory is not known).
func newNamePath(ev bpf.Event) string {
	if ev.NewHint == "" || strings.HasPrefix(ev.NewHint, "/") {
		return ev.NewHint
	}
	dir, err := nameDir(ev, ev.NewDirfd)
	if err != nil {
		return ev.NewHint
	}
	return path.Join(dir, ev.NewHint)
}

// resolvableNames are the names of change ev to resolve in the sandbox:
// the first name and a rename's or link's new name, each absolute as
// given or joined to its directory (nameDir). A name whose directory
// cannot be looked up is left out, and its error returned with the others.
func resolvableNames(ev bpf.Event) (names []string, err error) {
	var errs []error
	for _, n := range []struct {
		name string
		fd   int32
	}{{ev.Hint, ev.Dirfd}, {ev.NewHint, ev.NewDirfd}} {
		switch {
		case n.name == "":
		case strings.HasPrefix(n.name, "/"):
			names = append(names, n.name)
		default:
			dir, err := nameDir(ev, n.fd)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
				continue
			}
			names = append(names, path.Join(dir, n.name))
		}
	}
	return names, errors.Join(errs...)
}

// unresolvableDir says why a change whose directory could not be looked
// up (resolvableNames' error) is a hit, or "" when it is not: a
// directory that is not the one the kernel checked at the call (the
// working directory or descriptor changed since: a race on the check),
// or one too deep to have a path (longer than PATH_MAX, as only an
// attack makes). A process or descriptor gone before the lookup (a
// short-lived mkdir, a descriptor closed at once) is not: legitimate
// tools do that all the time, and its name is checked as text only.
func unresolvableDir(err error) string {
	switch {
	case errors.Is(err, errDirChanged):
		return "every change by name is checked: this one's name is relative to a working directory or directory descriptor that named another directory when it was looked up after the call"
	case errors.Is(err, unix.ENAMETOOLONG):
		return "every change by name is checked: this one's name is relative to a directory deeper than a path can name (PATH_MAX), which cannot be resolved"
	}
	return ""
}
