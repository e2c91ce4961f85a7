package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// TestUndoServerAdd: an add the audit log could not record is taken back
// (the replaced definition stored again, a new name removed) and answered
// as such; when the undo fails too, the answer and an Error line say so,
// with both errors.
func TestUndoServerAdd(t *testing.T) {
	orig := userservers.Server{Command: []string{"orig"}}
	next := userservers.Server{Command: []string{"next"}}
	auditErr := errors.New("audit log unavailable: no space left on device")
	for _, tc := range []struct {
		name      string
		before    *userservers.Server // "x" before the add; nil: none
		breakFile bool                // the user's file cannot be read back
		want      string              // in the answer
		wantX     *userservers.Server // "x" afterwards; nil: none
		wantLog   string
	}{
		{name: "new", want: "so it was not added: " + auditErr.Error()},
		{name: "replaced", before: &orig, want: "so it was not replaced (your previous definition of x stands): " + auditErr.Error(), wantX: &orig},
		{name: "undo fails", before: &orig, breakFile: true, want: "undoing the add failed too",
			wantLog: "user server stored but neither audited nor undone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := userservers.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			d := &Daemon{userServers: st, log: slog.New(slog.NewTextHandler(&logs, nil))}
			peer := Peer{UID: 1000, GID: 1000}
			if tc.before != nil {
				if _, err := st.Put(peer.UID, "x", *tc.before); err != nil {
					t.Fatal(err)
				}
			}
			prev, err := st.Put(peer.UID, "x", next)
			if err != nil {
				t.Fatal(err)
			}
			if tc.breakFile {
				file := filepath.Join(dir, "1000.json")
				if err := os.Remove(file); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(file, 0o700); err != nil { // read back: EISDIR
					t.Fatal(err)
				}
			}
			got := d.undoServerAdd(peer, "x", next, prev, auditErr)
			if !errors.Is(got, auditErr) || !strings.Contains(got.Error(), tc.want) {
				t.Fatalf("answer %q, want it to hold %q and wrap the audit error", got, tc.want)
			}
			if tc.wantLog != "" {
				line := logs.String()
				if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, tc.wantLog) || !strings.Contains(line, auditErr.Error()) || !strings.Contains(line, "is a directory") {
					t.Fatalf("log %q, want an Error line %q with both errors", line, tc.wantLog)
				}
				return
			}
			if logs.Len() != 0 {
				t.Errorf("unexpected log: %s", logs.String())
			}
			srv, err := st.Get(peer.UID, "x")
			switch {
			case tc.wantX == nil && !errors.Is(err, userservers.ErrNotFound):
				t.Fatalf("x after the undo: %+v, %v; want none", srv, err)
			case tc.wantX != nil && err != nil:
				t.Fatalf("x after the undo: %v", err)
			case tc.wantX != nil:
				if diff := cmp.Diff(tc.wantX.Command, srv.Command); diff != "" {
					t.Fatalf("x after the undo (-want +got):\n%s", diff)
				}
			}
		})
	}
}
