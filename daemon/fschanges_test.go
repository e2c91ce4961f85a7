package daemon

import (
	"os"
	"testing"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/renames"
)

// A deletion or attribute change that fanotify saw a session's thread
// make is checked against the session's deny_paths where the kernel acted
// (the sandbox's path of it); a hit ends the session on the record, as
// does a change that could not be resolved; changes elsewhere, of other
// sessions, or of a thread id another cgroup now holds, are not.
func TestCheckFsChanges(t *testing.T) {
	ssh := []string{"**/.ssh/**"}
	const tid = 4242
	tests := []struct {
		name        string
		change      renames.Change
		cgroupsPath string // the session's ("": not checked)
		record      audit.Record
		killed      string
	}{
		{
			name:   "a key removed",
			change: renames.Change{Op: renames.OpDelete, Path: "/host/proj/.ssh/id_ed25519"},
			record: audit.Record{"type": "file.unlink", "path": "/work/.ssh/id_ed25519", "touched": "/work/.ssh/id_ed25519",
				"rule": "deny_paths **/.ssh/**", "action": "session stopped", "pid": uint32(tid)},
			killed: `it removed /work/.ssh/id_ed25519, which deny_paths rule "**/.ssh/**" forbids`,
		},
		{
			name:   "the denied directory removed",
			change: renames.Change{Op: renames.OpDelete, Dir: true, Path: "/host/proj/.ssh"},
			record: audit.Record{"type": "file.rmdir", "path": "/work/.ssh", "touched": "/work/.ssh",
				"rule": "deny_paths **/.ssh/**", "action": "session stopped", "pid": uint32(tid)},
			killed: `it removed /work/.ssh, which deny_paths rule "**/.ssh/**" forbids`,
		},
		{
			name:   "a key's mode changed",
			change: renames.Change{Op: renames.OpAttrib, Path: "/host/proj/.ssh/id_ed25519"},
			record: audit.Record{"type": "file.attrib", "path": "/work/.ssh/id_ed25519", "touched": "/work/.ssh/id_ed25519",
				"rule": "deny_paths **/.ssh/**", "action": "session stopped", "pid": uint32(tid)},
			killed: `it changed the attributes of /work/.ssh/id_ed25519, which deny_paths rule "**/.ssh/**" forbids`,
		},
		{
			name:   "a removal that could not be resolved",
			change: renames.Change{Op: renames.OpDelete, Err: "open the directory by its handle: stale file handle"},
			record: audit.Record{"type": "file.unlink", "action": "session stopped", "pid": uint32(tid),
				"rule": "every deletion and attribute change is checked: the directory where one was made could not be resolved (open the directory by its handle: stale file handle)"},
			killed: "it removed a file in a directory that could not be resolved (open the directory by its handle: stale file handle), and every deletion and attribute change is checked",
		},
		{
			name:   "a flood of changes",
			change: renames.Change{Op: renames.OpFlood},
			record: audit.Record{"type": "file.flood", "action": "session stopped", "pid": uint32(tid), "rule": floodRule},
			killed: "its file changes took the shared change checker more than 250ms of a second to resolve (a flood)",
		},
		{name: "elsewhere in the mount", change: renames.Change{Op: renames.OpAttrib, Path: "/host/proj/notes.txt"}},
		{name: "outside the session's mounts", change: renames.Change{Op: renames.OpDelete, Path: "/host/other/.ssh/id_ed25519"}},
		{name: "another session", change: renames.Change{Op: renames.OpDelete, Session: testCgroup + 1, Path: "/host/proj/.ssh/id_ed25519"}},
		{
			// The flood is the session's (the reader charged it by its
			// threads as it read them); the thread named is only its last.
			// Skipped, it left the session flooded for the reader, which
			// drops its changes unchecked from then on, and running.
			name:        "a flood whose last thread's id another cgroup holds now",
			change:      renames.Change{Op: renames.OpFlood, Tid: uint32(os.Getpid())},
			cgroupsPath: "/mcpcage-test/mcpcage-none",
			record:      audit.Record{"type": "file.flood", "action": "session stopped", "pid": uint32(os.Getpid()), "rule": floodRule},
			killed:      "its file changes took the shared change checker more than 250ms of a second to resolve (a flood)",
		},
		{
			name:        "a thread id another cgroup holds now",
			change:      renames.Change{Op: renames.OpDelete, Tid: uint32(os.Getpid()), Path: "/host/proj/.ssh/id_ed25519"},
			cgroupsPath: "/mcpcage-test/mcpcage-none",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newKernelFixture(t, &config.Server{DenyPaths: &ssh}, audit.Options{})
			f.s.renameMounts = []renameMount{{source: "/host/proj", target: "/work"}}
			f.s.cgroupsPath = tt.cgroupsPath
			c := tt.change
			if c.Session == 0 {
				c.Session = testCgroup
			}
			if c.Tid == 0 {
				c.Tid = tid // no such thread: gone, so taken as the session's
			}
			f.d.onFsChanges([]renames.Change{c})
			records := f.written(t)
			if tt.record == nil {
				if len(records) != 0 {
					t.Fatalf("records %v, want none", records)
				}
			} else {
				if len(records) != 1 {
					t.Fatalf("records %v, want one", records)
				}
				for k, want := range tt.record {
					if got := records[0][k]; got != want {
						t.Errorf("record's %s = %v, want %v (record %v)", k, got, want, records[0])
					}
				}
			}
			if killed, _ := f.s.killedBy.Load().(string); killed != tt.killed {
				t.Errorf("killed by %q, want %q", killed, tt.killed)
			}
		})
	}
}

// A session's hits after the one that ended it (the rest of a clean-up
// in a denied directory) are counted, not recorded.
func TestCheckFsChangesRecordsTheFirstHit(t *testing.T) {
	ssh := []string{"**/.ssh/**"}
	f := newKernelFixture(t, &config.Server{DenyPaths: &ssh}, audit.Options{})
	f.s.renameMounts = []renameMount{{source: "/host/proj", target: "/work"}}
	var cs []renames.Change
	for _, name := range []string{"a", "b", "c"} {
		cs = append(cs, renames.Change{Op: renames.OpDelete, Session: testCgroup, Tid: 4242, Path: "/host/proj/.ssh/" + name})
	}
	f.d.onFsChanges(cs)
	if records := f.written(t); len(records) != 1 || records[0]["path"] != "/work/.ssh/a" {
		t.Fatalf("records %v, want the first hit's alone", records)
	}
	if n := f.s.deniedKernel.Load(); n != 3 {
		t.Fatalf("%d denials counted, want 3", n)
	}
}
