package integration

// Changes by name to a denied file (truncate, setxattr, unlink...) through
// names the daemon cannot rebuild or resolve after the call, and large
// clean-ups that must not end a session. Found by a red team at 50a6061,
// where each of these escaped (or killed the clean-up); the attacks are
// the hostile program's "change-trick" variants
// (testdata/hostile/changetricks.go). truncate(2) is refused by the
// default seccomp profile, so its cases end DENIED.

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// changeTrick runs hostile change-trick ARGS in a fresh session over a project
// with a key planted after launch, and reports the tool's output, the
// shim's exit code and the audit records.
func changeTrick(t *testing.T, args ...string) (out string, key string, d *daemon, code int) {
	t.Helper()
	dir := project(t)
	d = projDaemon(t, dir)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	toolNames(t, c)
	key = plantKey(t, dir)
	out = hostile(t, c, 120*time.Second, append([]string{"change-trick"}, args...)...)
	// Alive? (a killed session answers no more calls)
	res2, err := c.CallTool(ctxT(t, 30*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "run_command",
		Arguments: map[string]any{"command": "/bin/echo", "args": []string{"alive"}}}})
	if err == nil && res2 != nil && !res2.IsError && len(res2.Content) > 0 && strings.Contains(textOf(res2.Content[0]), "alive") {
		t.Logf("the session is alive after the attack")
		return out, key, d, -1
	}
	return out, key, d, c.shimExit(t)
}

// wantStopped checks the outcome of a trick on the key: a truncate is
// refused (EPERM) and the key intact; any other change ends the session
// (the change is done by then).
func wantStopped(t *testing.T, op, out, key string, code int) {
	t.Helper()
	if op == "truncate" {
		if b, err := os.ReadFile(key); !strings.Contains(out, "DENIED operation not permitted") || err != nil || string(b) != "PRIVATE KEY" {
			t.Fatalf("truncate: %q, key %q (%v); want DENIED (EPERM) and the key intact", out, b, err)
		}
		return
	}
	if strings.Contains(out, "ESCAPED") || code <= 0 {
		t.Fatalf("%s: %q, shim exit %d; want the session killed", op, out, code)
	}
}

func changeRecords(t *testing.T, d *daemon) []map[string]any {
	var out []map[string]any
	for _, r := range d.auditRecords(t) {
		typ := str(r, "type")
		if a := str(r, "action"); a != "" || strings.HasPrefix(typ, "session.end") ||
			(strings.HasPrefix(typ, "file.") && typ != "file.open") {
			out = append(out, r)
		}
	}
	return out
}

// A name longer than the event's 127-byte hint: 64 "./" then
// .ssh/id_ed25519, from /work. The kernel checks /work (the base
// directory); the daemon sees "/work/./././..." cut short, which resolves
// to /work.
func TestChangeThroughANameLongerThanItsEvent(t *testing.T) {
	for _, tt := range []struct{ variant, op string }{
		{"long", "truncate"},
		{"long", "setxattr"},
		{"long", "unlink"},
		{"long-over", "truncate"},
	} {
		t.Run(tt.variant+" "+tt.op, func(t *testing.T) {
			out, key, d, code := changeTrick(t, tt.variant, tt.op, "/work", ".ssh/id_ed25519")
			b, statErr := os.ReadFile(key)
			t.Logf("key after: %q %v; shim exit %d", b, statErr, code)
			for _, r := range changeRecords(t, d) {
				t.Logf("record: %v", r)
			}
			wantStopped(t, tt.op, out, key, code)
		})
	}
}

// The working directory flips between /work/.ssh and /work in a sibling
// thread: the call resolves id_ed25519 in .ssh at its start, the exit
// program checks the working directory as it is at the call's end.
func TestChangeWithTheWorkingDirectoryFlipped(t *testing.T) {
	for _, tt := range []struct{ op, dots string }{{"truncate", "0"}, {"unlink", "0"}, {"truncate", "58"}, {"unlink", "58"}} {
		op := tt.op
		t.Run(op+" dots "+tt.dots, func(t *testing.T) {
			out, key, d, code := changeTrick(t, "cwdrace", op, "/work", "/work/.ssh", "id_ed25519", tt.dots)
			b, statErr := os.ReadFile(key)
			t.Logf("key after: %q %v; shim exit %d", b, statErr, code)
			for _, r := range changeRecords(t, d) {
				t.Logf("record: %v", r)
			}
			wantStopped(t, op, out, key, code)
		})
	}
}

