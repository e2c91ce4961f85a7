package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/daemon/renames"
	"github.com/mcpcage/mcpcage/sandbox"
)

// A rename in a writable mount is checked where the kernel took the file
// from and put it (renames.Watcher: fanotify's directory handles), not
// by resolving the names the server used again afterwards, which a
// symlink swapped or removed at once after the call defeats.

// renameMount is a writable mount whose renames the watcher reports: the
// host's path of its source and where the sandbox sees it.
type renameMount struct{ source, target string }

// watchRenames asks the watcher for the renames, deletions and
// attribute changes in the session's writable mounts, before the server
// runs. It reports whether every writable mount is watched (the kernel
// then leaves deletions and attribute changes over the session's event
// budget to the watcher: bpf.Policy.ChangesWatched).
func (d *Daemon) watchRenames(s *session, mounts []sandbox.BindMount) (all bool) {
	if d.renames == nil {
		return false
	}
	all = true
	for _, m := range mounts {
		if !m.Writable {
			continue
		}
		var src string
		var release func()
		var err error
		if m.Pin != nil {
			// A source the user chose: watched through the object
			// checked at launch, not by its path, which the user may
			// have pointed elsewhere since (a directory on the way
			// swapped for a symlink). Its path is the one checked.
			dir, derr := sandbox.OpenPinnedDir(m.Pin)
			if derr != nil {
				// A file: its directory is not pinned, and its path may
				// lead elsewhere by now.
				s.log.Warn("renames, deletions and attribute changes of this mounted file are checked by name after the fact: a symlink swapped or removed at once escapes the check", "mount", m.Target)
				all = false
				continue
			}
			src = m.Source
			release, err = d.renames.WatchDir(dir, src)
		} else {
			if src, err = filepath.EvalSymlinks(m.Source); err != nil {
				src = m.Source
			}
			release, err = d.renames.Watch(src)
		}
		if err != nil {
			s.log.Warn("renames, deletions and attribute changes in this mount are checked by name after the fact: a symlink swapped or removed at once escapes the check", "mount", m.Target, "err", err)
			all = false
			continue
		}
		s.renameReleases = append(s.renameReleases, release)
		s.renameMounts = append(s.renameMounts, renameMount{source: src, target: m.Target})
	}
	// The deepest source first: a mount inside another is the one the
	// sandbox sees there.
	slices.SortFunc(s.renameMounts, func(a, b renameMount) int { return len(b.source) - len(a.source) })
	return all
}

// releaseRenames ends the session's watches.
func (s *session) releaseRenames() {
	for _, release := range s.renameReleases {
		release()
	}
	s.renameReleases = nil
}

// sandboxPath is where the sandbox sees host path p: under the writable
// mount that holds it; "" when none does.
func (s *session) sandboxPath(p string) string {
	for _, m := range s.renameMounts {
		if p == m.source {
			return m.target
		}
		if rest, ok := strings.CutPrefix(p, m.source+"/"); ok {
			return filepath.Join(m.target, rest)
		}
	}
	return ""
}

// maxQueuedRenameChecks bounds a session's renames waiting for their
// check: more mean the session renames faster than fanotify's queue can
// be read for it, and it is ended (fail closed) rather than let its
// checks hold memory or the kernel-event loop.
const maxQueuedRenameChecks = 16384

// renameChecks is a session's queue of renames to check, in the order the
// kernel reported them, worked through by one goroutine while it is not
// empty. A check may wait on fanotify's queue (renames.Watcher.Claim, up
// to its claimWait behind a flood): the kernel-event loop must not, or
// the ring it drains fills and other sessions' changes go unreported
// (which ends them as unchecked).
type renameChecks struct {
	mu         sync.Mutex
	queue      []renameCheck
	idle       chan struct{} // while a checker runs; closed when it stops
	overflowed bool          // ended for too many waiting; later renames are dropped
	dropped    int
}

