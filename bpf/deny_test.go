package bpf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type denyCase struct {
	name   string
	path   string
	killed bool
}

// The kernel reads only the path components whose length a denied name
// has (struct session's deny_lens; lengths from 31 up share one bit): a
// denied name of any length still kills, and a name of the same length
// that differs does not. Both ways of reading the kernel's dentries.
func TestDenyByComponentLength(t *testing.T) {
	names := []string{".ssh", strings.Repeat("a", 30), strings.Repeat("b", 31), strings.Repeat("c", 40), strings.Repeat("d", 47)}
	deny := map[string]int{}
	for i, n := range names {
		deny[n] = i
	}
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) { denyByComponentLength(t, rp.opts, names, deny) })
	}
}

func denyByComponentLength(t *testing.T, o Options, names []string, deny map[string]int) {
	c, parent := loadWith(t, o)
	session, _ := sessionForTest(t, c, parent, Policy{DenyComponents: deny})
	dir := t.TempDir()
	file := func(elem ...string) string {
		p := filepath.Join(append([]string{dir}, elem...)...)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var tests []denyCase
	for _, n := range names {
		same := "x" + n[1:] // same length, another name
		tests = append(tests,
			denyCase{"denied dir " + n[:4] + "…", file(n, "f"), true},
			denyCase{"denied leaf " + n[:4] + "…", file("sub", n), true},
			denyCase{"same length " + same[:4] + "…", file(same, "f"), false},
			denyCase{"longer " + n[:4] + "…", file(n+"z", "f"), len(n) >= 47}, // names are compared on their first 47 bytes
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openThen(t, session, 0, "", tt.path)
			var ee *exec.ExitError
			killed := false
			if errors.As(err, &ee) {
				ws, _ := ee.Sys().(syscall.WaitStatus)
				killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
			} else if err != nil {
				t.Fatal(err)
			}
			if killed != tt.killed {
				t.Errorf("open %s: killed %v, want %v (%v)", tt.path, killed, tt.killed, err)
			}
		})
	}
}
