package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("gh"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unset = %v", err)
	}
	if err := s.Set("gh", "tok-123\n"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("gh"); err != nil || v != "tok-123\n" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	st, _ := os.Stat(filepath.Join(dir, "gh"))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v", st.Mode())
	}
	if d, _ := os.Stat(dir); d.Mode().Perm() != 0o700 {
		t.Fatalf("store mode %v", d.Mode())
	}
	for _, bad := range []string{"../x", "", "a/b", ".hidden"} {
		if err := s.Set(bad, "v"); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if names, _ := s.Names(); len(names) != 1 || names[0] != "gh" {
		t.Fatalf("Names = %v", names)
	}
	if err := s.Remove("gh"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("gh"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove = %v", err)
	}
}
