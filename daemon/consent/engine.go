package consent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

// Engine decides requests against the store, caching each (user, agent,
// server)'s active records with their compiled conditions. A change to a
// record drops its triple's entry ([Engine.InvalidateFor]), so a
// revocation applies to the very next message, and one user's grants and
// revocations never send another user's decisions to the store.
type Engine struct {
	store *Store

	mu    sync.Mutex
	cache map[triple][]*entry
	// gen counts invalidations of the whole cache, and inflight marks the
	// triples whose look-ups are under way: a look-up that ran its query
	// while its answer was invalidated does not store it (it may be
	// stale). inflight holds only triples being looked up, so it stays as
	// small as the number of concurrent cache misses.
	gen      uint64
	inflight map[triple]*lookup
	// lookups counts the queries to the store for decisions (cache
	// misses), for the metrics.
	lookups atomic.Uint64
}

type triple struct{ user, agent, server string }

// maxCachedTriples bounds the cache: it is no longer emptied by every
// change, and a user can make triples (agents, servers) without end.
const maxCachedTriples = 4096

// lookup is the look-ups of one triple under way.
type lookup struct {
	n     int
	stale bool // a record of the triple changed since one of them began
}

type entry struct {
	rec  *Record
	cond *Condition
}

// NewEngine wraps a store.
func NewEngine(s *Store) *Engine {
	return &Engine{store: s, cache: map[triple][]*entry{}, inflight: map[triple]*lookup{}}
}

// Store returns the underlying store.
func (e *Engine) Store() *Store { return e.store }

// Query is one request to decide.
type Query struct {
	User, Agent, Server string
	// UID is the delegating user's uid: a record given to another uid
	// of the name covers nothing (see Record.UID).
	UID  uint32
	Kind Kind
	Name string         // tool or prompt name, resource URI
	Args map[string]any // tools/call arguments
	// ArgsUnread, when set, says why Args is nil though the request has
	// arguments (too many values to decode): a record with a condition
	// cannot be evaluated, and does not allow it.
	ArgsUnread string
	Now        time.Time
	// Session is the asking session; Pin the digest of the definition of
	// the tool it was shown ("" when unknown). A record made for one
	// session, or for one definition, covers no other.
	Session, Pin string
	// Definition is the definition of the server the session runs
	// (config.Server.Definition): a record given for another covers
	// nothing (see Record.Definition).
	Definition string
	// Digest returns the digest of the request (method, target,
	// arguments) for records that allow one request only; computed only
	// when such a record is considered.
	Digest func() string
}

// Decision is the outcome; Record names the consent that allowed it.
type Decision struct {
	Allow  bool
	Record string
	Reason string // why not, for the caller and the audit
}

// entries returns the triple's records. The query and the compiling run
// without the engine's lock, so one session's cache miss never holds up
// another session's decision.
func (e *Engine) entries(t triple) ([]*entry, error) {
	e.mu.Lock()
	cached, ok := e.cache[t]
	gen := e.gen
	l := e.inflight[t]
	if !ok {
		if l == nil {
			l = &lookup{}
			e.inflight[t] = l
		}
		l.n++
	}
	e.mu.Unlock()
	if ok {
		return cached, nil
	}
	e.lookups.Add(1)
	recs, err := e.store.List(context.Background(), Filter{User: t.user, Agent: t.agent, Server: t.server, IncludeInactive: true, SkipSpent: true})
	if afterList != nil {
		afterList(t)
	}
	if err != nil {
		e.mu.Lock()
		e.lookupDone(t, l)
		e.mu.Unlock()
		return nil, err
	}
	var es []*entry
	for _, r := range recs {
		en := &entry{rec: r}
		if r.When != "" {
			c, err := Compile(r.When)
			if err != nil {
				continue // stored conditions compiled at grant time; a CEL upgrade may break one: it allows nothing
			}
			en.cond = c
		}
		es = append(es, en)
	}
	e.mu.Lock()
	if e.gen == gen && !l.stale {
		if len(e.cache) >= maxCachedTriples {
			for k := range e.cache { // any one: the map's order is random
				delete(e.cache, k)
				break
			}
		}
		e.cache[t] = es
	}
	e.lookupDone(t, l)
	e.mu.Unlock()
	return es, nil
}

// afterList, when set (tests only), runs between a look-up's query and
// its store in the cache.
var afterList func(triple)

// lookupDone ends one look-up of t; e.mu is held.
func (e *Engine) lookupDone(t triple, l *lookup) {
	if l.n--; l.n == 0 {
		delete(e.inflight, t)
	}
}

// Invalidate drops the whole cache (after a change that may concern
// every record: a configuration reload).
func (e *Engine) Invalidate() {
	e.mu.Lock()
	e.gen++
	e.cache = map[triple][]*entry{}
	e.mu.Unlock()
}

// InvalidateFor drops the cached records of one (user, agent, server),
// after a change to one of its records. Records belong to exactly one
// triple (the store matches them by equality), so no other entry can
// hold a copy of the changed record.
func (e *Engine) InvalidateFor(user, agent, server string) {
	t := triple{user, agent, server}
	e.mu.Lock()
	delete(e.cache, t)
	if l := e.inflight[t]; l != nil {
		l.stale = true
	}
	e.mu.Unlock()
}

// Lookups is the number of times a decision read the store because its
// triple's records were not cached.
func (e *Engine) Lookups() uint64 { return e.lookups.Load() }

