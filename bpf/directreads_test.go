package bpf

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The two ways the programs read the kernel's files, dentries and
// mounts: direct loads (bpf_rdonly_cast) and helper calls (kernels
// without it). The deny and path tests run on both.
var readPaths = []struct {
	name string
	opts Options
}{
	{"direct", Options{}},
	{"helper", Options{noDirectReads: true}},
}

// This kernel has bpf_rdonly_cast, so the programs read directly unless
// told not to or refused, and say why not when they do not; the build
// loaded either way enforces deny_paths.
func TestDirectReadsReported(t *testing.T) {
	testenv.Require(t, directReadsSupported() == nil, "a kernel with bpf_rdonly_cast (Linux 6.2+)")
	tests := []struct {
		name    string
		opts    Options
		direct  bool
		wantErr error
	}{
		{"default", Options{}, true, nil},
		{"turned off", Options{noDirectReads: true}, false, errTurnedOff},
		{"refused by the kernel", Options{refuseDirect: true}, false, errRefusedForTest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, parent := loadWith(t, tt.opts)
			direct, err := c.DirectReads()
			if direct != tt.direct || !errors.Is(err, tt.wantErr) {
				t.Fatalf("DirectReads() = %v, %v; want %v, %v", direct, err, tt.direct, tt.wantErr)
			}
			// Either build enforces: a denied open kills the opener.
			session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
			if err := openThen(t, session, 0, "", deniedFile(t)); !killed(t, err) {
				t.Fatalf("open of a denied file: %v, want the opener killed (SIGKILL)", err)
			}
		})
	}
}

// privateMounts makes dir a private mount of its own (a bind of itself)
// for the test's mounts below it: none propagates to the host's other
// mounts, and one lazy unmount at the end takes them all away.
func privateMounts(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s onto itself: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatalf("make %s private: %v", dir, err)
	}
}

// sshDeniedWithMounts loads the programs with o, registers a session
// denying ".ssh", and makes a directory for the test's mounts
// (privateMounts).
func sshDeniedWithMounts(t *testing.T, o Options) (c *Cage, session string, cgid uint64, dir string) {
	t.Helper()
	c, parent := loadWith(t, o)
	session, cgid = sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	dir = t.TempDir()
	privateMounts(t, dir)
	return c, session, cgid, dir
}

// mountAt mounts a tmpfs at dir (source "") or binds source there, below
// a privateMounts directory. A tmpfs's root is its own parent; a bound
// subdirectory's root is not, and only the mount's root tells where its
// path leaves it.
func mountAt(t *testing.T, source, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m")
	if source != "" {
		if err = os.MkdirAll(source, 0o755); err == nil {
			err = unix.Mount(source, dir, "", unix.MS_BIND, "")
		}
	}
	if err != nil {
		t.Fatalf("mount at %s: %v", dir, err)
	}
}

// The kernel's path of an open file crosses mount points on both read
// paths, a tmpfs's root and a bound subdirectory: the event names the
// whole path, and a denied component above a mount point still kills an
// open below it. The fold key (the dentry, mount and inode, read the same
// two ways) folds repeats of one file.
func TestKernelPathAcrossMounts(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) {
			c, session, cgid, dir := sshDeniedWithMounts(t, rp.opts)
			bound, tmpfs := filepath.Join(dir, "open"), filepath.Join(dir, ".ssh", "keys")
			mountAt(t, filepath.Join(dir, "src", "sub"), bound)
			mountAt(t, "", tmpfs)
			boundSecret := filepath.Join(dir, ".ssh", "bound")
			mountAt(t, filepath.Join(dir, "plain", "sub"), boundSecret)
			file := filepath.Join(bound, "f")
			secrets := []string{filepath.Join(tmpfs, "id_ed25519"), filepath.Join(boundSecret, "id_rsa")}
			for _, p := range append([]string{file}, secrets...) {
				if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			var mu sync.Mutex
			var opens []Event
			if err := c.Events(func(e Event) {
				if e.Cgroup == cgid && (e.Kind == KindFileOpen || e.Kind == KindFileDenied) {
					mu.Lock()
					opens = append(opens, e)
					mu.Unlock()
				}
			}, func(err error) { t.Error(err) }); err != nil {
				t.Fatal(err)
			}
			// 50 opens of the file (one record, the rest folded), then one
			// of a secret below a mount under the denied directory.
			for i, secret := range secrets {
				n := 0
				if i == 0 {
					n = 50
				}
				if err := openThen(t, session, n, file, secret); !killed(t, err) {
					t.Fatalf("open of %s across a mount point: %v, want the opener killed (SIGKILL)", secret, err)
				}
			}
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			byPath := map[string][]Event{}
			for _, e := range opens {
				byPath[e.Path] = append(byPath[e.Path], e)
			}
			if n := len(byPath[file]); n != 1 {
				t.Errorf("%d file.open events with the path %s across its mount point, want 1 (the 49 repeats folded); all: %v", n, file, opens)
			}
			for _, secret := range secrets {
				if got := byPath[secret]; len(got) != 1 || got[0].Kind != KindFileDenied || !got[0].Killed {
					t.Errorf("events of %s: %v, want one file.denied with the opener killed; all: %v", secret, got, opens)
				}
			}
			folded, err := c.OpensFolded(cgid)
			if err != nil {
				t.Fatal(err)
			}
			// The count is the session's: the child's own start may open
			// some other file twice as well.
			if folded < 49 {
				t.Errorf("the session folded %d opens, want at least the file's 49 repeats", folded)
			}
		})
	}
}

