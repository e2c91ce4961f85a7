package userservers

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/mcpcage/mcpcage/config"
)

func TestStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "u"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &config.Server{Command: []string{"x"}}
	if err := srv.Validate("mine"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(1000, srv); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(1000, "mine")
	if err != nil || got.Command[0] != "x" || got.Network != "none" || got.Pids != config.DefaultPids {
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
	bad := &config.Server{Command: []string{"x"}, Network: "wide"}
	if err := bad.Validate("b"); err == nil {
		t.Fatal("invalid network accepted")
	}
}
