package daemon

import (
	"encoding/json"
	"sync"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// In the stateless era (2026-07-28) a server may send change
// notifications only on a subscriptions/listen stream the client opened,
// each tagged with the stream's id in _meta. The daemon's own
// notifications/tools/list_changed (after a grant, a revocation or an
// expiry) follow the same rule: listenStreams tracks the client's open
// streams that asked for tool list changes.

const (
	methodListenAcked   = "notifications/subscriptions/acknowledged"
	metaSubscriptionID  = "io.modelcontextprotocol/subscriptionId"
	filterToolsChanged  = "toolsListChanged"
	methodToolsChanged  = "notifications/tools/list_changed"
	listChangedUntagged = `{"jsonrpc":"2.0","method":"` + methodToolsChanged + `"}`
)

// listenStreams are a session's open subscriptions/listen requests.
type listenStreams struct {
	mu   sync.Mutex
	open map[string]listenStream // by id key
}

type listenStream struct {
	rawID []byte
	tools bool // opted in to tools/list_changed
}

// opened notes a subscriptions/listen request from the client.
func (l *listenStreams) opened(rawID, params []byte) {
	tools := false
	if m, err := wire.Object(params, []string{"notifications"}); err == nil {
		if sp, ok := m["notifications"]; ok && len(sp.Of(params)) > 0 && sp.Of(params)[0] == '{' {
			if f, err := wire.Object(sp.Of(params), []string{filterToolsChanged}); err == nil {
				if v, ok := f[filterToolsChanged]; ok {
					tools = string(v.Of(sp.Of(params))) == "true"
				}
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = map[string]listenStream{}
	}
	l.open[wire.IDKey(rawID)] = listenStream{rawID: append([]byte(nil), rawID...), tools: tools}
}

// closed forgets a stream (the server ended it, or the client cancelled).
func (l *listenStreams) closed(rawID []byte) {
	l.mu.Lock()
	delete(l.open, wire.IDKey(rawID))
	l.mu.Unlock()
}

// asksTools reports whether the stream with this raw id opted in to tool
// list changes.
func (l *listenStreams) asksTools(rawID []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[wire.IDKey(rawID)].tools
}

// toolsListChanged returns the notifications to send for a change of the
// tool list: one per open stream that asked for them, tagged with its id.
func (l *listenStreams) toolsListChanged() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	for _, s := range l.open {
		if !s.tools {
			continue
		}
		b := []byte(`{"jsonrpc":"2.0","method":"` + methodToolsChanged + `","params":{"_meta":{"` + metaSubscriptionID + `":`)
		b = append(b, s.rawID...)
		out = append(out, append(b, "}}}"...))
	}
	return out
}

// maxAcknowledgedBytes bounds the acknowledgements acknowledge decodes (a
// server's: found by a red-team helper, one of 16 MiB cost 234 MiB).
const maxAcknowledgedBytes = 64 << 10

// acknowledge rewrites a server's notifications/subscriptions/acknowledged
// so that it includes toolsListChanged when the client asked for it: the
// daemon sends those itself when consents change, even for a server that
// does not. It returns nil when nothing needs to change.
func (l *listenStreams) acknowledge(params []byte) []byte {
	if len(params) > maxAcknowledgedBytes {
		return nil // more than an acknowledgement holds: left as it is, not decoded
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(p["_meta"], &meta) != nil || !l.asksTools(meta[metaSubscriptionID]) {
		return nil
	}
	filter := map[string]json.RawMessage{}
	if len(p["notifications"]) > 0 && json.Unmarshal(p["notifications"], &filter) != nil {
		return nil
	}
	if string(filter[filterToolsChanged]) == "true" {
		return nil
	}
	filter[filterToolsChanged] = json.RawMessage("true")
	p["notifications"], _ = json.Marshal(filter)
	out, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	return out
}
