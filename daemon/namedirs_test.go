package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf"
)

func TestEndsAs(t *testing.T) {
	long := strings.Repeat("x", 60)
	tests := []struct {
		dir, kernel string
		want        bool
	}{
		{"/work/a/b", "/work/a/b", true},
		{"/work/a/b", "/work/a/c", false},
		{"/work/a/b", "/a/b", false}, // not cut: whole or nothing
		{"/work/a/b", "…/a/b", true},
		{"/work/a/b", "…/work/a/b", true},
		{"/a/b", "…/work/a/b", false},
		{"/work/z/b", "…/a/b", false},
		{"/work/" + long + "/b", "/work/" + long[:bpf.ComponentCut] + "/b", true},
		{"/work/" + long[:bpf.ComponentCut-1] + "y/b", "/work/" + long[:bpf.ComponentCut] + "/b", false},
		{"/work/" + long[:bpf.ComponentCut-2] + "/b", "/work/" + long[:bpf.ComponentCut-3] + "/b", false}, // shorter than the cut: equal or nothing
		{"/work/b", "…/work/" + long[:bpf.ComponentCut] + "/b", false},
		{"/work/b", "…/", true}, // no component walked
		{"/", "…/", true},
		{"/", "/", true},
		{"/work", "/", false},
	}
	for _, tt := range tests {
		if got := endsAs(tt.dir, tt.kernel); got != tt.want {
			t.Errorf("endsAs(%q, %q) = %v, want %v", tt.dir, tt.kernel, got, tt.want)
		}
	}
}