// Decide finds an active record covering q and counts the call against
// it: taken from its budget when it has one, else just counted.
func (e *Engine) Decide(q Query) Decision {
	es, err := e.entries(triple{q.User, q.Agent, q.Server})
	if err != nil {
		return Decision{Reason: "consent store unavailable: " + err.Error()}
	}
	var reasons []string
	for _, en := range es {
		r := en.rec
		if !Covers(r, q.Kind, q.Name) || (r.Session != "" && r.Session != q.Session) {
			continue
		}
		if r.UID != int64(q.UID) {
			reasons = append(reasons, fmt.Sprintf("consent %s was given to %s", r.ID, uidText(r.UID, q.User, q.UID)))
			continue
		}
		if r.Definition != q.Definition {
			reasons = append(reasons, fmt.Sprintf("consent %s was given for %s", r.ID, definitionText(r.Definition, q.Definition, q.Server)))
			continue
		}
		if r.Request != "" && (q.Digest == nil || q.Digest() != r.Request) {
			reasons = append(reasons, fmt.Sprintf("consent %s allows one request with other arguments", r.ID))
			continue
		}
		if r.Pin != "" && r.Pin != q.Pin {
			reasons = append(reasons, fmt.Sprintf("consent %s was given for another definition of %s %q (pin %.12s)", r.ID, q.Kind, q.Name, r.Pin))
			continue
		}
		if !r.Active(q.Now) {
			reasons = append(reasons, fmt.Sprintf("consent %s is %s", r.ID, r.State(q.Now)))
			continue
		}
		if en.cond != nil && q.ArgsUnread != "" {
			reasons = append(reasons, fmt.Sprintf("consent %s's condition %s cannot be evaluated: %s", r.ID, r.When, q.ArgsUnread))
			continue
		}
		if en.cond != nil {
			ok, err := en.cond.Eval(Input{Args: q.Args, Tool: q.Name, Server: q.Server, Agent: q.Agent, User: q.User, Now: q.Now})
			if err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
			if !ok {
				reasons = append(reasons, fmt.Sprintf("consent %s's condition %s is false for these arguments", r.ID, r.When))
				continue
			}
		}
		if r.MaxCalls != nil {
			ok, err := e.store.Consume(r.ID, q.Now)
			if err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
			if !ok {
				reasons = append(reasons, fmt.Sprintf("consent %s has no calls left", r.ID))
				continue
			}
			e.InvalidateFor(q.User, q.Agent, q.Server) // calls_used changed
		} else {
			e.store.Count(r.ID)
		}
		return Decision{Allow: true, Record: r.ID}
	}
	if len(reasons) == 0 {
		// Concatenated, not formatted: observe mode builds this for every
		// call it forwards (one allocation instead of seven).
		return Decision{Reason: "no consent lets agent " + q.Agent + " use " + string(q.Kind) + " " + strconv.Quote(q.Name) +
			" of server " + q.Server + " for user " + q.User}
	}
	return Decision{Reason: strings.Join(reasons, "; ")}
}

// ArgNames lists the argument names the conditions of the triple's
// records may read (see [Condition.Names]); nil when none has a condition.
func (e *Engine) ArgNames(user, agent, server string) []string {
	es, err := e.entries(triple{user, agent, server})
	if err != nil {
		return nil
	}
	var out []string
	for _, en := range es {
		if en.cond != nil {
			out = append(out, en.cond.Names()...)
		}
	}
	return out
}

// Visible reports whether some active record covers the object, ignoring
// conditions (they depend on arguments) and without using budget: what
// tools/list shows.
// A record made for another session does not count.
func (e *Engine) Visible(user string, uid uint32, agent, server, session, definition string, k Kind, name string, now time.Time) bool {
	es, err := e.entries(triple{user, agent, server})
	if err != nil {
		return false
	}
	for _, en := range es {
		if Covers(en.rec, k, name) && en.rec.Active(now) && (en.rec.Session == "" || en.rec.Session == session) && en.rec.Definition == definition && en.rec.UID == int64(uid) {
			return true
		}
	}
	return false
}

// NextExpiry returns the earliest future expiry among the triple's active
// records (zero when none), so sessions can announce the change.
func (e *Engine) NextExpiry(user, agent, server string, now time.Time) time.Time {
	es, _ := e.entries(triple{user, agent, server})
	var next time.Time
	for _, en := range es {
		if x := en.rec.ExpiresAt; x != nil && x.After(now) && (next.IsZero() || x.Before(next)) {
			next = *x
		}
	}
	return next
}

// uidText says whom a record of another uid than the session's was given
// to: user as another account of the name, or before records were bound.
func uidText(recUID int64, user string, uid uint32) string {
	switch recUID {
	case api.UIDUnbound:
		return user + " before consents were bound to a uid, and mcpcaged could not bind it"
	case api.UIDGone:
		return user + " when no account of that name existed (a user removed before this release bound consents to a uid)"
	}
	return fmt.Sprintf("%s when the name was uid %d, not uid %d: an account made anew under the name inherits no consent (grant again)", user, recUID, uid)
}

// definitionText says which server a record's definition (def) names,
// for the reason it does not cover a session of definition of server:
// another program runs under that name.
func definitionText(def, session, server string) string {
	switch {
	case def == Unbound:
		return "server " + server + " before consents were bound to a server's definition, and mcpcaged could not bind it"
	case def == "":
		return "the administrator's server " + server + ", not this user's own server of that name"
	case session == "":
		return "a user's own server named " + server + ", not the administrator's"
	}
	return fmt.Sprintf("another definition of server %s (%.12s): it was defined anew since, or this session ran before it was", server, def)
}
