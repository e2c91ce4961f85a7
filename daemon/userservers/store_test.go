package userservers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(1000, "mine", Server{Command: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(1000, "mine")
	if err != nil || got.Name != "mine" || got.Command[0] != "x" || got.Network != "none" || got.Pids != config.DefaultPids {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := s.Get(1001, "mine"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another uid sees the server: %v", err)
	}
	if l, _ := s.List(1000); len(l) != 1 {
		t.Fatalf("List = %v", l)
	}
	if err := s.Remove(1000, "mine"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(1000, "mine"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.Put(1000, "b", Server{Command: []string{"x"}, Network: "wide"}); err == nil {
		t.Fatal("invalid network stored")
	}
	if l, _ := s.List(1000); len(l) != 0 {
		t.Fatalf("List after refused Put = %v", l)
	}
}

// A stored definition that no longer passes never runs, but can be removed.
func TestStoreInvalidStored(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(1000, "ok", Server{Command: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.path(1000))
	b = []byte(strings.Replace(string(b), `"servers": {`, `"servers": {"stale": {"command": ["x"], "egress": ["0.0.0.0/0:443"]},`, 1))
	if err := os.WriteFile(s.path(1000), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(1000, "stale"); err == nil || !strings.Contains(err.Error(), "no longer passes validation") {
		t.Fatalf("Get stale: %v", err)
	}
	if l, _ := s.List(1000); len(l) != 1 || l[0].Name != "ok" {
		t.Fatalf("List = %v", l)
	}
	if err := s.Remove(1000, "stale"); err != nil {
		t.Fatal(err)
	}
}

// TestStoreImages: the images of every user's servers, each once, and an
// error (not an empty answer) when a user's file cannot be read.
func TestStoreImages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "u")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	puts := []struct {
		uid  uint32
		name string
		srv  Server
	}{
		{1000, "gh", Server{Image: "ghcr.io/github/github-mcp-server:latest"}},
		{1000, "local", Server{Command: []string{"x"}}},
		{1001, "gh2", Server{Image: "ghcr.io/github/github-mcp-server:latest"}},
		{1001, "other", Server{Image: "docker.io/library/alpine:3"}},
	}
	for _, p := range puts {
		if _, err := s.Put(p.uid, p.name, p.srv); err != nil {
			t.Fatal(err)
		}
	}
	must := func(want []string) {
		t.Helper()
		got, err := s.Images()
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Images = %v, %v; want %v", got, err, want)
		}
	}
	must([]string{"docker.io/library/alpine:3", "ghcr.io/github/github-mcp-server:latest"})
	if err := os.WriteFile(filepath.Join(dir, "1002.json.tmp"), []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	must([]string{"docker.io/library/alpine:3", "ghcr.io/github/github-mcp-server:latest"})
	if err := s.Remove(1001, "other"); err != nil {
		t.Fatal(err)
	}
	must([]string{"ghcr.io/github/github-mcp-server:latest"})
	if err := os.WriteFile(filepath.Join(dir, "1003.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Images(); err == nil {
		t.Fatalf("Images with an unreadable user file = %v, want an error", got)
	}
}

// TestStoreLimits: a new name past MaxServersPerUser and a definition
// larger than MaxServerBytes are refused with a message naming the limit;
// replacing a stored server and another user's adds still work.
func TestStoreLimits(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxServersPerUser {
		if _, err := s.Put(1000, fmt.Sprintf("s%d", i), Server{Command: []string{"x"}}); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	_, err = s.Put(1000, "one-more", Server{Command: []string{"x"}})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), fmt.Sprintf("the most one user may store is %d", MaxServersPerUser)) {
		t.Fatalf("add past the limit: %v", err)
	}
	if _, err := s.Put(1000, "s0", Server{Command: []string{"y"}}); err != nil {
		t.Fatalf("replacing a stored server at the limit: %v", err)
	}
	if _, err := s.Put(1001, "mine", Server{Command: []string{"x"}}); err != nil {
		t.Fatalf("another user's add: %v", err)
	}
	if err := s.Remove(1000, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(1000, "one-more", Server{Command: []string{"x"}}); err != nil {
		t.Fatalf("add after a remove: %v", err)
	}

	big := Server{Command: []string{"x"}, Env: map[string]string{"BIG": strings.Repeat("v", MaxServerBytes)}}
	_, err = s.Put(1001, "big", big)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxServerBytes)) {
		t.Fatalf("add of a %d-byte env: %v", MaxServerBytes, err)
	}
	if _, err := s.Get(1001, "big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused server stored: %v", err)
	}
}

// TestStoreUndo: Undo of a Put restores what the Put replaced exactly (a
// definition the rules refuse today included), removes a name the Put
// added, and leaves a change made since as it is.
func TestStoreUndo(t *testing.T) {
	orig := Server{Command: []string{"orig"}, Env: map[string]string{"A": "1"}, Workdir: "/w", Mounts: []Mount{{Source: "/src", Target: "/dst", Writable: true}}}
	stale := Server{Command: []string{"x"}, Egress: []string{"0.0.0.0/0:443"}} // refused by Put today
	next := Server{Command: []string{"next"}}
	later := Server{Command: []string{"later"}}
	other := Server{Command: []string{"other"}}
	for _, tc := range []struct {
		name   string
		before *Server              // stored as "x" before the Put; nil: none
		since  func(s *Store) error // between the Put and its undo
		want   *Server              // "x" after the undo; nil: none
	}{
		{name: "added name removed", want: nil},
		{name: "replaced definition restored", before: &orig, want: &orig},
		{name: "stale definition restored", before: &stale, want: &stale},
		{name: "later put stands", before: &orig, want: &later,
			since: func(s *Store) error { _, err := s.Put(1000, "x", later); return err }},
		{name: "removal since stands", before: &orig, want: nil,
			since: func(s *Store) error { return s.Remove(1000, "x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			stored := map[string]Server{"other": other}
			if tc.before != nil {
				stored["x"] = *tc.before
			}
			if err := s.save(1000, stored); err != nil { // unvalidated, as an older daemon may have
				t.Fatal(err)
			}
			prev, err := s.Put(1000, "x", next)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.before, prev); diff != "" {
				t.Fatalf("Put returned another replaced definition (-want +got):\n%s", diff)
			}
			if tc.since != nil {
				if err := tc.since(s); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Undo(1000, "x", next, prev); err != nil {
				t.Fatal(err)
			}
			m, err := s.load(1000)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]Server{"other": other}
			if tc.want != nil {
				want["x"] = *tc.want
			}
			if diff := cmp.Diff(want, m); diff != "" {
				t.Fatalf("stored after the undo (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStoreLookupNotBlocked: while one user's add waits on its file (a
// FIFO nobody writes yet: the add holds that user's lock, reading), another
// user's lookup of their own server answers.
func TestStoreLookupNotBlocked(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(2000, "mine", Server{Command: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(s.path(1000), 0o600); err != nil {
		t.Fatal(err)
	}
	added := make(chan error, 1)
	go func() {
		_, err := s.Put(1000, "slow", Server{Command: []string{"x"}})
		added <- err
	}()
	// The FIFO opens for writing once the add has it open for reading,
	// under uid 1000's lock.
	var w *os.File
	testenv.WaitFor(t, "the add to open its file", 10*time.Second, func() (bool, string) {
		fd, err := unix.Open(s.path(1000), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, err.Error()
		}
		w = os.NewFile(uintptr(fd), "fifo")
		return true, ""
	})
	got := make(chan error, 1)
	go func() { _, err := s.Get(2000, "mine"); got <- err }()
	var lookup error
	select {
	case lookup = <-got:
	case <-time.After(10 * time.Second):
		t.Error("uid 2000's lookup waited on uid 1000's add")
		defer func() { // answered once the add is done
			if err := <-got; err != nil {
				t.Errorf("lookup: %v", err)
			}
		}()
	}
	if lookup != nil {
		t.Errorf("lookup: %v", lookup)
	}
	if _, err := w.WriteString(`{"version": 2, "servers": {}}`); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if err := <-added; err != nil {
		t.Fatalf("the slow add: %v", err)
	}
}

// TestDefinition: Get marks a server with the digest of its stored
// definition, which changes exactly when the definition does (an answer
// given in its session is kept only while it is the same).
func TestDefinition(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	base := Server{Command: []string{"x"}, Env: map[string]string{"A": "1", "B": "2"}}
	for _, tc := range []struct {
		name string
		next Server
		same bool
	}{
		{"added again as it was", Server{Command: []string{"x"}, Env: map[string]string{"B": "2", "A": "1"}}, true},
		{"another command", Server{Command: []string{"y"}, Env: base.Env}, false},
		{"another environment", Server{Command: []string{"x"}, Env: map[string]string{"A": "1", "B": "3"}}, false},
		{"a mount more", Server{Command: []string{"x"}, Env: base.Env, Mounts: []Mount{{Source: "/srv", Target: "/srv"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Put(1000, "mine", base); err != nil {
				t.Fatal(err)
			}
			before, err := s.Get(1000, "mine")
			if err != nil || before.Definition != Digest(base) || before.Definition == "" {
				t.Fatalf("Get = %q, %v; want the digest %q", before.Definition, err, Digest(base))
			}
			if _, err := s.Put(1000, "mine", tc.next); err != nil {
				t.Fatal(err)
			}
			after, err := s.Get(1000, "mine")
			if err != nil {
				t.Fatal(err)
			}
			if got := after.Definition == before.Definition; got != tc.same || got != Same(base, tc.next) {
				t.Fatalf("definition unchanged = %v, Same = %v, want %v", got, Same(base, tc.next), tc.same)
			}
		})
	}
}

// TestDigestIsStable pins the digest of one definition: consents are
// bound to it (api.Consent.Definition) and stored for good, so a change
// to the stored form (a field added without omitempty, another encoding)
// would silently leave every consent for a user's own server covering
// nothing (found by a red-team helper). Change it only with a migration
// of the consents.
func TestDigestIsStable(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  Server
		want string
	}{
		{"command", Server{Command: []string{"npx", "-y", "@modelcontextprotocol/server-everything"}, Env: map[string]string{"B": "2", "A": "1"}},
			"fceddba607f2fcda1bb5015791fa6403c0fa022d138981aa2323a46137a17042"},
		{"image", Server{Image: "ghcr.io/acme/tool:1", Args: []string{"--x"}, Mounts: []Mount{{Source: "/srv/a", Target: "/a", Writable: true}}},
			"ee1bf11d76ff2613fc8507e2562f0b8e02e06c7633b31ab11ed4166c2dd9d53a"},
		{"remote", Server{URL: "https://mcp.example/mcp", Hosts: []string{"auth.example"}}, "ca881dabf3bc8b812034ad97f596094e804dbcd5362e78536b4132b0266dd5eb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Digest(tc.srv); got != tc.want {
				t.Errorf("Digest = %s, want %s", got, tc.want)
			}
		})
	}
}
