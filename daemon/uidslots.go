package daemon

import (
	"fmt"
	"sync"
)

// uidSlots bounds what one user holds at once of something every local
// user can open on the daemon's socket (connections that have not sent
// their request yet, followers of the audit log or of kernel events), so
// that one user cannot take the daemon's memory or slow what it does for
// the others.
type uidSlots struct {
	what string // what a slot is, for the refusal
	max  int
	mu   sync.Mutex
	held map[uint32]int
}

// Limits per user.
const (
	maxPendingPerUID   = 32 // connections that have not sent their request
	maxAnsweringPerUID = 16 // requests being answered (their replies not yet taken)
	maxFollowersPerUID = 16 // `mcpcage audit --follow` and `mcpcage trace` at once
	maxAuditPerUID     = 16 // `mcpcage audit` queries, history or --follow, at once
)

// setUserLimits sets the daemon's per-user bounds.
func (d *Daemon) setUserLimits() {
	d.pending.what, d.pending.max = "connections that have not sent their request", maxPendingPerUID
	d.answering.what, d.answering.max = "requests whose answers are not yet read", maxAnsweringPerUID
	d.following.what, d.following.max = "followers of the audit log or of kernel events", maxFollowersPerUID
	d.auditing.what, d.auditing.max = "audit queries (mcpcage audit)", maxAuditPerUID
	// Sessions: max_sessions_per_user, read at each take (a reload
	// changes it). It bounds a user's sandboxes, and the daemon threads
	// that sessions let go of while their client held a pipe's lock (see
	// stdio.go) can keep.
	d.sessionSlots.what = "sessions (mcpcage run; max_sessions_per_user in [daemon])"
}

// take takes a slot for uid; release gives it back. When uid holds max,
// it returns an error that says so and what to do.
func (s *uidSlots) take(uid uint32) (release func(), err error) {
	return s.takeUpTo(uid, s.max)
}

// takeUpTo is take with a bound of max slots.
func (s *uidSlots) takeUpTo(uid uint32, max int) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[uid] >= max {
		return nil, fmt.Errorf("uid %d already has %d %s open, the most one user may: close some and try again", uid, max, s.what)
	}
	if s.held == nil {
		s.held = map[uint32]int{}
	}
	s.held[uid]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.held[uid]--; s.held[uid] <= 0 {
				delete(s.held, uid)
			}
		})
	}, nil
}
