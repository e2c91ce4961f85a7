package relay

import (
	"sort"
	"strconv"
	"sync"
	"time"
)

// table holds requests awaiting a response, keyed by wire.IDKey.
type table struct {
	mu sync.Mutex
	m  map[string]pendingCall
	// recent holds answered requests (a ring of recentCap), so events that
	// reach the daemon late are still attributed to the calls in flight
	// when they happened.
	recent []Call
	next   int
	// cancelled remembers the last cancelledCap requests removed by a
	// notifications/cancelled, so a late answer to one is recognised (and
	// dropped quietly) rather than taken for a forgery. Bounded like the
	// rest of the table.
	cancelled     map[string]struct{}
	cancelledRing []string
	cancelledNext int
}

const cancelledCap = 1024

const recentCap = 512

type pendingCall struct {
	rawID  []byte
	method string
	since  time.Time
}

// maxPending bounds one direction's table so a peer cannot grow it
// without limit by never answering.
const maxPending = 10000

func newTable() *table {
	return &table{m: make(map[string]pendingCall), cancelled: make(map[string]struct{})}
}

// addResult says whether a request entered the table, and why not.
type addResult uint8

const (
	added     addResult = iota
	duplicate           // the id is already pending
	full                // maxPending requests are pending
)

// add records a request.
func (t *table) add(key string, rawID []byte, method string) addResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.room(key); r != added {
		return r
	}
	t.m[key] = pendingCall{rawID: append([]byte(nil), rawID...), method: method, since: time.Now()}
	return added
}

// check says whether a request with key could be added now.
func (t *table) check(key string) addResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.room(key)
}

// room is check with mu held.
func (t *table) room(key string) addResult {
	if _, dup := t.m[key]; dup {
		return duplicate
	}
	if len(t.m) >= maxPending {
		return full
	}
	return added
}

func (t *table) take(key string) (pendingCall, bool) {
	if key == "" {
		return pendingCall{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.m[key]
	if ok {
		delete(t.m, key)
		t.remember(p)
	}
	return p, ok
}

// cancel removes a pending request its sender cancelled; it reports
// whether one was pending.
func (t *table) cancel(key string) bool {
	if key == "" {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.m[key]
	if !ok {
		return false
	}
	delete(t.m, key)
	t.remember(p)
	if len(t.cancelledRing) < cancelledCap {
		t.cancelledRing = append(t.cancelledRing, key)
	} else {
		delete(t.cancelled, t.cancelledRing[t.cancelledNext])
		t.cancelledRing[t.cancelledNext] = key
		t.cancelledNext = (t.cancelledNext + 1) % cancelledCap
	}
	t.cancelled[key] = struct{}{}
	return true
}

// wasCancelled reports whether key names a recently cancelled request.
func (t *table) wasCancelled(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.cancelled[key]
	return ok
}

// remember keeps an answered request in the ring (caller holds mu).
func (t *table) remember(p pendingCall) {
	c := Call{ID: string(p.rawID), Method: p.method, Since: p.since, Until: time.Now()}
	if len(t.recent) < recentCap {
		t.recent = append(t.recent, c)
		return
	}
	t.recent[t.next] = c
	t.next = (t.next + 1) % recentCap
}

// at lists the requests of method that were in flight at time at.
func (t *table) at(when time.Time, method string) []Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Call
	for _, p := range t.m {
		if p.method == method && !p.since.After(when) {
			out = append(out, Call{ID: string(p.rawID), Method: p.method, Since: p.since})
		}
	}
	for _, c := range t.recent {
		if c.Method == method && !c.Since.After(when) && !c.Until.Before(when) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

func (t *table) drain() []pendingCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]pendingCall, 0, len(t.m))
	for k, p := range t.m {
		out = append(out, p)
		delete(t.m, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].since.Before(out[j].since) })
	return out
}

func (t *table) list() []Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Call, 0, len(t.m))
	for _, p := range t.m {
		out = append(out, Call{ID: string(p.rawID), Method: p.method, Since: p.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// floatKey is the key of the one pending numeric id that reads as the
// same number as raw (a server that decoded the id as a float64 and
// encoded it again: 7.0 or 7e0 for 7, or 1e2 for 100, as JavaScript and
// many JSON libraries read ids); false when none or more than one does.
// Ids beyond 2^53 are refused before they reach a server (PlainID). take
// the key to have its call.
func (t *table) floatKey(raw []byte) (string, bool) {
	if len(raw) == 0 || !(raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) {
		return "", false
	}
	want, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	found := ""
	for k, p := range t.m {
		if k[0] != 'n' {
			continue
		}
		if f, err := strconv.ParseFloat(string(p.rawID), 64); err == nil && f == want {
			if found != "" {
				return "", false // ambiguous: refuse to guess
			}
			found = k
		}
	}
	return found, found != ""
}
