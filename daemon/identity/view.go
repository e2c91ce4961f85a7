package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrDisguised is returned when the shim's parent is not the program its
// executable's path names: it runs in a mount namespace of its own user
// namespace, where another file sits at that path (any user can make one,
// unshare -Urm, and bind-mount a file of theirs over a trusted agent's
// path), or with code loaded into it by the dynamic loader.
var ErrDisguised = errors.New("the process that started mcpcage run is not the program its path names")

// userMounts reports whether pid's mount namespace belongs to a user
// namespace other than mcpcaged's: one an unprivileged user may have made,
// in which a bind mount can put any file at any path. The mount
// namespaces of services and of setuid helpers (systemd's PrivateTmp,
// snaps) belong to mcpcaged's user namespace, and their paths name the
// host's files.
func userMounts(pid int) (bool, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("read agent %d mount namespace: %w", pid, ErrGone)
	}
	defer func() { _ = unix.Close(fd) }()
	owner, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		return false, fmt.Errorf("read the owner of agent %d mount namespace: %w", pid, err)
	}
	defer func() { _ = unix.Close(owner) }()
	var a, b unix.Stat_t
	if err := unix.Fstat(owner, &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/user", &b); err != nil {
		return false, err
	}
	return a.Dev != b.Dev || a.Ino != b.Ino, nil
}

// sameFileHere reports whether fi (a stat of what a process runs or
// reads) is the file at p as mcpcaged sees it: "" when it is, else why
// not.
func sameFileHere(p string, fi *unix.Stat_t) string {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return fmt.Sprintf("%s does not exist outside its mount namespace", p)
	}
	defer func() { _ = unix.Close(fd) }()
	var here unix.Stat_t
	if err := unix.Fstat(fd, &here); err != nil || here.Dev != fi.Dev || here.Ino != fi.Ino {
		return fmt.Sprintf("it is not the file at %s outside its mount namespace (one of its own user namespace, where any file can be mounted at any path)", p)
	}
	return ""
}

// exeHere checks the executable of pid, whose path it names as exe, when
// pid runs in a mount namespace of its own user namespace.
func exeHere(pid int, exe string) error {
	own, err := userMounts(pid)
	if err != nil || !own {
		return err
	}
	var fi unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &fi); err != nil {
		return fmt.Errorf("read agent %d executable: %w", pid, ErrGone)
	}
	if why := sameFileHere(exe, &fi); why != "" {
		return fmt.Errorf("%w: its executable %s: %s", ErrDisguised, exe, why)
	}
	return nil
}

// loaderInjected returns a variable in pid's environment that loads
// other code into a compiled agent before its own: one of loader (the
// dynamic loader, iconv, OpenSSL), ELECTRON_RUN_AS_NODE (an Electron app
// becomes node, running any script) or a NODE_OPTIONS that loads code
// (Electron honours it). Interpreters check theirs, with their own
// variables, in script.
func loaderInjected(pid int) (string, error) {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "", fmt.Errorf("read agent %d environment: %w", pid, ErrGone)
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		switch {
		case v == "":
		case slices.Contains(loader, k), k == "ELECTRON_RUN_AS_NODE":
			return k, nil
		case k == "NODE_OPTIONS" && !nodeOptionsHarmless(v):
			return k, nil
		}
	}
	return "", nil
}

// maxLinks bounds the symbolic links followed in a script's path (the
// kernel's own limit).
const maxLinks = 40

// resolveRootLinks resolves p (absolute) inside root component by
// component, as the kernel would, and returns the path with every
// symbolic link replaced by its target. Each link on the way must be
// root's, in a directory that is root's alone: whoever can change a link
// could point the path elsewhere between the interpreter's start and the
// daemon's look (start it on a file of theirs, then turn the link to a
// trusted script). why says which link fails, or why p cannot be
// resolved.
func resolveRootLinks(root *os.File, p string) (resolved, why string) {
	todo := strings.Split(p, "/")
	cur, links := "/", 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fd, err := unix.Openat2(int(root.Fd()), next, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return "", fmt.Sprintf("cannot resolve %s (%v)", next, err)
		}
		var fi unix.Stat_t
		err = unix.Fstat(fd, &fi)
		target := ""
		if err == nil && fi.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, err = readlinkFD(fd)
		}
		_ = unix.Close(fd)
		if err != nil {
			return "", fmt.Sprintf("cannot resolve %s (%v)", next, err)
		}
		if fi.Mode&unix.S_IFMT != unix.S_IFLNK {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Sprintf("cannot resolve %s: too many symbolic links", p)
		}
		if fi.Uid != 0 {
			return "", fmt.Sprintf("symbolic link %s is not root's (uid %d): it could have pointed elsewhere when the interpreter started", next, fi.Uid)
		}
		if why := rootOnly(root, cur); why != "" {
			return "", fmt.Sprintf("symbolic link %s is in a directory others can change (%s): it could have pointed elsewhere when the interpreter started", next, why)
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, ""
}

// readlinkFD reads the symbolic link fd (opened O_PATH|O_NOFOLLOW).
func readlinkFD(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