// A legitimate clean-up over the budget: many files removed by absolute
// name (node's fs.rm recursive in JS, rimraf), or with 4-character names
// (as long as ".ssh") by os.RemoveAll. Every one is reported over the
// budget; a full ring buffer marks the session unchecked and kills it.
func TestBigCleanUpIsNotKilled(t *testing.T) {
	// 50000 files: by absolute name, 30000 filled the kernel's event ring
	// at 50a6061; in directories of 5000, more than the changes that
	// could wait for a removed directory in an earlier version.
	const n = "50000"
	for _, variant := range []string{"rmabs", "rmgo"} {
		t.Run(variant, func(t *testing.T) {
			out, _, d, code := changeTrick(t, variant, "/work", n)
			recs := changeRecords(t, d)
			for _, r := range recs {
				t.Logf("record: %v", r)
			}
			t.Logf("shim exit %d", code)
			if !strings.Contains(out, "ESCAPED") { // (the attack's word for "done, and alive")
				t.Fatalf("the clean-up did not complete: %q (shim exit %d, %d records)", out, code, len(recs))
			}
			for _, r := range recs {
				if strings.Contains(str(r, "rule"), "could not be reported") {
					t.Fatalf("the clean-up's session was ended as unchecked: %v", r)
				}
			}
		})
	}
}

func textOf(c mcp.Content) string {
	if tc, ok := c.(mcp.TextContent); ok {
		return tc.Text
	}
	return ""
}

// A change through /proc/CHILD/cwd, a magic link to a child's working
// directory in .ssh: no denied component in the name as text, the kernel
// checks /work (the caller's working directory), and the daemon's
// resolution (openat2 RESOLVE_NO_MAGICLINKS) fails and is skipped.
func TestChangeThroughAProcMagicLink(t *testing.T) {
	for _, op := range []string{"truncate", "setxattr", "unlink"} {
		t.Run(op, func(t *testing.T) {
			out, key, d, code := changeTrick(t, "proccwd", op, "/work", "/work/.ssh", "id_ed25519")
			b, statErr := os.ReadFile(key)
			t.Logf("key after: %q %v; shim exit %d", b, statErr, code)
			for _, r := range changeRecords(t, d) {
				t.Logf("record: %v", r)
			}
			wantStopped(t, op, out, key, code)
		})
	}
}

// A change through a symlink into a denied directory (made after launch,
// so not masked), from a directory the kernel's event cannot name whole:
// 20 levels below /work (deeper than the kernel's walk: "…/d/d/...") or
// one with a 60-byte component (kept to 47 bytes). The kernel checks
// that directory (fine) and the name l/NAME as text (no denied
// component); the daemon resolves l from the directory it looks up in
// /proc. Before, it took the event's path, which does not resolve, and
// skipped the check: the mkdir (which fanotify does not report) went
// unpunished. leader-gone is deep made by a second thread once the
// process's first thread has ended alone: the lookup must read the
// calling thread's working directory (/proc/PID/task/TID/cwd), not the
// process's, then empty (as it must for a thread with a working
// directory of its own; found by review of ebf4cd6).
func TestChangeFromADirectoryTheEventCannotName(t *testing.T) {
	for _, variant := range []string{"deep", "longname", "leader-gone"} {
		t.Run(variant, func(t *testing.T) {
			out, _, d, code := changeTrick(t, variant, "mkdir", "/work", "/work/.ssh", "planted")
			for _, r := range changeRecords(t, d) {
				if str(r, "action") != "" || str(r, "type") == "session.end" {
					t.Logf("record: %v", r)
				}
			}
			wantStopped(t, "mkdir", out, "", code)
			d.record(t, "file.mkdir", func(r map[string]any) bool {
				return strings.Contains(str(r, "action"), "session killed") && str(r, "touched") == "/work/.ssh/planted"
			})
		})
	}
}

// A rename by two directory descriptors (renameat(2)) is recorded with
// its new name in the second directory. Before, the new name was joined
// to the first (the one the kernel's event names): the record said the
// file went to /work/a/g.
func TestRenameBetweenDirectoryDescriptorsIsRecordedWhereItWent(t *testing.T) {
	out, _, d, code := changeTrick(t, "renameat", "/work")
	if !strings.Contains(out, "renamed a/f to b/g") || code != -1 {
		t.Fatalf("the rename: %q, shim exit %d; want it done and the session alive", out, code)
	}
	for _, r := range changeRecords(t, d) {
		t.Logf("record: %v", r)
	}
	d.record(t, "file.rename", func(r map[string]any) bool {
		return str(r, "path") == "/work/a/f" && str(r, "to") == "/work/b/g"
	})
}
