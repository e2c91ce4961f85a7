package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf/probe"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func loadForTest(t *testing.T) (*Cage, string) {
	t.Helper()
	return loadWith(t, Options{})
}

// loadWith is loadForTest with options (the cgroup and pin directory are
// the test's own).
func loadWith(t testing.TB, o Options) (*Cage, string) {
	t.Helper()
	testenv.RequireRoot(t)
	root := probe.CgroupV2Root()
	testenv.Require(t, root != "", "cgroup v2")
	testenv.Require(t, probe.EnsureTracefs() == nil, "tracefs")
	// A cgroup and a pin directory of this test's own, so that test runs
	// sharing the machine never meet (the temporary directory's base is
	// only a counter within this process: the pid tells runs apart).
	unique := fmt.Sprintf("mcpcage-unit-%d-%s", os.Getpid(), filepath.Base(t.TempDir()))
	parent := filepath.Join(root, unique)
	pins := filepath.Join("/sys/fs/bpf", unique)
	o.CgroupParent, o.PinDir = parent, pins
	if o.ObserverLinger == 0 {
		// Detaching the observers waits for the kernel's grace periods,
		// one tracepoint at a time (about 1.6 s for all of them here):
		// Load's own check attaches them, and they stay attached until
		// Close, unless the test asks for a linger (negative: detach as
		// soon as no session needs them).
		o.ObserverLinger = time.Hour
	}
	c, err := Load(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(c.Close(), os.Remove(parent), os.RemoveAll(pins)); err != nil {
			t.Errorf("left behind: %v", err)
		}
	})
	return c, parent
}

// sessionForTest makes a session cgroup under parent and registers it.
func sessionForTest(t *testing.T, c *Cage, parent string, p Policy) (dir string, cgid uint64) {
	t.Helper()
	return namedSessionForTest(t, c, parent, "s1", p)
}

// namedSessionForTest is sessionForTest with the cgroup's name: a test's
// second session.
func namedSessionForTest(t *testing.T, c *Cage, parent, name string, p Policy) (dir string, cgid uint64) {
	t.Helper()
	dir = filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("session cgroup left behind: %v", err)
		}
	})
	cgid, err := CgroupID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Register(cgid, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Unregister(cgid); err != nil {
			t.Errorf("session left in the maps: %v", err)
		}
	})
	return dir, cgid
}

// deniedFile makes DIR/.ssh/id_ed25519 and returns its path.
func deniedFile(t *testing.T) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), ".ssh", "id_ed25519")
	if err := os.MkdirAll(filepath.Dir(secret), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("key"), 0o644); err != nil {
		t.Fatal(err)
	}
	return secret
}

// openThen runs the test binary in cgroup session: n opens of first
// ("": /etc/hostname), then one of path.
func openThen(t *testing.T, session string, n int, first, path string) error {
	t.Helper()
	return runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-then", "MCPCAGE_BENCH_N="+strconv.Itoa(n), "MCPCAGE_BENCH_PATH="+path, "MCPCAGE_BENCH_ADDR="+first)
}

// killed says whether a child's run (runChildIn, openThen) ended by
// SIGKILL; any other error than an exit fails the test.
func killed(t *testing.T, err error) bool {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ee == nil {
		return false
	}
	ws, _ := ee.Sys().(syscall.WaitStatus)
	return ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// runChildIn runs the test binary's loop child (TestMain) with env added,
// placed in cgroup session from its start, and returns how it ended.
func runChildIn(t *testing.T, session string, env ...string) error {
	t.Helper()
	cmd, release := loopChild(t, session, env...)
	defer release()
	return cmd.Run()
}

// acceptAndClose serves ln by closing every connection.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}

func TestRegisterAndUnregister(t *testing.T) {
	c, parent := loadForTest(t)
	if c.Level() != 2 {
		t.Fatalf("session level %d for parent %s, want 2", c.Level(), parent)
	}
	if pins, _ := os.ReadDir(c.pinDir); len(pins) != 4 {
		t.Fatalf("%d pinned links, want 4", len(pins))
	}
	rules := []EgressRule{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Ports: []uint16{443}},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Ports: []uint16{80}},
		{Prefix: netip.MustParsePrefix("::1/128")},
	}
	for _, cgid := range []uint64{101, 202} {
		if err := c.Register(cgid, Policy{HostNetwork: true, Egress: rules, DenyComponents: map[string]int{".ssh": 0, ".aws": 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if s, e, d := c.Counts(); s != 2 || e != 6 || d != 4 {
		t.Fatalf("counts = %d sessions, %d egress, %d deny; want 2, 6, 4", s, e, d)
	}
	// The /16 inherits the /8's port: the LPM trie answers with one entry.
	var v cagePorts
	k := cageLpm4{Prefixlen: 64 + 16, Addr: [4]byte{10, 1, 0, 0}}
	putCgid(k.Cgid[:], 101)
	if err := c.objs.Egress4.Lookup(&k, &v); err != nil || v.N != 2 || v.Port[0] != 80 || v.Port[1] != 443 {
		t.Fatalf("10.1.0.0/16 ports = %+v, %v; want 80 and 443", v, err)
	}
	if err := c.SetEgress(101, rules[:1]); err != nil {
		t.Fatal(err)
	}
	for _, cgid := range []uint64{101, 202} {
		if err := c.Unregister(cgid); err != nil {
			t.Fatal(err)
		}
	}
	if s, e, d := c.Counts(); s+e+d != 0 {
		t.Fatalf("after unregister: %d sessions, %d egress, %d deny", s, e, d)
	}
	if err := c.SetEgress(1, []EgressRule{{Prefix: netip.MustParsePrefix("1.2.3.4/32"), Ports: []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9}}}); err == nil {
		t.Fatal("9 ports for one range accepted")
	}
	if err := c.Unregister(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(3, Policy{DenyComponents: map[string]int{string(make([]byte, 60)): 0}}); err == nil {
		t.Fatal("over-long deny component accepted")
	}
	if err := c.Unregister(3); err != nil {
		t.Fatal(err)
	}
}

func TestAttachSettled(t *testing.T) {
	other := errors.New("some other failure")
	for _, tc := range []struct {
		name    string
		fails   int   // tries that fail with failure
		failure error // what they fail with
		tries   int   // how many tries attachSettled makes
		wantErr error
	}{
		{"attached at once", 0, nil, 1, nil},
		{"the previous link released after a few tries", 3, fmt.Errorf("cannot create bpf perf link: %w", unix.EEXIST), 4, nil},
		{"another error is not tried again", 1, other, 1, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			_, err := attachSettled(func() (link.Link, error) {
				tries++
				if tries <= tc.fails {
					return nil, tc.failure
				}
				return nil, nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || tries != tc.tries {
				t.Errorf("err %v after %d tries, want %v after %d", err, tries, tc.wantErr, tc.tries)
			}
		})
	}
}
