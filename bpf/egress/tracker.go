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

// Tracker keeps a session's egress rules current: each address a host
// name resolved to stays allowed until its record's TTL runs out, and the
// name is looked up again at the earliest expiry.
type Tracker struct {
	entries []Entry
	lookup  LookupFunc
	addrs   map[int]map[netip.Addr]resolved // entry index -> address -> its last answer
	retry   map[int]time.Time               // entry index -> next attempt after a failure
	stale   map[int]bool                    // entry index -> serve expired addresses (servers unreachable)
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
		for _, a := range answers {
			exp := now.Add(min(max(a.TTL, MinTTL), MaxTTL))
			addr := a.Addr.Unmap()
			r, ok := seen[addr]
			if !ok || exp.After(r.expires) {
				r.expires = exp
			}
			r.trusted = a.Trusted // the latest answer says where it came from
			seen[addr] = r
		}
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
