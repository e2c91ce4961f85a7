package ask

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

// Target is what a request would use, and for whom: the key of pending
// requests and of refusals.
type Target struct {
	User, Agent, Server string
	Kind                string
	Name                string
}

// Pending is a request nobody answered.
type Pending struct {
	api.PendingInfo
	Target Target
	UID    uint32 // the delegating user's uid (who may answer it)
	// Account is the uid whose bound of pending requests it counts
	// toward: its owner when UID is a subordinate uid (/etc/subuid);
	// 0 is UID's own (root owns no account of subordinate uids: see the
	// daemon's account.go).
	Account uint32
	Pin     string // the tool definition the session was shown
	Digest  string // the request's (see RequestDigest): "approve --once" allows this one
	PinKey  string // whose pins the server's tools are
	// PendingInfo.Definition: the definition of the server the session
	// ran (a user's own: config.Server.Definition), which an answer must
	// still find.
}

// account is the uid p counts toward.
func (p *Pending) account() uint32 {
	if p.Account != 0 {
		return p.Account
	}
	return p.UID
}

// pendingKey: one pending entry per target, request and server
// definition (other arguments are another request, with an id of its
// own; so is the same request from a session of another definition of
// the server, which an approval of the first must not answer).
type pendingKey struct {
	t          Target
	digest     string
	definition string
}

// Book holds the pending requests and the user's refusals (a "deny"
// answer keeps mcpcage from asking about the same target until it
// expires). Both are bounded.
type Book struct {
	mu      sync.Mutex
	pending map[string]*Pending   // by id
	byKey   map[pendingKey]string // -> pending id
	refused map[Target]time.Time
}

// Bounds of a Book.
const (
	maxPendingPerUser = 64
	maxPending        = 1024
	maxRefusedPerUser = 1024
	// maxRefused bounds all users' refusals together: a user's
	// subordinate uids (/etc/subuid) are users of their own here (the
	// refusals are theirs), each with maxRefusedPerUser.
	maxRefused = 16 * maxRefusedPerUser
)

// NewBook returns an empty book.
func NewBook() *Book {
	return &Book{pending: map[string]*Pending{}, byKey: map[pendingKey]string{}, refused: map[Target]time.Time{}}
}

// Keep records an unanswered request (or another attempt at one already
// pending, which keeps its id) and returns its entry (a copy). ok is false
// when the user already has maxPendingPerUser pending or the book is full.
func (b *Book) Keep(p Pending, now time.Time, ttl time.Duration) (_ Pending, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	key := pendingKey{p.Target, p.Digest, p.Definition}
	if id, has := b.byKey[key]; has {
		// The same request again: what the user sees of it stays as it
		// was first kept.
		e := b.pending[id]
		e.Attempts++
		e.Last, e.Expires, e.Why = now, now.Add(ttl), p.Why
		return *e, true
	}
	if len(b.pending) >= maxPending {
		return Pending{}, false
	}
	n := 0
	for _, e := range b.pending {
		if e.account() == p.account() {
			n++
		}
	}
	if n >= maxPendingPerUser {
		return Pending{}, false
	}
	var id [5]byte
	_, _ = rand.Read(id[:])
	p.ID = "p-" + hex.EncodeToString(id[:])
	p.User, p.Agent, p.Server, p.Kind, p.Name = p.Target.User, p.Target.Agent, p.Target.Server, p.Target.Kind, p.Target.Name
	p.Attempts, p.First, p.Last, p.Expires = 1, now, now, now.Add(ttl)
	e := p
	b.pending[p.ID] = &e
	b.byKey[key] = p.ID
	return p, true
}

// List returns the pending requests uid may answer (all of them when
// all), oldest first.
func (b *Book) List(uid uint32, all bool, now time.Time) []Pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	out := []Pending{}
	for _, e := range b.pending {
		if all || e.UID == uid {
			out = append(out, *e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First.Before(out[j].First) })
	return out
}

// Take removes and returns pending request id if uid may answer it.
func (b *Book) Take(id string, uid uint32, all bool, now time.Time) (Pending, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	e, ok := b.pending[id]
	if !ok || (!all && e.UID != uid) {
		return Pending{}, false
	}
	delete(b.pending, id)
	delete(b.byKey, pendingKey{e.Target, e.Digest, e.Definition})
	return *e, true
}

// Forget drops the pending request for t and digest from a session of
// server definition definition, if any (it was answered in the client
// after all).
func (b *Book) Forget(t Target, digest, definition string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := pendingKey{t, digest, definition}
	if id, ok := b.byKey[k]; ok {
		delete(b.pending, id)
		delete(b.byKey, k)
	}
}

// DropServer drops user's pending requests to server and returns how
// many (the server was removed or defined anew: an answer to one would
// allow the new definition).
func (b *Book) DropServer(user, server string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id, e := range b.pending {
		if e.Target.User == user && e.Target.Server == server {
			delete(b.pending, id)
			delete(b.byKey, pendingKey{e.Target, e.Digest, e.Definition})
			n++
		}
	}
	return n
}

// Refuse remembers that the user denied t, until until.
func (b *Book) Refuse(t Target, until, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(now)
	n := 0
	for r := range b.refused {
		if r.User == t.User {
			n++
		}
	}
	if n >= maxRefusedPerUser || len(b.refused) >= maxRefused {
		return // the request is denied anyway; the user may be asked again
	}
	b.refused[t] = until
}

// Refused says until when the user denied t (zero: not denied).
func (b *Book) Refused(t Target, now time.Time) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.refused[t]
	if !ok || !now.Before(until) {
		return time.Time{}
	}
	return until
}

// Unrefuse forgets the refusals a new consent supersedes: those covers
// says it covers.
func (b *Book) Unrefuse(covers func(Target) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for t := range b.refused {
		if covers(t) {
			delete(b.refused, t)
		}
	}
}

// expire drops what has expired (caller holds mu).
func (b *Book) expire(now time.Time) {
	for id, e := range b.pending {
		if !now.Before(e.Expires) {
			delete(b.pending, id)
			delete(b.byKey, pendingKey{e.Target, e.Digest, e.Definition})
		}
	}
	for t, until := range b.refused {
		if !now.Before(until) {
			delete(b.refused, t)
		}
	}
}

// Limiter bounds the questions of one session: at most perMinute in any
// minute (a token bucket refilled continuously), and at most maxOpen
// waiting at once.
type Limiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	open   int
}

// MaxOpen bounds the questions of one session waiting for an answer.
const MaxOpen = 4

// Take reserves a question; why says why not ("" when reserved). Release
// it with Done once it is answered or given up.
func (l *Limiter) Take(perMinute int, now time.Time) (why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens, l.last = float64(perMinute), now
	}
	l.tokens += now.Sub(l.last).Minutes() * float64(perMinute)
	if l.tokens > float64(perMinute) {
		l.tokens = float64(perMinute)
	}
	l.last = now
	switch {
	case l.open >= MaxOpen:
		return "the session already has questions waiting for an answer"
	case l.tokens < 1:
		return "the session asked too many questions in the last minute ([daemon] ask_per_minute)"
	}
	l.tokens--
	l.open++
	return ""
}

// Done releases a question reserved by Take.
func (l *Limiter) Done() {
	l.mu.Lock()
	if l.open > 0 {
		l.open--
	}
	l.mu.Unlock()
}
