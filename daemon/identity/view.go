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

// foreignView reports whether pid may see the file system otherwise than
// mcpcaged, where a path can name a file of the agent's user's choosing:
// a user namespace other than mcpcaged's (CAP_SYS_CHROOT there lets an
// unprivileged process chroot into a tree of its own, without a mount
// namespace), a mount namespace that belongs to one (unshare -Urm, a bind
// mount over any path), or a root directory that is not mcpcaged's. The
// mount namespaces of services and setuid helpers (systemd's PrivateTmp,
// snaps) belong to mcpcaged's user namespace, keep its root, and their
// paths name the host's files.
func foreignView(pid int) (bool, error) {
	var own, self unix.Stat_t
	for _, l := range []string{"ns/user", "root"} {
		if err := unix.Stat(fmt.Sprintf("/proc/%d/%s", pid, l), &own); err != nil {
			return false, fmt.Errorf("read agent %d %s: %w", pid, l, ErrGone)
		}
		if err := unix.Stat("/proc/self/"+l, &self); err != nil {
			return false, err
		}
		if own.Dev != self.Dev || own.Ino != self.Ino {
			return true, nil
		}
	}
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
	if err := unix.Fstat(owner, &own); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/user", &self); err != nil {
		return false, err
	}
	return own.Dev != self.Dev || own.Ino != self.Ino, nil
}

// inOwnMounts checks that link of pid ("exe", "cwd": a file it holds)
// lies on a mount of pid's own mount namespace. A process can run, or
// stand in, a file of another namespace it can reach (cd
// /proc/OTHER/root/..., where OTHER bind-mounted a file of its user's
// over a trusted path): its path then reads as the trusted one, from
// outside as from inside, while the file is not.
func inOwnMounts(pid int, link string) error {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, fmt.Sprintf("/proc/%d/%s", pid, link), 0, unix.STATX_MNT_ID, &stx); err != nil {
		return fmt.Errorf("read agent %d %s: %w", pid, link, ErrGone)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return nil // a kernel without mount ids (before 5.8): not checked
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return fmt.Errorf("read agent %d mounts: %w", pid, ErrGone)
	}
	want := fmt.Sprint(stx.Mnt_id)
	for _, line := range strings.Split(string(b), "\n") {
		if id, _, ok := strings.Cut(line, " "); ok && id == want {
			return nil
		}
	}
	name := map[string]string{"exe": "executable", "cwd": "working directory"}[link]
	return fmt.Errorf("%w: its %s lies in another mount namespace than its own (reached through /proc/PID/root or a passed descriptor), where its path may name another file", ErrDisguised, name)
}

// sameFileHere reports whether fi (a stat of what a process runs or
// reads) is the file at p as mcpcaged sees it: "" when it is, else why
// not.
func sameFileHere(p string, fi *unix.Stat_t) string {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return fmt.Sprintf("%s does not exist outside its view of the file system", p)
	}
	defer func() { _ = unix.Close(fd) }()
	var here unix.Stat_t
	if err := unix.Fstat(fd, &here); err != nil || here.Dev != fi.Dev || here.Ino != fi.Ino {
		return fmt.Sprintf("it is not the file at %s outside its view of the file system (a user namespace, mount namespace or root of its own, where any file can sit at any path)", p)
	}
	return ""
}

// exeHere checks the executable of pid, whose path it names as exe, when
// pid may see the file system otherwise than mcpcaged (foreignView).
func exeHere(pid int, exe string) error {
	if err := inOwnMounts(pid, "exe"); err != nil {
		return err
	}
	foreign, err := foreignView(pid)
	if err != nil || !foreign {
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

// loaderInjected returns a variable of env (the agent's environment at
// exec) that loads other code into a compiled agent before its own: one
// of loader (the dynamic loader, iconv, OpenSSL), of compiledRunsOther,
// or a NODE_OPTIONS that loads code (Electron and node's single
// executables honour it). Interpreters check theirs, with their own
// variables, in script.
func loaderInjected(env []byte) string {
	for _, kv := range bytes.Split(env, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		switch {
		case v == "":
		case slices.Contains(loader, k), slices.Contains(compiledRunsOther, k):
			return k
		case k == "NODE_OPTIONS" && !nodeOptionsHarmless(v):
			return k
		}
	}
	return ""
}

// compiledRunsOther are variables that make a compiled agent run another
// program than its own: an Electron app as node (ELECTRON_RUN_AS_NODE),
// a bun-compiled executable as the bun CLI (BUN_BE_BUN), or with bun's
// extra options (BUN_OPTIONS: --preload ...).
var compiledRunsOther = []string{"ELECTRON_RUN_AS_NODE", "BUN_BE_BUN", "BUN_OPTIONS"}

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
		var fs unix.Statfs_t
		err = unix.Fstat(fd, &fi)
		if err == nil {
			err = unix.Fstatfs(fd, &fs)
		}
		target := ""
		if err == nil && fs.Type != unix.PROC_SUPER_MAGIC && fi.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, err = readlinkFD(fd)
		}
		_ = unix.Close(fd)
		if err != nil {
			return "", fmt.Sprintf("cannot resolve %s (%v)", next, err)
		}
		if fs.Type == unix.PROC_SUPER_MAGIC {
			// /proc's links read differently for each reader
			// (/proc/self/cwd is mcpcaged's own here): a script there
			// cannot be resolved as the interpreter resolved it.
			return "", fmt.Sprintf("its path goes through /proc (%s), whose links name what the reader has, not what the interpreter had", next)
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
