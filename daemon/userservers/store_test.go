package userservers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/config"
)

func TestStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(1000, "mine", Server{Command: []string{"x"}}); err != nil {
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
	if err := s.Put(1000, "b", Server{Command: []string{"x"}, Network: "wide"}); err == nil {
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
	if err := s.Put(1000, "ok", Server{Command: []string{"x"}}); err != nil {
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
