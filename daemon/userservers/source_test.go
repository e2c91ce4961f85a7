package userservers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestOpenSource checks sources as uid 65534 against a tree of root's.
func TestOpenSource(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(filepath.Dir(base), 0o755)) // MkdirTemp's 0700
	must(os.Chmod(base, 0o755))
	closed := filepath.Join(base, "closed") // 0700: its 0644 file is out of reach
	open := filepath.Join(base, "open")
	for _, d := range []string{closed, open} {
		must(os.Mkdir(d, 0o755))
		must(os.WriteFile(filepath.Join(d, "f.txt"), []byte("x"), 0o644))
	}
	must(os.Chmod(closed, 0o700))
	must(os.WriteFile(filepath.Join(open, "private.txt"), []byte("x"), 0o600))
	must(os.Symlink(filepath.Join(closed, "f.txt"), filepath.Join(open, "link")))
	must(os.Mkdir(filepath.Join(open, "mine"), 0o755))
	must(os.Chown(filepath.Join(open, "mine"), 65534, 65534))

	nobody := Cred{UID: 65534, GID: 65534}
	tests := []struct {
		name     string
		path     string
		cred     Cred
		writable bool
		want     string // "" = opens
	}{
		{"readable file", filepath.Join(open, "f.txt"), nobody, false, ""},
		{"0644 file in a 0700 directory", filepath.Join(closed, "f.txt"), nobody, false, "not accessible to you"},
		{"the 0700 directory", closed, nobody, false, "not accessible to you"},
		{"0600 file of root's", filepath.Join(open, "private.txt"), nobody, false, "not accessible to you"},
		{"symlink into the 0700 directory", filepath.Join(open, "link"), nobody, false, "not accessible to you"},
		{"read-only directory asked rw", open, nobody, true, "not accessible to you"},
		{"own directory rw", filepath.Join(open, "mine"), nobody, true, ""},
		{"magic link", "/proc/self/root" + open, nobody, false, "magic link"},
		{"procfs", "/proc/self/status", Cred{}, false, "procfs"},
		{"root reaches everything", filepath.Join(closed, "f.txt"), Cred{}, false, ""},
		{"missing", filepath.Join(open, "nope"), nobody, false, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := OpenSource(tt.path, tt.cred, tt.writable)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("OpenSource: %v", err)
				}
				where, err := Where(f)
				_ = f.Close()
				real, _ := filepath.EvalSymlinks(tt.path)
				if err != nil || where != real {
					t.Fatalf("Where = %q, %v; want %q", where, err, real)
				}
				return
			}
			if err == nil {
				_ = f.Close()
				t.Fatalf("OpenSource opened %s", tt.path)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
			if tt.want == "not accessible to you" && !errors.Is(err, ErrSourceDenied) {
				t.Fatalf("error %v is not ErrSourceDenied", err)
			}
		})
	}
	// The daemon's own threads keep root's credentials.
	if _, err := os.ReadDir(closed); err != nil {
		t.Fatalf("the caller lost its credentials: %v", err)
	}
}
