package relay

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// OwnIDPrefix starts the string id of every request the daemon itself may
// send to the client. The namespace is reserved now so that no server and
// no client can ever occupy it: a server's request with such an id is
// refused, and a client's response with such an id is consumed here
// (nothing of the daemon's can be waiting for it unless the daemon asked).
const OwnIDPrefix = "mcpcage-"

// ownKey reports whether a correlation key (see wire.IDKey) lies in the
// daemon's own namespace.
func ownKey(key string) bool { return strings.HasPrefix(key, "s"+OwnIDPrefix) }

// own tracks the daemon's own requests to the client awaiting answers.
type own struct {
	mu      sync.Mutex
	next    uint64
	waiting map[string]chan []byte // correlation key -> where the response goes
	ended   bool
}

// deliver hands a client response in the daemon's namespace to whoever
// waits for it; false when nobody does.
func (o *own) deliver(key string, resp []byte) bool {
	o.mu.Lock()
	ch, ok := o.waiting[key]
	delete(o.waiting, key)
	o.mu.Unlock()
	if ok {
		ch <- append([]byte(nil), resp...) // buffered: never blocks
	}
	return ok
}

// end closes every wait: no answer will come.
func (o *own) end() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = true
	for k, ch := range o.waiting {
		close(ch)
		delete(o.waiting, k)
	}
}

// maxOwn bounds the daemon's own requests awaiting the client.
const maxOwn = 64

// ErrOwnLimit: too many of the daemon's requests await the client.
var ErrOwnLimit = errors.New("too many of mcpcage's own requests are waiting for the client")

// errRelayEnded: the relay ended; the client will answer nothing more.
var errRelayEnded = errors.New("the session ended")

// Ask sends a request of the daemon's own to the client (an id in
// OwnIDPrefix's namespace) and returns its id and where its response (the
// whole message) arrives; the channel is closed without a value when the
// session ends first. Forget gives up on it.
func (r *Relay) Ask(method string, params json.RawMessage) (id string, answer <-chan []byte, err error) {
	o := &r.own
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return "", nil, errRelayEnded
	}
	if len(o.waiting) >= maxOwn {
		o.mu.Unlock()
		return "", nil, ErrOwnLimit
	}
	o.next++
	id = OwnIDPrefix + "q-" + strconv.FormatUint(o.next, 10)
	rawID, _ := json.Marshal(id)
	ch := make(chan []byte, 1)
	o.waiting[wire.IDKey(rawID)] = ch
	o.mu.Unlock()
	msg, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      string          `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}{"2.0", id, method, params})
	if err := r.writeClient(append(msg, '\n')); err != nil {
		r.forgetOwn(rawID)
		return "", nil, err
	}
	return id, ch, nil
}

// Forget gives up on the daemon's request id: the client is told
// (notifications/cancelled) and a late answer is dropped.
func (r *Relay) Forget(id, reason string) {
	rawID, _ := json.Marshal(id)
	if !r.forgetOwn(rawID) {
		return
	}
	msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": methodCancelled,
		"params": map[string]any{"requestId": id, "reason": reason}})
	_ = r.writeClient(append(msg, '\n'))
}

func (r *Relay) forgetOwn(rawID []byte) bool {
	o := &r.own
	o.mu.Lock()
	defer o.mu.Unlock()
	key := wire.IDKey(rawID)
	_, ok := o.waiting[key]
	delete(o.waiting, key)
	return ok
}
