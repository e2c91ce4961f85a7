package userservers

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/fscred"
)

// Cred is who a mount source is opened as.
type Cred struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

// CredOf returns uid's credentials from the user database: gid is the
// primary group the caller runs with, the supplementary groups are the
// user's.
func CredOf(uid, gid uint32) Cred {
	c := Cred{UID: uid, GID: gid}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return c
	}
	ids, _ := u.GroupIds()
	for _, s := range ids {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c
}

// ErrSourceDenied is returned when the user could not open a mount source
// themselves.
var ErrSourceDenied = errors.New("not accessible to you")

// OpenSource opens a mount source the way the user would: path is
// resolved by the kernel with the user's file-system credentials, so
// every directory on the way (a symlink's target included) needs the
// user's search permission, and the object itself needs read (and, for
// writable, write) permission. Magic links (/proc/PID/fd/N, /proc/PID/root)
// and procfs objects are refused.
//
// The result is an O_PATH file: the object the check was made on. Mount
// it or compare against it; a later swap of path cannot change it.
func OpenSource(path string, c Cred, writable bool) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread takes the user's file-system credentials: it must
		// never run another goroutine, so it stays locked and ends with
		// this one.
		runtime.LockOSThread()
		f, err := openAs(path, c, writable)
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

func openAs(path string, c Cred, writable bool) (*os.File, error) {
	if c.UID != 0 || c.GID != 0 {
		if err := fscred.Take(fscred.Cred(c)); err != nil {
			return nil, fmt.Errorf("mount source %s: cannot check it as the user: %w", path, err)
		}
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, sourceErr(path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	// AT_EACCESS: checked with this thread's fsuid, fsgid and groups
	// (plain access(2) would use the real uid: root).
	err = unix.Faccessat2(fd, "", unix.R_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
	if err == nil && writable {
		// EROFS is the daemon's view (systemd's ProtectHome=read-only),
		// not a permission: the sandbox's mount carries its own flags.
		if err = unix.Faccessat2(fd, "", unix.W_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS); errors.Is(err, unix.EROFS) {
			err = nil
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, sourceErr(path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil || fs.Type == unix.PROC_SUPER_MAGIC {
		_ = f.Close()
		return nil, fmt.Errorf("mount source %s: procfs cannot be mounted", path)
	}
	return f, nil
}

func sourceErr(path string, err error) error {
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("mount source %s is %w (checked as you, on every directory of its path)", path, ErrSourceDenied)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("mount source %s goes through a /proc magic link or a symlink loop: name the real path", path)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("mount source %s does not exist", path)
	}
	return fmt.Errorf("mount source %s: %w", path, err)
}

// Where returns the path of an opened source as this process sees it.
func Where(f *os.File) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	if st.Nlink == 0 {
		return "", fmt.Errorf("mount source %s was deleted", f.Name())
	}
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}
