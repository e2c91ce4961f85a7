package pins

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A server that lists more tools than MaxTools has the rest refused
// (Full), whatever the policy; what is pinned stays, other keys are not
// affected, and the bound holds after a restart.
func TestStoreIsBounded(t *testing.T) {
	s, path := openTemp(t)
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
	s, err := Open(path)
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

// Each user's own servers have a share of their own: a user who fills
// theirs (keys, or bytes with big definitions) leaves the
// administrator's servers and other users' free, even after a restart;
// removing a server (Forget) gives its share back.
func TestUsersFillOnlyTheirOwnShare(t *testing.T) {
	s, path := openTemp(t)
	small := def(t, `{"name":"t"}`)
	for i := range MaxUserKeys {
		if v, _, _ := s.Check(Key(fmt.Sprintf("mine%d", i), 1000, true), "t", small, false, time.Now()); v != PinnedNew {
			t.Fatalf("user key %d: %v", i, v)
		}
	}
	big := def(t, fmt.Sprintf(`{"name":"big","description":%q}`, strings.Repeat("x", 200<<10)))
	for i := 0; ; i++ {
		v, _, _ := s.Check(Key("mine0", 1000, true), fmt.Sprintf("big%d", i), big, false, time.Now())
		if v == Full {
			break
		}
		if i > MaxUserBytes/(200<<10)+1 {
			t.Fatal("a user's bytes are not bounded")
		}
	}
	tests := []struct {
		name, key string
		def       Definition
		want      Verdict
	}{
		{"the same user's new server", Key("one-more", 1000, true), small, Full},
		{"the same user's server, a big tool", Key("mine0", 1000, true), big, Full},
		{"an administrator's server, a big tool", Key("github", 0, false), big, PinnedNew},
		{"another user's server, a big tool", Key("theirs", 1001, true), big, PinnedNew},
	}
	for _, reopen := range []bool{false, true} {
		if reopen {
			if err := s.Save(); err != nil {
				t.Fatal(err)
			}
			var err error
			if s, err = Open(path); err != nil {
				t.Fatal(err)
			}
		}
		for _, tt := range tests {
			tool := fmt.Sprintf("new-%v", reopen)
			if v, _, _ := s.Check(tt.key, tool, tt.def, false, time.Now()); v != tt.want {
				t.Errorf("%s (reopened %v): %v, want %v", tt.name, reopen, v, tt.want)
			}
		}
	}
	s.Forget(Key("mine0", 1000, true))
	if v, _, _ := s.Check(Key("one-more", 1000, true), "t", small, false, time.Now()); v != PinnedNew {
		t.Fatalf("after a server is forgotten, the user's new server: %v, want PinnedNew", v)
	}
	if _, ok := s.Get(Key("mine0", 1000, true), "t"); ok {
		t.Fatal("a forgotten server's pins are still there")
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

// A list that changed nothing of its own server's pins does not wait for
// a save of another server's (found by a red-team helper: a user's server
// changing 32 large tools at every list took other sessions' tools/list
// to 0.3-0.4 s), and a change made after a save's snapshot is written by
// a save of its own.
func TestSaveForWaitsOnlyForItsOwnServer(t *testing.T) {
	s, path := openTemp(t)
	d := def(t, `{"name":"t"}`)
	if v, _, _ := s.Check("other", "t", d, false, time.Now()); v != PinnedNew {
		t.Fatal(v)
	}
	if err := s.SaveFor("other"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := s.Check("busy", "t", d, false, time.Now()); v != PinnedNew {
		t.Fatal(v)
	}
	var writes atomic.Int32
	stalled, release := make(chan struct{}), make(chan struct{})
	stallSave = func() {
		if writes.Add(1) == 1 {
			close(stalled)
			<-release
		}
	}
	defer func() { stallSave = func() {} }()
	busySaved := make(chan error, 1)
	go func() { busySaved <- s.SaveFor("busy") }()
	<-stalled
	// other's list checks its pins again and changes nothing.
	if v, _, _ := s.Check("other", "t", d, false, time.Now()); v != Pinned {
		t.Fatal(v)
	}
	otherSaved := make(chan error, 1)
	go func() { otherSaved <- s.SaveFor("other") }()
	select {
	case err := <-otherSaved:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a deadline, not a wait: it passes at once
		t.Fatal("a list that changed nothing of its server's pins waited for another server's save")
	}
	// A change after busy's snapshot waits for that save, then writes.
	if v, _, _ := s.Check("other", "t2", def(t, `{"name":"t2"}`), false, time.Now()); v != PinnedNew {
		t.Fatal(v)
	}
	go func() { otherSaved <- s.SaveFor("other") }()
	close(release)
	for _, ch := range []chan error{busySaved, otherSaved} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes, want 2 (busy's, then other's change made after its snapshot)", n)
	}
	reopened, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ key, tool string }{{"busy", "t"}, {"other", "t"}, {"other", "t2"}} {
		if _, ok := reopened.Get(k.key, k.tool); !ok {
			t.Errorf("pin %s/%s not in the file", k.key, k.tool)
		}
	}
	// Nothing changed since: no write at all.
	if err := s.SaveFor("busy"); err != nil || writes.Load() != 2 {
		t.Fatalf("a save with nothing changed: %v, %d writes", err, writes.Load())
	}
}

// TestFailedSaveIsRetriedByAnyList: a change whose write failed, and a
// Forget (which belongs to no key), reach the file with the next list of
// any server, as before SaveFor (found by a red-team helper of the
// change: lists of other servers skipped them, so a removed server's
// pins came back after a restart and a server's first-use pins were lost).
func TestFailedSaveIsRetriedByAnyList(t *testing.T) {
	s, path := openTemp(t)
	d := def(t, `{"name":"t"}`)
	now := time.Now()
	for _, k := range []string{"gone@1000", "other", "fresh@1000"} {
		if v, _, _ := s.Check(k, "t", d, false, now); v != PinnedNew {
			t.Fatal(v)
		}
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	// A transient failure (disk full, EIO): simulated by a missing dir.
	good := s.path
	s.path = filepath.Join(t.TempDir(), "missing", "pins.json")
	s.Forget("gone@1000") // forgetPinsWhenUnused: then d.pins.Save()
	if err := s.Save(); err == nil {
		t.Fatal("save did not fail")
	}
	if v, _, _ := s.Check("fresh@1000", "t2", def(t, `{"name":"t2"}`), false, now); v != PinnedNew {
		t.Fatal(v)
	}
	if err := s.SaveFor("fresh@1000"); err == nil { // savePins of that session: fails, logged
		t.Fatal("save did not fail")
	}
	s.path = good // the disk is fine again
	// Every other session's lists go on: each calls SaveFor(its key).
	for i := 0; i < 3; i++ {
		for _, k := range []string{"other", "gone@1000"} {
			if v, _, _ := s.Check("other", "t", d, false, now); v != Pinned {
				t.Fatal(v)
			}
			if err := s.SaveFor(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	// mcpcaged restarts (no save at shutdown).
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("gone@1000", "t"); ok {
		t.Error("the forgotten server's pins are back after a restart: Forget's write never reached the file")
	}
	if _, ok := r.Get("fresh@1000", "t2"); !ok {
		t.Error("fresh@1000/t2 (pinned on first use) never reached the file")
	}
}
