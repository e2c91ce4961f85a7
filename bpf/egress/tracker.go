package egress

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// LookupFunc resolves a host name with TTLs (DNS.LookupTTL).
type LookupFunc func(ctx context.Context, host string) ([]Answer, error)

// TTL bounds: a record's TTL is clamped to [MinTTL, MaxTTL], and a failed
// look-up is retried after RetryAfter while the last answer stays in force.
const (
	MinTTL     = time.Second
	MaxTTL     = time.Hour
	RetryAfter = 5 * time.Second
)

// MaxAddrsPerName bounds the addresses one host name keeps allowed at
// once. Whoever runs a name's zone chooses its answers: one answer can
// hold thousands of addresses (over TCP), and answers that change at
// every look-up with a short TTL on one record and the longest on the
// others would each add theirs for an hour. Every address takes an entry
// of the kernel's egress tries, which all sessions share, and memory of
// the daemon's. Past the bound the addresses of the latest answer are
// kept first (in its order), then those expiring last; the others are
// let go (Dropped counts them). Round-robin names of large services
// answer with 8 or fewer addresses at a time.
const MaxAddrsPerName = 64

// Tracker keeps a session's egress rules current: each address a host
// name resolved to stays allowed until its record's TTL runs out, and the
// name is looked up again at the earliest expiry.
type Tracker struct {
	entries []Entry
	lookup  LookupFunc
	addrs   map[int]map[netip.Addr]resolved // entry index -> address -> its last answer
	retry   map[int]time.Time               // entry index -> next attempt after a failure
	stale   map[int]bool                    // entry index -> serve expired addresses (servers unreachable)
	dropped int                             // addresses let go past MaxAddrsPerName, in all
}

// resolved is what the Tracker keeps of an address a name resolved to.
type resolved struct {
	expires time.Time
	trusted bool // Answer.Trusted
}

// NewTracker tracks entries, resolving their host names with lookup.
func NewTracker(entries []Entry, lookup LookupFunc) *Tracker {
	return &Tracker{entries: entries, lookup: lookup, addrs: map[int]map[netip.Addr]resolved{}, retry: map[int]time.Time{}, stale: map[int]bool{}}
}

// Refresh looks up the names that are due at now (all of them on the
// first call) and returns the rules in force and when to call again (zero
// when no entry names a host). The first call fails when a name does not
// resolve; later failures keep the last answer when the servers do not answer
// (serve stale) and are returned
// alongside the rules, for the log.
func (t *Tracker) Refresh(ctx context.Context, now time.Time) (rules []Rule, next time.Time, err error) {
	var errs []error
	for _, e := range t.entries {
		if e.Host == "" || !t.due(e.Index, now) {
			continue
		}
		answers, lerr := t.lookup(ctx, e.Host)
		if lerr != nil {
			lerr = fmt.Errorf("egress %q: resolve %s: %w", e.Raw, e.Host, lerr)
			if t.addrs[e.Index] == nil {
				return nil, time.Time{}, lerr
			}
			errs = append(errs, lerr)
			t.retry[e.Index] = now.Add(RetryAfter)
			// No answer from the servers: keep the last one (serve stale).
			// A name that no longer exists loses its addresses as they expire.
			t.stale[e.Index] = !errors.Is(lerr, ErrNoSuchHost)
			continue
		}
		delete(t.retry, e.Index)
		delete(t.stale, e.Index)
		seen := t.addrs[e.Index]
		if seen == nil {
			seen = map[netip.Addr]resolved{}
			t.addrs[e.Index] = seen
		}
		fresh := make([]netip.Addr, 0, min(len(answers), MaxAddrsPerName))
		for _, a := range answers {
			addr := a.Addr.Unmap()
			if !slices.Contains(fresh, addr) {
				if len(fresh) == MaxAddrsPerName {
					t.dropped++ // past the bound in this answer alone
					continue
				}
				fresh = append(fresh, addr)
			}
			exp := now.Add(min(max(a.TTL, MinTTL), MaxTTL))
			r, ok := seen[addr]
			if !ok || exp.After(r.expires) {
				r.expires = exp
			}
			r.trusted = a.Trusted // the latest answer says where it came from
			seen[addr] = r
		}
		t.dropped += keepAtMost(seen, fresh, MaxAddrsPerName, now)
	}
	for _, e := range t.entries {
		ports := e.ports()
		if e.Host == "" {
			rules = append(rules, e.rules()...)
			continue
		}
		seen := t.addrs[e.Index]
		addrs := make([]netip.Addr, 0, len(seen))
		for a, r := range seen {
			if exp := r.expires; !exp.After(now) {
				if !t.stale[e.Index] {
					delete(seen, a) // expired, and not in a fresh answer
					continue
				}
			} else if next.IsZero() || exp.Before(next) {
				next = exp
			}
			addrs = append(addrs, a)
		}
		if r := t.retry[e.Index]; !r.IsZero() && (next.IsZero() || r.Before(next)) {
			next = r
		}
		slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		for _, a := range addrs {
			rules = append(rules, Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Ports: ports, Index: e.Index,
				Answer: !seen[a].trusted, Name: e.Host})
		}
	}
	return rules, next, errors.Join(errs...)
}

// Dropped is how many addresses host names resolved to were let go past
// MaxAddrsPerName since the tracker began.
func (t *Tracker) Dropped() int { return t.dropped }

// keepAtMost lets go of addresses of seen past max: those of the latest
// answer (fresh) stay first, then those expiring last. Addresses expired
// at now go first and are not counted (they would go anyway: a fresh
// answer came). It returns how many live addresses went.
func keepAtMost(seen map[netip.Addr]resolved, fresh []netip.Addr, max int, now time.Time) int {
	if len(seen) <= max {
		return 0
	}
	older := make([]netip.Addr, 0, len(seen))
	for a, r := range seen {
		switch {
		case slices.Contains(fresh, a):
		case !r.expires.After(now):
			delete(seen, a)
		default:
			older = append(older, a)
		}
	}
	slices.SortFunc(older, func(a, b netip.Addr) int {
		if c := seen[b].expires.Compare(seen[a].expires); c != 0 {
			return c // expiring last first
		}
		return a.Compare(b)
	})
	room := max - min(len(fresh), max)
	gone := 0
	for _, a := range older[min(room, len(older)):] {
		delete(seen, a)
		gone++
	}
	return gone
}

// due reports whether entry i's name should be looked up at now.
func (t *Tracker) due(i int, now time.Time) bool {
	if r, ok := t.retry[i]; ok {
		return !now.Before(r)
	}
	seen := t.addrs[i]
	if len(seen) == 0 {
		return true
	}
	for _, r := range seen {
		if !r.expires.After(now) {
			return true
		}
	}
	return false
}
