package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The observation programs linger after Load and after the last session
// for Options.ObserverLinger: a session that starts meanwhile finds the
// same links attached (no detach and attach, about 2 s of RCU grace
// periods here), the session that ended did not wait for a detach, and
// once the linger is over the host stops paying for them.
func TestObserversLinger(t *testing.T) {
	const linger = 2 * time.Second
	c, parent := loadWith(t, Options{ObserverLinger: linger})
	obsPins := func() []string {
		pins, _ := filepath.Glob(filepath.Join(c.pinDir, observerPin+"*"))
		return pins
	}
	// Load attached them to check the kernel takes them; they linger,
	// unpinned: with no session to enforce, a daemon that dies takes
	// them with it.
	if !c.Observing() || len(obsPins()) != 0 {
		t.Fatalf("right after Load: observing=%v, pins %v; want them lingering, unpinned", c.Observing(), obsPins())
	}
	detached := func(what string) {
		t.Helper()
		testenv.WaitFor(t, what, 10*linger, func() (bool, string) {
			return !c.Observing() && len(obsPins()) == 0, fmt.Sprintf("observing=%v, pins %v", c.Observing(), obsPins())
		})
	}
	detached("the observers detached after Load's linger")

	register := func(name string) uint64 {
		t.Helper()
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(dir) })
		cgid, err := CgroupID(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Register(cgid, Policy{}); err != nil {
			t.Fatal(err)
		}
		return cgid
	}
	links := func() []any {
		c.obs.mu.Lock()
		defer c.obs.mu.Unlock()
		out := make([]any, len(c.obs.links))
		for i, l := range c.obs.links {
			out[i] = l
		}
		return out
	}
	first := register("s1")
	if !c.Observing() || len(obsPins()) == 0 {
		t.Fatalf("a registered session: observing=%v, pins %v; want them attached and pinned (kill-on-open outlives the daemon)", c.Observing(), obsPins())
	}
	attached := links()
	if err := c.Unregister(first); err != nil {
		t.Fatal(err)
	}
	if !c.Observing() {
		t.Fatal("the observers were detached at once after the last session; want them lingering")
	}
	if pins := obsPins(); len(pins) != 0 {
		t.Fatalf("lingering observers still pinned: %v", pins)
	}
	c.obs.mu.Lock()
	due := c.obs.idleGen // the first session's linger
	c.obs.mu.Unlock()
	second := register("s2")
	if len(obsPins()) == 0 {
		t.Fatal("the lingering observers were not pinned again for the new session")
	}
	if got := links(); len(got) != len(attached) || got[0] != attached[0] || got[len(got)-1] != attached[len(attached)-1] {
		t.Fatal("a session during the linger attached the observers again; want the lingering links")
	}
	// The linger due when the first session ended is called off: its
	// timer is stopped, and had it fired already, its detach does
	// nothing with the second session registered.
	c.obs.mu.Lock()
	pending := c.obs.idle
	c.obs.mu.Unlock()
	if pending != nil {
		t.Fatal("the first session's linger is still pending under the second session")
	}
	c.lingerOver(due)
	if !c.Observing() {
		t.Fatal("the first session's linger detached the observers under the second session")
	}
	if err := c.Unregister(second); err != nil {
		t.Fatal(err)
	}
	detached("the observers detached after the last session's linger")
}

// Close detaches lingering observers at once, and their pending detach
// does nothing after it.
func TestCloseEndsTheLinger(t *testing.T) {
	testenv.RequireRoot(t)
	c, _ := loadWith(t, Options{ObserverLinger: time.Hour})
	if !c.Observing() {
		t.Fatal("right after Load the observers should linger")
	}
	pinDir := c.pinDir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.Observing() {
		t.Fatal("Close left the observers attached")
	}
	if pins, _ := filepath.Glob(filepath.Join(pinDir, observerPin+"*")); len(pins) != 0 {
		t.Fatalf("Close left observer pins: %v", pins)
	}
	if c.obs.idle != nil {
		t.Fatal("Close left the linger's timer running")
	}
}

// SetObserverLinger (a reload) starts a linger in progress over with the
// new length: 0 detaches the lingering observers at once, a shorter one
// ends it sooner, and the next idle period uses the new length.
func TestSetObserverLingerRestartsTheLinger(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name string
		set  time.Duration
	}{
		{"to zero: detached now", 0},
		{"shorter: detached once it is over", 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := loadWith(t, Options{ObserverLinger: time.Hour})
			if !c.Observing() {
				t.Fatal("right after Load the observers should linger")
			}
			if err := c.SetObserverLinger(tc.set); err != nil {
				t.Fatal(err)
			}
			if got := c.ObserverLinger(); got != tc.set {
				t.Fatalf("ObserverLinger() = %s after SetObserverLinger(%s)", got, tc.set)
			}
			if tc.set == 0 && c.Observing() {
				t.Fatal("a linger set to 0 left the lingering observers attached")
			}
			// An hour's linger would hold them well past this wait.
			testenv.WaitFor(t, "the observers detached with the new linger", 10*time.Second, func() (bool, string) {
				return !c.Observing(), "still observing"
			})
		})
	}
}

// Without a linger (Options.ObserverLinger 0 or less, observer_linger =
// "0s") the observers are detached as soon as no session needs them,
// Load's own check included, and attached again, pinned, for the next.
// The test passes -1: loadWith gives 0 a long linger, and Load treats
// every value up to 0 alike.
func TestObserversDetachAtOnceWithoutLinger(t *testing.T) {
	c, parent := loadWith(t, Options{ObserverLinger: -1}) // loadWith's default for 0 is a long linger
	if c.Observing() {
		t.Fatal("right after Load without a linger: the observers are still attached")
	}
	for _, name := range []string{"first", "second"} {
		dir, cgid := namedSessionForTest(t, c, parent, name, Policy{})
		pins, _ := filepath.Glob(filepath.Join(c.pinDir, observerPin+"*"))
		if !c.Observing() || len(pins) == 0 {
			t.Fatalf("%s session registered: observing=%v, pins %v; want them attached and pinned", name, c.Observing(), pins)
		}
		if err := c.Unregister(cgid); err != nil {
			t.Fatal(err)
		}
		pins, _ = filepath.Glob(filepath.Join(c.pinDir, observerPin+"*"))
		if c.Observing() || len(pins) != 0 {
			t.Fatalf("%s session (%s) unregistered: observing=%v, pins %v; want them detached at once", name, dir, c.Observing(), pins)
		}
	}
}