// mountHops is cage.h's MOUNT_HOPS: the mounts the walk crosses at one
// point of a path.
const mountHops = 4

// maxComponents is cage.h's MAX_COMPONENTS: the components an event
// carries.
const maxComponents = len(cageEvent{}.Comp)

// An event names the whole path when the walk reaches the root, and
// otherwise starts with "…" and the components walked. Mounts stacked on
// one directory are crossed one after the other: up to MOUNT_HOPS at one
// point, however many such points the path has (the walk used to take
// 24 steps, a component or a mount each, and then named the part it had
// walked as if it were the whole path); with more at one point, the walk
// stops there, and the deny check goes on above (deny_deep), so a denied
// name there still kills. A path of 16 components is whole (it used to
// be shown cut), one of 17 is cut. Both read paths.
func TestKernelPathWholeOrCut(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) {
			c, session, cgid, dir := sshDeniedWithMounts(t, rp.opts)
			// stacked mounts n tmpfs on top of each other at each of
			// levels, one below the other, under dir/top.
			stacked := func(n int, top string, levels ...string) string {
				at := filepath.Join(dir, top)
				for _, l := range levels {
					at = filepath.Join(at, l)
					for range n {
						mountAt(t, "", at)
					}
				}
				file := filepath.Join(at, "f")
				if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
				return file
			}
			// deep makes a file whose path has n components, under dir/plain.
			deep := func(n int) string {
				p := filepath.Join(dir, "plain", "deep"+strconv.Itoa(n))
				for i := strings.Count(p, "/"); i < n-1; i++ {
					p = filepath.Join(p, "d")
				}
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				file := filepath.Join(p, "f")
				if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
				return file
			}
			deep17 := deep(maxComponents + 1)
			var mu sync.Mutex
			paths := map[string][]Event{} // by the hint: the name the opener gave
			if err := c.Events(func(e Event) {
				if e.Cgroup == cgid && (e.Kind == KindFileOpen || e.Kind == KindFileDenied) {
					mu.Lock()
					paths[e.Hint] = append(paths[e.Hint], e)
					mu.Unlock()
				}
			}, func(err error) { t.Error(err) }); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name   string
				file   string
				path   string // the event's; "" for the file's own
				killed bool
			}{
				{"as many as the walk crosses", stacked(mountHops, "plain", "at-most"), "", false},
				{"as many at four points, one below the other", stacked(mountHops, "plain", "a", "b", "c", "d"), "", false},
				{"one more: the walk stops there", stacked(mountHops+1, "plain", "more"), "…/f", false},
				{"as many below a denied name", stacked(mountHops, ".ssh", "at-most"), "", true},
				{"one more below a denied name: deny_deep finds it", stacked(mountHops+1, ".ssh", "more"), "…/f", true},
				{"16 components", deep(maxComponents), "", false},
				{"17 components", deep17, "…/" + strings.SplitN(deep17, "/", 3)[2], false},
			}
			for _, tt := range tests {
				if err := openThen(t, session, 0, "", tt.file); killed(t, err) != tt.killed {
					t.Errorf("%s: open of %s ended with %v, want killed %v", tt.name, tt.file, err, tt.killed)
				}
			}
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, tt := range tests {
				want := cmp.Or(tt.path, tt.file)
				got := paths[tt.file]
				if len(got) != 1 || got[0].Path != want || got[0].Killed != tt.killed {
					t.Errorf("%s: events %v, want one with the path %q (killed %v)", tt.name, got, want, tt.killed)
				}
			}
		})
	}
}