// wait returns once the session's queued renames are checked, or after
// timeout: their records (a hit among them) come before the session's
// end.
func (q *renameChecks) wait(timeout time.Duration) bool {
	q.mu.Lock()
	idle := q.idle
	q.mu.Unlock()
	if idle == nil {
		return true // no checker running
	}
	select {
	case <-idle:
		return true
	case <-time.After(timeout):
		return false
	}
}

// renameCheck is one rename's kernel event and its trace event, built as
// it was read.
type renameCheck struct {
	ev bpf.Event
	ke KernelEvent
}

// queueRenameCheck queues the check of rename ev for session s, and
// starts the session's checker when it is idle.
func (d *Daemon) queueRenameCheck(s *session, ev bpf.Event, ke KernelEvent) {
	q := &s.renameChecks
	q.mu.Lock()
	if q.overflowed {
		// The session is ended; its renames still in the ring were made
		// before that.
		q.dropped++
		q.mu.Unlock()
		return
	}
	if len(q.queue) >= maxQueuedRenameChecks {
		q.overflowed = true
		q.mu.Unlock()
		s.log.Warn("renames came faster than they could be checked: ending the session", "waiting", maxQueuedRenameChecks)
		ke.Rule = fmt.Sprintf("deny_paths every rename is checked: more than %d of this session's renames were waiting for their check", maxQueuedRenameChecks)
		d.emitKernelEvent(s, &ke, ev.Path, d.endForDeniedPath(s, ev, &ke, ev.Path))
		return
	}
	q.queue = append(q.queue, renameCheck{ev: ev, ke: ke})
	start := q.idle == nil
	if start {
		q.idle = make(chan struct{})
	}
	q.mu.Unlock()
	if start {
		s.relay.Go("rename checks", func() { d.runRenameChecks(s) }) // a bug there ends the session: its renames go unchecked
	}
}

// runRenameChecks checks s's queued renames in order until none is left.
func (d *Daemon) runRenameChecks(s *session) {
	q := &s.renameChecks
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			close(q.idle)
			q.idle = nil
			q.queue = nil // a burst's backing array goes with it
			if q.dropped > 0 {
				s.log.Info("renames after the session was ended for its renames were not checked or recorded", "count", q.dropped)
				q.dropped = 0
			}
			q.mu.Unlock()
			return
		}
		c := q.queue[0]
		q.queue[0] = renameCheck{}
		q.queue = q.queue[1:]
		q.mu.Unlock()
		d.checkRename(s, c.ev, &c.ke)
	}
}

// checkRename checks rename ev of s against deny_paths where the kernel
// took the file from and put it, then by its names, and ends the session
// on a hit; it records the rename unless it is clean and over the
// session's event budget.
func (d *Daemon) checkRename(s *session, ev bpf.Event, ke *KernelEvent) {
	rule, touched, complete := d.movedFromDenied(s, ev, ke)
	if rule == "" && !complete {
		// fanotify did not say where the kernel put every file this
		// thread moved: the names, resolved as the kernel would.
		rule, touched = d.resolvedDenied(s, ev, true, ke.Path, ke.To)
	}
	if rule == "" {
		if ev.OverBudget {
			return // checked, not recorded (the kernel counted it as throttled)
		}
		d.emitKernelEvent(s, ke, "", false)
		return
	}
	ke.Rule = "deny_paths " + rule
	d.emitKernelEvent(s, ke, touched, d.endForDeniedPath(s, ev, ke, touched))
}

