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
// thread that made change ev (unix.AT_FDCWD: its working directory): the
// kernel's path when it is fd's and whole, else what /proc says the
// thread's descriptor names now. A lookup of the first name's directory
// must end as the kernel's (cut) path does, component by component, or
// it fails with errDirChanged.
func nameDir(ev bpf.Event, fd int32) (string, error) {
	first := fd == ev.Dirfd && ev.Dir != ""
	if first && !ev.DirCut {
		return ev.Dir, nil
	}
	dir, err := threadDir(ev, fd)
	if err != nil {
		return "", err
	}
	if first && !endsAs(dir, ev.Dir) {
		return "", fmt.Errorf("%w: %s, the kernel's path at the call %s", errDirChanged, dir, ev.Dir)
	}
	return dir, nil
}

// threadDir reads the path, in its root, of directory descriptor fd
// (unix.AT_FDCWD: the working directory) of the thread that made change
// ev. The thread's own, not its process's: a thread may have a working
// directory and descriptors of its own (clone without CLONE_FS or
// CLONE_FILES). A thread that started after the change is another one
// with its id (errDirChanged); one gone is an error that is not.
func threadDir(ev bpf.Event, fd int32) (string, error) {
	task := fmt.Sprintf("/proc/%d/task/%d", ev.Tgid, ev.Pid)
	link := fmt.Sprintf("%s/fd/%d", task, fd)
	if fd == unix.AT_FDCWD {
		link = task + "/cwd"
	}
	dir, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("look up the directory: %w", err)
	}
	if started := threadStart(ev.Pid); started.IsZero() {
		return "", fmt.Errorf("look up the directory: thread %d is gone", ev.Pid)
	} else if started.After(ev.Time) {
		return "", fmt.Errorf("%w: thread %d started after the call (its id reused)", errDirChanged, ev.Pid)
	}
	if !strings.HasPrefix(dir, "/") {
		// A pipe, a socket, an anonymous inode: the descriptor was a
		// directory at the call (it succeeded), so it was replaced.
		return "", fmt.Errorf("%w: %s is %q, not a directory", errDirChanged, link, dir)
	}
	if strings.HasSuffix(dir, " (deleted)") {
		// The kernel's mark of a removed directory, or a name that ends
		// so: a live directory has links.
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err != nil || st.Nlink == 0 {
			return "", fmt.Errorf("look up the directory: %s was removed", link)
		}
	}
	return dir, nil
}

// endsAs reports whether dir ends as the kernel's path kernel does: its
// components from the last, each equal, or cut by the kernel to
// bpf.ComponentCut bytes; a kernel path without "…" in front must match
// dir whole, and "…/" (no component walked) matches any directory.
func endsAs(dir, kernel string) bool {
	cut := strings.HasPrefix(kernel, "…")
	got := components(dir)
	want := components(strings.TrimPrefix(kernel, "…"))
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

// components splits an absolute path into its components ("/": none).
func components(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
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
// attack makes). A thread, process or descriptor gone before the lookup
// (a short-lived mkdir a/b, a descriptor closed at once) is not:
// legitimate tools do that all the time, and its name is checked as text
// only. A server that means to escape the check can do the same (exit,
// or close the descriptor, at once), as it can remove the symlink at
// once: a check after the call cannot stop it.
func unresolvableDir(err error) string {
	switch {
	case errors.Is(err, errDirChanged):
		return "every change by name is checked: this one's name is relative to a working directory or directory descriptor that named another directory when it was looked up after the call"
	case errors.Is(err, unix.ENAMETOOLONG):
		return "every change by name is checked: this one's name is relative to a directory deeper than a path can name (PATH_MAX), which cannot be resolved"
	}
	return ""
}
