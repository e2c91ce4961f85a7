package relay

import (
	"sort"
	"sync"
	"time"
)

// table holds requests awaiting a response, keyed by wire.IDKey.
type table struct {
	mu sync.Mutex
	m  map[string]pendingCall
}

type pendingCall struct {
	rawID  []byte
	method string
	since  time.Time
}

// maxPending bounds one direction's table so a peer cannot grow it
// without limit by never answering.
const maxPending = 10000

func newTable() *table { return &table{m: make(map[string]pendingCall)} }

// add records a request; false when the id is already pending or the
// table is full.
func (t *table) add(key string, rawID []byte, method string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.m[key]; dup || len(t.m) >= maxPending {
		return false
	}
	t.m[key] = pendingCall{rawID: append([]byte(nil), rawID...), method: method, since: time.Now()}
	return true
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
	}
	return p, ok
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
