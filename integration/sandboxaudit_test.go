package integration

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
	"github.com/mcpcage/mcpcage/sandbox/seccompnotify"
)

// waitRecords polls the audit log until cond holds, or fails with what it
// last saw.
func (d *daemon) waitRecords(t *testing.T, what string, cond func([]map[string]any) (bool, string)) []map[string]any {
	t.Helper()
	var recs []map[string]any
	testenv.WaitFor(t, "audit log: "+what, 20*time.Second, func() (bool, string) {
		recs = d.auditRecords(t)
		return cond(recs)
	})
	return recs
}

func ofType(recs []map[string]any, typ, session string) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["type"] == typ && (session == "" || r["session"] == session) {
			out = append(out, r)
		}
	}
	return out
}

// TestSandboxDeniedAudit: each escape attempt the seccomp notifier sees
// is a sandbox.denied audit record naming the call, its integer
// arguments, the caller and the tools/call in flight; a flood is cut at
// 20 records plus one overflow record with the rest's count.
func TestSandboxDeniedAudit(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	attacks := []struct{ attack, syscall string }{
		{"mount", "mount"}, {"ptrace", "ptrace"}, {"unshare-user", "unshare"}, {"bpf", "bpf"},
		{"keyctl", "add_key"}, {"io-uring", "io_uring_setup"},
	}
	for _, a := range attacks {
		if got := attack(t, c, a.attack); !strings.HasPrefix(got, "DENIED") {
			t.Fatalf("%s: %q", a.attack, got)
		}
	}
	want := map[string]bool{}
	for _, a := range attacks {
		want[a.syscall] = true
	}
	recs := d.waitRecords(t, "a sandbox.denied record per attempt", func(recs []map[string]any) (bool, string) {
		seen := map[string]bool{}
		for _, r := range ofType(recs, "sandbox.denied", "") {
			seen[fmt.Sprint(r["syscall"])] = true
		}
		for s := range want {
			if !seen[s] {
				return false, fmt.Sprint(sortedNames(seen))
			}
		}
		return true, ""
	})
	denied := ofType(recs, "sandbox.denied", "")
	for _, r := range denied {
		if r["session"] == "" || r["server"] != "test" || r["action"] != "EPERM" {
			t.Errorf("record without its session, server or action: %v", r)
		}
		if pid, _ := r["pid"].(float64); pid <= 0 {
			t.Errorf("record without the caller's pid: %v", r)
		}
		if calls, _ := r["tool_calls"].([]any); len(calls) != 1 {
			t.Errorf("record not attributed to the run_command call in flight: %v", r)
		}
		args, _ := r["args"].(map[string]any)
		switch r["syscall"] {
		case "unshare":
			if args["flags"] != "0x10000000" { // CLONE_NEWUSER
				t.Errorf("unshare flags: %v", r)
			}
		case "ptrace":
			if args["request"] != float64(16) || args["pid"] != float64(1) { // PTRACE_ATTACH 1
				t.Errorf("ptrace args: %v", r)
			}
		case "mount":
			if _, ok := args["flags"]; !ok || len(args) != 1 {
				t.Errorf("mount args (flags only, no pointers): %v", r)
			}
		}
	}
	// `mcpcage audit` answers "what did this server try?".
	out := d.mustCLI(t, "audit", "--type", "sandbox")
	for s := range want {
		if !strings.Contains(out, "syscall="+s) {
			t.Errorf("mcpcage audit --type sandbox lacks %s:\n%s", s, out)
		}
	}
	_ = c.Close()

	// Each refused call is a round trip through mcpcaged: a server looping
	// on one (the red-team's 16 threads on mount(2): 39,000 a second, 65%
	// of a core of the daemon's) has its answers paced after a burst, so
	// it cannot spend the daemon's CPU beyond its own cgroup's limit.
	t.Run("a flood's answers are paced", func(t *testing.T) {
		fc := d.connect(t, "test", mcp.ProtocolVersion20251125)
		defer func() { _ = fc.Close() }()
		got := attack(t, fc, "deny-flood", "3", "8")
		var answered int
		var secs float64
		if _, err := fmt.Sscanf(strings.TrimPrefix(got, "ESCAPED "), "answered=%d seconds=%f", &answered, &secs); err != nil {
			t.Fatalf("deny-flood: %q: %v", got, err)
		}
		if limit := seccompnotify.AnswerBurst + int(float64(seccompnotify.AnswerRate)*(secs+1)); answered > limit {
			t.Fatalf("%d refused calls answered in %.1f s, want at most %d (a burst of %d, then %d a second)",
				answered, secs, limit, seccompnotify.AnswerBurst, seccompnotify.AnswerRate)
		}
		t.Logf("%d refused calls answered in %.1f s", answered, secs)
		d.waitLog("answers paced")
	})

	t.Run("flood is throttled", func(t *testing.T) {
		const n = 150
		fc := d.connect(t, "test", mcp.ProtocolVersion20251125)
		if got := attack(t, fc, "deny-storm", fmt.Sprint(n)); !strings.Contains(got, fmt.Sprintf("%d of %d refused", n, n)) {
			t.Fatalf("deny-storm: %q", got)
		}
		_ = fc.Close()
		var sess string
		recs := d.waitRecords(t, "the flood's session ended", func(recs []map[string]any) (bool, string) {
			for _, r := range ofType(recs, "session.end", "") {
				if r["denied_syscalls"] == float64(n) {
					sess, _ = r["session"].(string)
					return true, ""
				}
			}
			return false, fmt.Sprint(len(ofType(recs, "session.end", "")), " session.end records")
		})
		if got := len(ofType(recs, "sandbox.denied", sess)); got != 20 {
			t.Errorf("%d sandbox.denied records for %d refused calls, want 20", got, n)
		}
		over := ofType(recs, "sandbox.denied_overflow", sess)
		if len(over) != 1 || over[0]["count"] != float64(n-20) {
			t.Fatalf("overflow records: %v, want one with count %d", over, n-20)
		}
		// The overflow comes before the session's end.
		for _, r := range recs {
			if r["session"] != sess {
				continue
			}
			if r["type"] == "session.end" {
				t.Fatal("session.end before sandbox.denied_overflow")
			}
			if r["type"] == "sandbox.denied_overflow" {
				break
			}
		}
	})
	d.waitClean("sandbox audit tests")
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
