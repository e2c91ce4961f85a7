package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestBind(t *testing.T) {
	const (
		since  = 1000
		parent = 42
		ticks  = 7 // the parent's start in clock ticks: 70 ms
		pstart = ticks*tick + 5
	)
	// shim is a stamp of a shim forked at start by the parent.
	shim := func(start uint64) Stamp {
		return Stamp{Start: start, Exec: start + 1, Forker: parent, ForkerStart: pstart}
	}
	tests := []struct {
		name     string
		parent   Stamp
		parentOK bool
		shim     Stamp
		shimOK   bool
		lost     Lost
		refused  error // ErrBorrowed, ErrNotParent or nil
		binding  string
	}{
		{"exec before fork", Stamp{Start: pstart, Exec: 2000}, true, shim(3000), true, Lost{}, nil, BoundKernel},
		{"exec after fork", Stamp{Start: pstart, Exec: 4000}, true, shim(3000), true, Lost{}, ErrBorrowed, ""},
		{"exec at fork time", Stamp{Start: pstart, Exec: 3000}, true, shim(3000), true, Lost{}, ErrBorrowed, ""},
		{"parent exec'd after an unstamped shim", Stamp{Start: pstart, Exec: 2000}, true, Stamp{}, false, Lost{}, ErrBorrowed, ""},
		{"parent older than the record", Stamp{}, false, shim(3000), true, Lost{}, nil, BoundKernel},
		{"both older than the record", Stamp{}, false, Stamp{}, false, Lost{}, nil, "unverified"},
		{"shim forked before the record", Stamp{}, false, Stamp{Start: 500, Exec: 1500}, true, Lost{}, nil, "unverified"},
		{"lost stamps, parent unstamped", Stamp{}, false, shim(3000), true, Lost{Execs: 2}, nil, "unverified"},
		// A failed exec stamp leaves the old one: any loss after the
		// parent's stamp was written distrusts it; losses before do not.
		{"exec lost after the parent's stamp", Stamp{Start: pstart, Exec: 2000, Lost: 3}, true, shim(3000), true, Lost{Execs: 4}, nil, "unverified"},
		{"exec lost before the parent's stamp", Stamp{Start: pstart, Exec: 2000, Lost: 4}, true, shim(3000), true, Lost{Execs: 4}, nil, BoundKernel},
		// clone(CLONE_PARENT) by a child of the agent, or a subreaper
		// agent that inherited an orphaned shim.
		{"forked by another process", Stamp{Start: pstart, Exec: 2000}, true,
			Stamp{Start: 3000, Exec: 3001, Forker: 43, ForkerStart: pstart}, true, Lost{}, ErrNotParent, ""},
		{"forked by an earlier process with the parent's pid", Stamp{Start: pstart, Exec: 2000}, true,
			Stamp{Start: 3000, Exec: 3001, Forker: parent, ForkerStart: pstart - 1}, true, Lost{}, ErrNotParent, ""},
		{"forked by an earlier process with the parent's pid, parent unstamped", Stamp{}, false,
			Stamp{Start: 3000, Exec: 3001, Forker: parent, ForkerStart: pstart + tick}, true, Lost{}, ErrNotParent, ""},
		{"no fork record for a shim forked since", Stamp{Start: pstart, Exec: 2000}, true,
			Stamp{Start: 3000, Exec: 3001}, true, Lost{Forks: 1}, ErrNotParent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bind(binding{parent: tt.parent, parentOK: tt.parentOK, shim: tt.shim, shimOK: tt.shimOK,
				parentPID: parent, parentTicks: ticks, since: since, lost: tt.lost})
			switch {
			case tt.refused == nil && err != nil, tt.refused != nil && !errors.Is(err, tt.refused):
				t.Fatalf("err = %v, want %v", err, tt.refused)
			case err != nil && !Refused(err):
				t.Fatalf("Refused(%v) = false", err)
			}
			if !strings.HasPrefix(b, tt.binding) || (tt.binding == "" && b != "") {
				t.Fatalf("binding %q, want %q", b, tt.binding)
			}
		})
	}
}

// In a nested pid namespace (systemd-nspawn, a container) the record's
// pids are the initial namespace's, not /proc's: the forker is matched by
// its start time alone.
func TestBindNestedPIDNamespace(t *testing.T) {
	const pstart = 7*tick + 5
	parent := Stamp{Start: pstart, Exec: 2000}
	for _, tc := range []struct {
		name    string
		shim    Stamp
		refused bool
	}{
		{"the parent forked it", Stamp{Start: 3000, Exec: 3001, Forker: 30541, ForkerStart: pstart}, false},
		{"another process forked it", Stamp{Start: 3000, Exec: 3001, Forker: 30542, ForkerStart: pstart + 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bind(binding{parent: parent, parentOK: true, shim: tc.shim, shimOK: true,
				parentPID: 853, parentTicks: 7, since: 1000, nestedPIDNS: true})
			if tc.refused != errors.Is(err, ErrNotParent) || (!tc.refused && b != BoundKernel) {
				t.Fatalf("binding %q, err %v; want refused %v", b, err, tc.refused)
			}
		})
	}
}
