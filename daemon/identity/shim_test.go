package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestCheckDirect(t *testing.T) {
	const since = 1000
	forked := func(execs int) Stamp { return Stamp{Forker: 42, ForkerStart: 7, Start: 3000, Exec: 3001, Execs: execs} }
	tests := []struct {
		name       string
		shim       Stamp
		shimOK     bool
		launchers  bool
		refused    bool
		unverified string // a prefix of the binding it leaves, "" for none
	}{
		{"exec'd once: mcpcage, started by its agent", forked(1), true, false, false, ""},
		{"exec'd twice: a launcher ran first", forked(2), true, false, true, ""},
		{"exec'd twice, launchers allowed", forked(2), true, true, false, "unverified: mcpcage run was not started by its agent directly: its process exec'd 2 programs"},
		{"never exec'd since its fork: the agent's own copy", forked(0), true, false, true, ""},
		{"never exec'd, launchers allowed", forked(0), true, true, true, ""},
		{"an exec under way", func() Stamp { s := forked(1); s.Pending = true; return s }(), true, false, true, ""},
		{"forked and exec'd before the record: bind decides", Stamp{Start: 500, Exec: 600}, true, false, false, ""},
		// Its execs since the fork were not counted; a genuine shim's
		// fork and exec are microseconds apart.
		{"forked before the record, exec'd since", Stamp{Start: 500, Exec: 1500}, true, false, true, ""},
		{"forked before the record, exec'd since, launchers allowed", Stamp{Start: 500, Exec: 1500}, true, true, false, "unverified: mcpcage run was not started by its agent directly: it was forked before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := checkDirect(tt.shim, tt.shimOK, ShimRule{Launchers: tt.launchers}, since, "/usr/bin/agent")
			if tt.refused != (err != nil) || (err != nil && (!errors.Is(err, ErrNotDirect) || !Refused(err))) {
				t.Fatalf("err = %v, want refused: %v (ErrNotDirect)", err, tt.refused)
			}
			if (tt.unverified == "") != (b == "") || !strings.HasPrefix(b, tt.unverified) {
				t.Fatalf("binding %q, want %q", b, tt.unverified)
			}
			if err != nil && !strings.Contains(err.Error(), "mcpcage") {
				t.Fatalf("the refusal %q does not say what to do", err)
			}
		})
	}
}

// A JDK spawns every child through its jspawnhelper (posix_spawn, the
// default since Java 12), which then execs the program: a shim exec'd
// twice, first by the agent's own JDK's helper, is the agent's spawn, as
// long as no one but root can change that helper.
func TestCheckDirectJavaSpawnHelper(t *testing.T) {
	testenv.RequireRoot(t) // the helper must be root's
	for _, tc := range []struct {
		name    string
		layout  string // where the helper lies, from the JDK's top
		mode    uint32
		refused bool
	}{
		{"java.home/lib/jspawnhelper, root's", "lib/jspawnhelper", 0o755, false},
		{"an IDE's jbr/lib/jspawnhelper, root's", "jbr/lib/jspawnhelper", 0o755, false},
		{"a helper its group may change", "lib/jspawnhelper", 0o775, true},
		{"another program of the JDK's", "lib/other", 0o755, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			agent := filepath.Join(top, "bin", "java")
			helper := filepath.Join(top, tc.layout)
			for _, p := range []string{agent, helper} {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(helper, os.FileMode(tc.mode)); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(helper, &st); err != nil {
				t.Fatal(err)
			}
			shim := Stamp{Forker: 42, ForkerStart: 7, Start: 3000, Exec: 3001, Execs: 2, FirstDev: st.Dev, FirstIno: st.Ino}
			_, err := checkDirect(shim, true, ShimRule{}, 1000, agent)
			if tc.refused != errors.Is(err, ErrNotDirect) || (!tc.refused && err != nil) {
				t.Fatalf("err = %v, want refused: %v", err, tc.refused)
			}
		})
	}
}
