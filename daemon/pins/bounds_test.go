package pins

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// A server that lists more tools than MaxTools has the rest refused
// (Full), whatever the policy; what is pinned stays, other keys are not
// affected, and the bound holds after a restart.
func TestStoreIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pins.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	check := func(s *Store, key string, i int, quarantine bool) Verdict {
		t.Helper()
		v, _, err := s.Check(key, fmt.Sprintf("t%05d", i), def(t, fmt.Sprintf(`{"name":"t%05d"}`, i)), quarantine, now)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i := range MaxTools {
		if v := check(s, "flood", i, false); v != PinnedNew {
			t.Fatalf("tool %d: %v, want PinnedNew", i, v)
		}
	}
	for _, quarantine := range []bool{false, true} {
		if v := check(s, "flood", MaxTools, quarantine); v != Full {
			t.Fatalf("tool past the bound (quarantine %v): %v, want Full", quarantine, v)
		}
	}
	if _, ok := s.Get("flood", fmt.Sprintf("t%05d", MaxTools)); ok {
		t.Fatal("a tool past the bound was kept")
	}
	if v := check(s, "flood", 0, true); v != Pinned {
		t.Fatalf("a pinned tool of a full key: %v, want Pinned", v)
	}
	if v := check(s, "other", MaxTools, false); v != PinnedNew {
		t.Fatalf("another key: %v, want PinnedNew", v)
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.List(map[string]bool{"flood": true})); n != MaxTools {
		t.Fatalf("after a restart, %d tools pinned, want %d", n, MaxTools)
	}
	if v := check(s, "flood", MaxTools+1, false); v != Full {
		t.Fatalf("after a restart, a tool past the bound: %v, want Full", v)
	}
}

// The number of keys is bounded too.
func TestStoreKeysAreBounded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "pins.json"))
	if err != nil {
		t.Fatal(err)
	}
	d := def(t, `{"name":"t"}`)
	for i := range MaxKeys {
		if v, _, _ := s.Check(fmt.Sprintf("srv%d", i), "t", d, false, time.Now()); v != PinnedNew {
			t.Fatalf("key %d: %v", i, v)
		}
	}
	if v, _, _ := s.Check("one-too-many", "t", d, false, time.Now()); v != Full {
		t.Fatalf("a key past the bound: %v, want Full", v)
	}
}

// A save writes the file without the lock that lookups take: a check and
// a lookup of another server go on while a save is held before its write.
func TestSaveDoesNotBlockLookups(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "pins.json"))
	if err != nil {
		t.Fatal(err)
	}
	d := def(t, `{"name":"t"}`)
	if v, _, _ := s.Check("other", "t", d, false, time.Now()); v != PinnedNew {
		t.Fatal(v)
	}
	if v, _, _ := s.Check("busy", "t", d, false, time.Now()); v != PinnedNew {
		t.Fatal(v)
	}
	stalled, release := make(chan struct{}), make(chan struct{})
	stallSave = func() { close(stalled); <-release }
	defer func() { stallSave = func() {} }()
	saved := make(chan error)
	go func() { saved <- s.Save() }()
	<-stalled
	looked := make(chan bool)
	go func() {
		_, ok := s.Get("other", "t")
		v, _, _ := s.Check("other", "t", d, false, time.Now())
		looked <- ok && v == Pinned
	}()
	select {
	case ok := <-looked:
		if !ok {
			t.Error("the lookups during a save found nothing")
		}
	case <-time.After(10 * time.Second): // a deadline, not a wait: it passes at once
		t.Error("a lookup waited for a save to write the file")
	}
	close(release)
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
}