// The directories of a change's names, for a process (this one) whose
// descriptor 'a' names dir/a and working directory is dir.
func TestNameDirs(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a, err := unix.Open(filepath.Join(dir, "a"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(a) }()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Chdir(wd) }()
	// A thread with a working directory of its own, dir/b (clone without
	// CLONE_FS), alive until the test ends.
	own := make(chan int)
	done := make(chan struct{})
	defer close(done)
	go func() {
		runtime.LockOSThread() // for good: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			t.Error(err)
			close(own)
			return
		}
		if err := unix.Chdir(filepath.Join(dir, "b")); err != nil {
			t.Error(err)
			close(own)
			return
		}
		own <- unix.Gettid()
		<-done
	}()
	ownTid, ok := <-own
	if !ok {
		t.FailNow()
	}
	// A descriptor number that is not a directory (a pipe).
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(pipe[0]); _ = unix.Close(pipe[1]) }()
	// A directory deeper than PATH_MAX, by a descriptor.
	deep, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 200)
	for i := 0; i < 25; i++ {
		if err := unix.Mkdirat(deep, long, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(deep, long, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		_ = unix.Close(deep)
		deep = next
	}
	defer func() { _ = unix.Close(deep) }()
	me := uint32(os.Getpid())
	runtime.LockOSThread() // (not the thread of the working directory of its own)
	defer runtime.UnlockOSThread()
	self := unix.Gettid()
	cutA := "…/" + filepath.Base(dir) + "/a"
	tests := []struct {
		name  string
		ev    bpf.Event
		names []string // resolvableNames
		err   string   // resolvableNames' error: "" none, "gone", "changed", "too deep"
		to    string   // newNamePath
	}{
		{"the kernel's path, whole, for both names", bpf.Event{Tgid: me, Dir: "/x/y", Hint: "f", NewHint: "g", Dirfd: int32(a), NewDirfd: int32(a)},
			[]string{"/x/y/f", "/x/y/g"}, "", "/x/y/g"},
		{"the new name's own directory, looked up", bpf.Event{Tgid: me, Dir: "/x/y", Hint: "f", NewHint: "g", Dirfd: int32(a), NewDirfd: unix.AT_FDCWD},
			[]string{"/x/y/f", dir + "/g"}, "", dir + "/g"},
		{"a cut path, looked up and matching", bpf.Event{Tgid: me, Dir: cutA, DirCut: true, Hint: "l/f", Dirfd: int32(a), NewDirfd: int32(a)},
			[]string{dir + "/a/l/f"}, "", ""},
		{"a cut path the descriptor no longer names", bpf.Event{Tgid: me, Dir: "…/elsewhere/a", DirCut: true, Hint: "l/f", Dirfd: int32(a), NewDirfd: int32(a)},
			nil, "changed", ""},
		{"a cut path, the working directory", bpf.Event{Tgid: me, Dir: "…/" + filepath.Base(dir), DirCut: true, Hint: "b/f", Dirfd: unix.AT_FDCWD, NewDirfd: unix.AT_FDCWD},
			[]string{dir + "/b/f"}, "", ""},
		{"a closed descriptor", bpf.Event{Tgid: me, Dir: "/x/y", Hint: "f", NewHint: "g", Dirfd: int32(a), NewDirfd: 1 << 20},
			[]string{"/x/y/f"}, "gone", "g"},
		{"absolute names need no directory", bpf.Event{Tgid: me, Dir: "/x", Hint: "/p/f", NewHint: "/q/g", Dirfd: 1 << 20, NewDirfd: 1 << 20},
			[]string{"/p/f", "/q/g"}, "", "/q/g"},
		{"a process that is gone", bpf.Event{Tgid: 1 << 30, Dir: cutA, DirCut: true, Hint: "f", Dirfd: int32(a), NewDirfd: int32(a)},
			nil, "gone", ""},
		{"a directory deeper than PATH_MAX", bpf.Event{Tgid: me, Dir: "…/" + long[:bpf.ComponentCut], DirCut: true, Hint: "l/f", Dirfd: int32(deep), NewDirfd: int32(deep)},
			nil, "too deep", ""},
		{"the calling thread's own working directory", bpf.Event{Tgid: me, Pid: uint32(ownTid), Dir: "…/" + filepath.Base(dir) + "/b", DirCut: true, Hint: "l/f", Dirfd: unix.AT_FDCWD, NewDirfd: unix.AT_FDCWD},
			[]string{dir + "/b/l/f"}, "", ""},
		// (the process's working directory, dir, would match: the thread's does not)
		{"not the process's working directory", bpf.Event{Tgid: me, Pid: uint32(ownTid), Dir: "…/" + filepath.Base(dir), DirCut: true, Hint: "l/f", Dirfd: unix.AT_FDCWD, NewDirfd: unix.AT_FDCWD},
			nil, "changed", ""},
		{"a descriptor that is no longer a directory", bpf.Event{Tgid: me, Dir: cutA, DirCut: true, Hint: "l/f", Dirfd: int32(pipe[0]), NewDirfd: int32(pipe[0])},
			nil, "changed", ""},
		{"a thread that started after the call", bpf.Event{Tgid: me, Time: time.Now().Add(-time.Hour * 24 * 365 * 30), Dir: cutA, DirCut: true, Hint: "l/f", Dirfd: int32(a), NewDirfd: int32(a)},
			nil, "changed", ""},
		{"no component walked: any directory", bpf.Event{Tgid: me, Dir: "…/", DirCut: true, Hint: "l/f", Dirfd: int32(a), NewDirfd: int32(a)},
			[]string{dir + "/a/l/f"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The calling thread: this one (sharing the process's working
			// directory and descriptors), unless named.
			if tt.ev.Pid == 0 {
				tt.ev.Pid = uint32(self)
			}
			if tt.ev.Time.IsZero() {
				tt.ev.Time = time.Now()
			}
			names, err := resolvableNames(tt.ev)
			if strings.Join(names, " ") != strings.Join(tt.names, " ") {
				t.Errorf("resolvableNames = %q, want %q", names, tt.names)
			}
			why := unresolvableDir(err)
			switch tt.err {
			case "":
				if err != nil {
					t.Errorf("resolvableNames error %v, want none", err)
				}
			case "gone":
				if err == nil || why != "" {
					t.Errorf("resolvableNames error %v (a hit: %q), want one that is not a hit", err, why)
				}
			case "changed":
				if !errors.Is(err, errDirChanged) || !strings.Contains(why, "named another directory") {
					t.Errorf("resolvableNames error %v (a hit: %q), want errDirChanged, a hit", err, why)
				}
			case "too deep":
				if !errors.Is(err, unix.ENAMETOOLONG) || !strings.Contains(why, "PATH_MAX") {
					t.Errorf("resolvableNames error %v (a hit: %q), want ENAMETOOLONG, a hit", err, why)
				}
			}
			if got := newNamePath(tt.ev); got != tt.to {
				t.Errorf("newNamePath = %q, want %q", got, tt.to)
			}
		})
	}
}
