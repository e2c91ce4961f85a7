package daemon

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

func renameEvent(from, to string) (bpf.Event, KernelEvent) {
	ev := bpf.Event{Kind: bpf.KindRename, Cgroup: testCgroup, Dir: "/work", Hint: from, NewHint: to, Path: "/work/" + from}
	zero := int32(0)
	return ev, KernelEvent{Type: ev.Kind.String(), Session: "s1", Server: "fs", Path: ev.Path, Hint: from, To: "/work/" + to, Result: &zero}
}

// Renames are checked off the kernel-event loop, in the order the kernel
// reported them: clean ones are recorded, a hit ends the session, and a
// later hit finds it ended (the client is told of the first).
func TestRenameChecksInOrder(t *testing.T) {
	ssh := []string{"**/.ssh/**"}
	f := newKernelFixture(t, &config.Server{DenyPaths: &ssh}, audit.Options{})
	for i, to := range []string{"b", "c", ".ssh/authorized_keys", ".ssh/config", "d"} {
		ev, ke := renameEvent(fmt.Sprint(i), to)
		f.d.queueRenameCheck(f.s, ev, ke)
	}
	if !f.s.renameChecks.wait(10 * time.Second) {
		t.Fatal("the queued renames were not checked within 10 s")
	}
	var got []string
	for _, r := range f.written(t) {
		got = append(got, fmt.Sprintf("%v %v", r["to"], r["action"]))
	}
	want := []string{"/work/b <nil>", "/work/c <nil>", "/work/.ssh/authorized_keys session stopped",
		"/work/.ssh/config session already ended", "/work/d <nil>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("records %q, want %q", got, want)
	}
	if killed, _ := f.s.killedBy.Load().(string); !strings.Contains(killed, "authorized_keys") {
		t.Fatalf("the client is told %q, want the first hit (authorized_keys)", killed)
	}
	select {
	case <-f.s.policyStop:
	default:
		t.Fatal("the rename into .ssh did not end the session")
	}
}

// A session with more renames waiting than maxQueuedRenameChecks is ended
// (fail closed), once; its renames after that are dropped and counted.
func TestRenameChecksOverflowEndsTheSession(t *testing.T) {
	f := newKernelFixture(t, &config.Server{}, audit.Options{})
	q := &f.s.renameChecks
	q.idle = make(chan struct{}) // as if a checker ran: the queue only grows
	for i := 0; i < maxQueuedRenameChecks+3; i++ {
		ev, ke := renameEvent(fmt.Sprint(i), "x")
		f.d.queueRenameCheck(f.s, ev, ke)
	}
	if len(q.queue) != maxQueuedRenameChecks || !q.overflowed || q.dropped != 2 {
		t.Fatalf("queue %d, overflowed %v, dropped %d; want %d, true, 2", len(q.queue), q.overflowed, q.dropped, maxQueuedRenameChecks)
	}
	select {
	case <-f.s.policyStop:
	default:
		t.Fatal("the overflow did not end the session")
	}
	recs := f.written(t)
	if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["rule"]), "renames were waiting for their check") ||
		recs[0]["action"] != "session stopped" {
		t.Fatalf("records %v, want one file.rename record of the overflow", recs)
	}
}

// A deny_paths hit in a session that is stopping for another reason
// (on_suspect = "end-session" closes policyStop and waits stop_timeout
// for its server) kills it now, and its record is the one that ended it.
// Before (red team on f69adaf), the hit found policyStop closed, was
// recorded as "session already ended" and killed nothing: a rename in
// that window went on unpunished until the stop.
func TestAHitKillsAStoppingSession(t *testing.T) {
	ssh := []string{"**/.ssh/**"}
	f := newKernelFixture(t, &config.Server{DenyPaths: &ssh}, audit.Options{})
	f.s.stopForPolicy() // as on_suspect = "end-session" does
	for _, to := range []string{".ssh/authorized_keys", ".ssh/config"} {
		ev, ke := renameEvent("x", to)
		ke.Rule = "deny_paths **/.ssh/**"
		f.d.emitKernelEvent(f.s, &ke, ke.To, f.d.endForDeniedPath(f.s, ev, &ke, ke.To))
	}
	recs := f.written(t)
	var actions []string
	for _, r := range recs {
		actions = append(actions, fmt.Sprint(r["action"]))
	}
	if want := []string{"session stopped", "session already ended"}; !slices.Equal(actions, want) {
		t.Fatalf("the hits' actions %q, want %q (the first kills the stopping session)", actions, want)
	}
	if !f.s.cgroupKilled.Load() {
		t.Fatal("the session was not killed")
	}
}
