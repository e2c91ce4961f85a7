package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
			if got := killed(t, err); got != tt.killed {
				t.Errorf("open %s: killed %v, want %v (%v)", tt.path, got, tt.killed, err)
			}
		})
	}
}

// A denied name far above the opened file still kills: the walk's first
// MAX_COMPONENTS components go into the event, the deny check goes on
// above them (deny_deep), through mount points too. Both read paths.
func TestDenyAboveDeepPaths(t *testing.T) {
	// deep is elem, then n directories, then the file "key": a name
	// right after elem is then component n+2 counted from the file.
	deep := func(n int, elem ...string) string {
		for i := 1; i <= n; i++ {
			elem = append(elem, fmt.Sprintf("d%d", i))
		}
		return filepath.Join(append(elem, "key")...)
	}
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) {
			_, session, _, dir := sshDeniedWithMounts(t, rp.opts)
			mountAt(t, filepath.Join(dir, "src"), filepath.Join(dir, ".ssh", "m"))
			for _, tt := range []denyCase{
				{"the denied name 16th from the file (the walk's last)", deep(14, dir, ".ssh"), true},
				{"the denied name 17th from the file (deny_deep's first)", deep(15, dir, ".ssh"), true},
				{"the denied name 42nd from the file", deep(40, dir, ".ssh"), true},
				{"a mount point 16th, the denied name 17th", deep(14, dir, ".ssh", "m"), true},
				{"a mount point 42nd, the denied name 43rd", deep(40, dir, ".ssh", "m"), true},
				{"as deep, no denied name", deep(40, dir, "plain"), false},
			} {
				t.Run(tt.name, func(t *testing.T) {
					if err := os.MkdirAll(filepath.Dir(tt.path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(tt.path, nil, 0o644); err != nil {
						t.Fatal(err)
					}
					err := openThen(t, session, 0, "", tt.path)
					if got := killed(t, err); got != tt.killed {
						t.Errorf("open %s: killed %v, want %v (%v)", tt.path, got, tt.killed, err)
					}
				})
			}
		})
	}
}
