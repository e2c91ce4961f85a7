package bpf

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openCall is one of the open system calls, made on name with flags the
// event must report (the caller's, read from its saved registers at the
// call's exit).
type openCall struct {
	name  string
	flags uint32
	open  func(path string) (int, error)
}

// openCalls are the open system calls of this architecture, each with
// flags of its own.
func openCalls() []openCall {
	calls := []openCall{
		{"openat", unix.O_RDONLY | unix.O_CLOEXEC, func(p string) (int, error) {
			return unix.Openat(unix.AT_FDCWD, p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}},
		{"openat2", unix.O_RDONLY | unix.O_NOFOLLOW, func(p string) (int, error) {
			return unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NOFOLLOW})
		}},
	}
	calls = append(calls, legacyOpenCalls()...)
	return calls
}

// Each open system call's event names the file the caller passed (hint)
// and the flags it passed: there is no entry program, the exit reads
// them from the task's saved registers (openat2: from its struct
// open_how). The kernel's path is the file's.
func TestOpenCallsReportTheirArguments(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) { openCallsReportTheirArguments(t, rp.opts) })
	}
}

func openCallsReportTheirArguments(t *testing.T, o Options) {
	c, parent := loadWith(t, o)
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	// Not t.TempDir(): the subtest's name would make a component longer
	// than an event carries.
	dir, err := os.MkdirTemp("", "mcpcage-opencalls")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for _, call := range openCalls() {
		if err := os.WriteFile(filepath.Join(dir, call.name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	got := map[string]Event{} // by hint
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind == KindFileOpen {
			mu.Lock()
			got[e.Hint] = e
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	child(t, "open-calls", 1, session, dir)
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, call := range openCalls() {
		t.Run(call.name, func(t *testing.T) {
			path := filepath.Join(dir, call.name)
			e, ok := got[path]
			if !ok {
				t.Fatalf("no file.open event with hint %q", path)
			}
			if e.Flags != call.flags || e.Path != path || e.Result < 0 {
				t.Fatalf("event flags %#x path %q result %d, want flags %#x path %q and an fd", e.Flags, e.Path, e.Result, call.flags, path)
			}
		})
	}
}

// Every open system call is deny-checked by the one exit program: a
// successful open of a denied file through any of them kills the opener.
func TestEveryOpenCallIsDenyChecked(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) {
			c, parent := loadWith(t, rp.opts)
			session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
			for _, call := range openCalls() {
				t.Run(call.name, func(t *testing.T) {
					secret := deniedFile(t)
					err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-call", "MCPCAGE_BENCH_N=1", "MCPCAGE_BENCH_PATH="+call.name, "MCPCAGE_BENCH_ADDR="+secret)
					if !killed(t, err) {
						t.Fatalf("%s of %s: %v, want the opener killed (SIGKILL)", call.name, secret, err)
					}
				})
			}
		})
	}
}