// movedFromDenied checks the renames the kernel did for the thread of ev
// (where it took each file from, and where it put it) against the
// session's deny_paths. It returns the rule hit and the sandbox's path
// that hit it. A move whose old directory could not be resolved (a path
// longer than PATH_MAX, removed with its deletion not known), or renames
// the watcher could not read in time (renames.ErrBehind), are a hit: they
// cannot be shown not to come from a denied directory. complete reports
// that the thread's moves were found, each with both directories
// resolved: where the kernel acted is then known, and resolving the
// names again (a system call or three each) adds nothing. The record's
// new name ke.To becomes where the kernel put the file (movedTo).
func (d *Daemon) movedFromDenied(s *session, ev bpf.Event, ke *KernelEvent) (rule, touched string, complete bool) {
	if d.renames == nil || len(s.renameMounts) == 0 {
		return "", "", false
	}
	if lag := time.Since(ev.Time); lag > renames.MaxClaimLag {
		// The move may have been forgotten: this daemon is far behind the
		// kernel's events (a flood of costly ones), fail closed.
		s.log.Warn("a rename could not be checked: its kernel event was read too late", "lag", lag.Round(time.Millisecond))
		return fmt.Sprintf("every rename is checked: this one's kernel event was read %s after it, later than its move is kept", lag.Round(time.Millisecond)), ev.Path, false
	}
	if d.renames.LostSince(ev.Time) {
		s.log.Warn("a rename could not be checked: rename events were lost to an internal error of mcpcaged's")
		return "every rename is checked: rename events read after this one were lost to an internal error of mcpcaged's", ev.Path, false
	}
	started := threadStart(ev.Pid)
	if started.IsZero() {
		// The thread is gone (a short-lived mv, or a check queued
		// behind others): its id may be another thread's since, and the
		// moves kept under it another's. Its own moves were read after
		// its rename; moves older than that are another thread's (its
		// earlier renames were claimed by their own events, in order).
		started = ev.Time.Add(-time.Second)
	}
	if started.After(ev.Time) {
		// The thread that renamed is gone and its id taken by a newer
		// one: its moves cannot be told from those of the thread before.
		s.log.Warn("a rename could not be checked: its thread is gone and its id reused", "tid", ev.Pid)
		return "every rename is checked: the renaming thread's id was reused before its rename was checked", ev.Path, false
	}
	moves, err := d.renames.Claim(ev.Pid, started, s.cgid)
	if err != nil {
		s.log.Warn("a rename could not be checked", "err", err)
		return "every rename is checked: " + err.Error(), ev.Path, false
	}
	complete = len(moves) > 0
	for _, m := range moves {
		if m.FromErr != "" {
			s.log.Warn("a rename could not be checked: its old directory could not be resolved", "err", m.FromErr, "to", m.To)
			return "every rename is checked: the directory a file was renamed out of could not be resolved (" + m.FromErr + ")", s.sandboxPath(m.To), false
		}
		for _, p := range []string{s.sandboxPath(m.From), s.sandboxPath(m.To)} {
			if p == "" {
				complete = false // (not under a writable mount: unknown here)
				continue
			}
			if rule := deniedComponent(s.srv, p); rule != "" {
				return rule, p, false
			}
		}
	}
	if to := movedTo(s, ev, moves); to != "" {
		ke.To = to
	}
	return "", "", complete
}

// movedTo is where the kernel put the file of rename ev, in the
// sandbox: the one move of the thread's moves whose new name is ev's (a
// thread's moves since its last claim may be several), or "" when not
// one is known so. It is what the kernel did, where the event's new name
// is relative to a directory looked up after the call.
func movedTo(s *session, ev bpf.Event, moves []renames.Move) string {
	if ev.NewHint == "" || len(ev.NewHint) >= bpf.HintMax { // (cut: its last name may be longer)
		return ""
	}
	want := path.Base(ev.NewHint)
	found := ""
	for _, m := range moves {
		if to := s.sandboxPath(m.To); to != "" && path.Base(to) == want {
			if found != "" {
				return ""
			}
			found = to
		}
	}
	return found
}

// threadStart is when thread tid started, a little early (the kernel
// counts clock ticks), or the zero time when it is gone.
func threadStart(tid uint32) time.Time {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tid))
	if err != nil {
		return time.Time{}
	}
	// The command may hold spaces and parentheses: fields count from the
	// last ')'. starttime is field 22, the 20th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return time.Time{}
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	const hz = 100 // USER_HZ, fixed by the kernel's ABI
	return bootTime().Add(time.Duration(ticks) * time.Second / hz).Add(-2 * time.Second / hz)
}

// bootTime is when the system booted, by the monotonic clock.
func bootTime() time.Time {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) // cannot fail for CLOCK_BOOTTIME
	return time.Now().Add(-time.Duration(ts.Nano()))
}
