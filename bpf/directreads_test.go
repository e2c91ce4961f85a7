package bpf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
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
// told not to, and say why not when they do not.
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := loadWith(t, tt.opts)
			direct, err := c.DirectReads()
			if direct != tt.direct || !errors.Is(err, tt.wantErr) {
				t.Fatalf("DirectReads() = %v, %v; want %v, %v", direct, err, tt.direct, tt.wantErr)
			}
		})
	}
}

// mountTmpfs mounts a tmpfs at dir for the test.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// The kernel's path of an open file crosses mount points on both read
// paths: the event names the whole path, and a denied component above a
// mount point still kills an open below it. The fold key (the dentry,
// mount and inode, read the same two ways) folds repeats of one file and
// not of another.
func TestKernelPathAcrossMounts(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) {
			c, parent := loadWith(t, rp.opts)
			session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
			dir := t.TempDir()
			open := filepath.Join(dir, "open")
			denied := filepath.Join(dir, ".ssh", "keys")
			mountTmpfs(t, open)
			mountTmpfs(t, denied)
			file := filepath.Join(open, "f")
			secret := filepath.Join(denied, "id_ed25519")
			for _, p := range []string{file, secret} {
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
			// 50 opens of the file (one record, the rest folded), then
			// one of the secret below the denied directory's mount.
			err := openThen(t, session, 50, file, secret)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("open of %s across a mount point: %v, want the opener killed (SIGKILL)", secret, err)
			}
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			var ofFile, ofSecret []Event
			for _, e := range opens {
				switch e.Path {
				case file:
					ofFile = append(ofFile, e)
				case secret:
					ofSecret = append(ofSecret, e)
				}
			}
			if len(ofFile) != 1 {
				t.Errorf("%d file.open events with the path %s across its mount point, want 1 (the 49 repeats folded); all: %v", len(ofFile), file, opens)
			}
			if len(ofSecret) != 1 || ofSecret[0].Kind != KindFileDenied || !ofSecret[0].Killed {
				t.Errorf("events of %s: %v, want one file.denied with the opener killed", secret, ofSecret)
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
