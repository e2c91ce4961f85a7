package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// OwnIDPrefix starts the string id of every request the daemon itself sends
// to the client. Servers' requests with ids in this namespace are refused,
// so the two can never be confused.
const OwnIDPrefix = "mcpcage-"

type ownCalls struct {
	mu   sync.Mutex
	next uint64
	wait map[string]chan ownResult
}

type ownResult struct {
	msg []byte
	err error
}

func newOwnCalls() *ownCalls { return &ownCalls{wait: map[string]chan ownResult{}} }

// deliver hands a client response to the daemon request it answers.
func (o *ownCalls) deliver(key string, msg []byte, _ *wire.Envelope) bool {
	if !strings.HasPrefix(key, "s"+OwnIDPrefix) {
		return false
	}
	o.mu.Lock()
	ch, ok := o.wait[key]
	delete(o.wait, key)
	o.mu.Unlock()
	if ok {
		ch <- ownResult{msg: append([]byte(nil), msg...)}
	}
	return true // in our namespace: never forwarded, answered or not
}

func (o *ownCalls) failAll(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, ch := range o.wait {
		ch <- ownResult{err: err}
		delete(o.wait, k)
	}
}

// ErrClientError is returned by Call when the client answered with an
// error; the error text is the client's message.
var ErrClientError = errors.New("client answered with an error")

// Call sends a request of the daemon's own to the client and waits for the
// response's result (raw JSON).
func (r *Relay) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	p, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("encode params: %w", err)
	}
	r.own.mu.Lock()
	r.own.next++
	id := OwnIDPrefix + strconv.FormatUint(r.own.next, 10)
	ch := make(chan ownResult, 1)
	r.own.wait["s"+id] = ch
	r.own.mu.Unlock()

	req, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      string          `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}{"2.0", id, method, p})
	if err := r.writeClient(append(req, '\n')); err != nil {
		r.own.mu.Lock()
		delete(r.own.wait, "s"+id)
		r.own.mu.Unlock()
		return nil, fmt.Errorf("send %s to client: %w", method, err)
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, res.err
		}
		var env struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(res.msg, &env); err != nil {
			return nil, fmt.Errorf("decode client response: %w", err)
		}
		if env.Error != nil {
			return nil, fmt.Errorf("%w: %s", ErrClientError, env.Error.Message)
		}
		return env.Result, nil
	case <-ctx.Done():
		r.own.mu.Lock()
		delete(r.own.wait, "s"+id)
		r.own.mu.Unlock()
		return nil, ctx.Err()
	case <-r.endCh:
		return nil, errors.New("session ended")
	}
}
