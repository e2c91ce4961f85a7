package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// uidSlots bounds what one account holds at once of something every
// local user can open on the daemon's socket (connections that have not
// sent their request yet, followers of the audit log or of kernel
// events), so that one user cannot take the daemon's memory or slow what
// it does for the others; an account is a user with its subordinate uids
// (account.go). Where all accounts together could still take too much
// (descriptors), maxAll bounds them together.
type uidSlots struct {
	what   string // what a slot is, for the refusal
	max    int
	maxAll int // all accounts' slots together; 0: no bound
	mu     sync.Mutex
	held   map[uint32]int
	total  int
	told   refusalLog
}

// Limits per user.
const (
	maxPendingPerUID   = 32 // connections that have not sent their request
	maxAnsweringPerUID = 16 // requests being answered (their replies not yet taken)
	maxFollowersPerUID = 16 // `mcpcage audit --follow` and `mcpcage trace` at once
	maxAuditPerUID     = 16 // `mcpcage audit` queries, history or --follow, at once
)

// maxPendingAll bounds the connections of all users that have not sent
// their request yet: each holds a descriptor and a goroutine for up to
// requestWait, and the daemon's descriptors must stay far from their
// limit (sessions, containerd, the audit log) whoever connects.
const maxPendingAll = 1024

// setUserLimits sets the daemon's per-user bounds.
func (d *Daemon) setUserLimits() {
	d.pending.what, d.pending.max, d.pending.maxAll = "connections that have not sent their request", maxPendingPerUID, maxPendingAll
	d.answering.what, d.answering.max = "requests whose answers are not yet read", maxAnsweringPerUID
	d.following.what, d.following.max = "followers of the audit log or of kernel events", maxFollowersPerUID
	d.auditing.what, d.auditing.max = "audit queries (mcpcage audit)", maxAuditPerUID
	// Sessions: max_sessions_per_user, read at each take (a reload
	// changes it). It bounds a user's sandboxes, and the daemon threads
	// that sessions let go of while their client held a pipe's lock (see
	// stdio.go) can keep.
	d.sessionSlots.what = "sessions (mcpcage run; max_sessions_per_user in [daemon])"
}

// take takes a slot for a; release gives it back. When a holds max, or
// all accounts maxAll, it returns an error that says so and what to do.
func (s *uidSlots) take(a account) (release func(), err error) {
	return s.takeUpTo(a, s.max)
}

// takeUpTo is take with a bound of max slots per account.
func (s *uidSlots) takeUpTo(a account, max int) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[a.uid] >= max {
		return nil, fmt.Errorf("%s already has %d %s open, the most one user may: close some and try again", a.who(), max, s.what)
	}
	if s.maxAll > 0 && s.total >= s.maxAll {
		return nil, fmt.Errorf("mcpcaged already holds %d %s from all users, the most it holds at once: try again in a moment; if this lasts, tell the administrator (mcpcaged's log names who holds the most)", s.maxAll, s.what)
	}
	if s.held == nil {
		s.held = map[uint32]int{}
	}
	s.held[a.uid]++
	s.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.held[a.uid]--; s.held[a.uid] <= 0 {
				delete(s.held, a.uid)
			}
		})
	}, nil
}

// most returns the account holding the most slots, and how many.
func (s *uidSlots) most() (uid uint32, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for u, h := range s.held {
		if h > n || (h == n && u < uid) {
			uid, n = u, h
		}
	}
	return uid, n
}

// refused logs a refusal of a slot (msg, the refusal err and attrs) as
// refusalLog does, with the account that holds the most slots.
func (s *uidSlots) refused(log *slog.Logger, msg string, err error, attrs ...any) {
	s.told.warn(log, msg, func() []any {
		uid, n := s.most()
		return append(attrs, "reason", err, "most_held_by_uid", uid, "most_held", n)
	})
}

// refusalLogEvery is the least time between two warnings of one bound's
// refusals.
const refusalLogEvery = 10 * time.Second

// refusalLog logs refusals by one bound without a warning for each: a
// flood of connections past it must not flood the log. The first refusal
// after refusalLogEvery is a warning that says how many were refused
// since the last one; those in between are logged at debug level.
type refusalLog struct {
	mu       sync.Mutex
	last     time.Time
	unlogged int
}

// warn logs msg with attrs() as a warning, or at debug level when this
// bound warned within refusalLogEvery.
func (r *refusalLog) warn(log *slog.Logger, msg string, attrs func() []any) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < refusalLogEvery {
		r.unlogged++
		r.mu.Unlock()
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(msg, attrs()...)
		}
		return
	}
	unlogged := r.unlogged
	r.last, r.unlogged = now, 0
	r.mu.Unlock()
	log.Warn(msg, append(attrs(), "refused_unlogged_since_last_warning", unlogged)...)
}
