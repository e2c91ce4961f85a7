package relay

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// parkCalls parks every tools/call until the test releases it by id.
type parkCalls struct {
	mu        sync.Mutex
	parks     map[string]chan error
	seen      chan string
	cancelled chan string
}

func newParkCalls() *parkCalls {
	return &parkCalls{parks: map[string]chan error{}, seen: make(chan string, 16), cancelled: make(chan string, 16)}
}

func (p *parkCalls) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if e.Method != "tools/call" {
		return Verdict{}
	}
	id := string(e.ID.Of(msg))
	ch := make(chan error, 1)
	p.mu.Lock()
	p.parks[id] = ch
	p.mu.Unlock()
	p.seen <- id
	return Verdict{Park: ch, HoldFailed: func(err error) []byte {
		return wire.ErrorResponse([]byte(id), wire.CodeDenied, "refused: "+err.Error(), nil)
	}}
}

func (*parkCalls) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

func (p *parkCalls) Cancelled(d Direction, rawID []byte) { p.cancelled <- string(rawID) }

func (p *parkCalls) release(id string, err error) {
	p.mu.Lock()
	ch := p.parks[id]
	p.mu.Unlock()
	ch <- err
}

// TestRelayParkDoesNotHoldOthers: a parked call keeps nothing behind it
// waiting (a ping and another call reach the server first); released, it
// reaches the server; refused, its sender gets the refusal; cancelled by
// the client, neither the call nor the cancellation reaches the server.
func TestRelayParkDoesNotHoldOthers(t *testing.T) {
	ins := newParkCalls()
	h := newHarness(t, Options{Inspector: ins})
	call1 := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}` + "\n"
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}` + "\n"
	h.fromClient(call1)
	<-ins.seen
	h.fromClient(ping)
	if got := h.toServer(); got != ping {
		t.Fatalf("behind a parked call the server got %q, want the ping", got)
	}
	ins.release("1", nil)
	if got := h.toServer(); got != call1 {
		t.Fatalf("the released call reached the server as %q", got)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n")
	if got := h.toClient(); !strings.Contains(got, `"id":1`) {
		t.Fatalf("the released call's answer: %q", got)
	}

	h.fromClient(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}}` + "\n")
	<-ins.seen
	ins.release("3", errors.New("the user said no"))
	if got := h.toClient(); !strings.Contains(got, "the user said no") || !strings.Contains(got, `"id":3`) {
		t.Fatalf("a refused parked call's answer: %q", got)
	}

	h.fromClient(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"c"}}` + "\n")
	<-ins.seen
	h.fromClient(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}` + "\n")
	if got := <-ins.cancelled; got != "4" {
		t.Fatalf("cancelled %q, want 4", got)
	}
	ins.release("4", nil) // too late: the client gave up on it
	ping5 := `{"jsonrpc":"2.0","id":5,"method":"ping"}` + "\n"
	h.fromClient(ping5)
	if got := h.toServer(); got != ping5 {
		t.Fatalf("after a cancelled parked call the server got %q, want only the next ping", got)
	}
	if len(h.relay.InFlight()) != 2 { // the pings
		t.Fatalf("in flight: %v", h.relay.InFlight())
	}
}

// TestRelayParkInBatchRefused: a batch element cannot wait for a person.
func TestRelayParkInBatchRefused(t *testing.T) {
	ins := newParkCalls()
	h := newHarness(t, Options{Inspector: ins})
	h.fromClient(`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]` + "\n")
	<-ins.seen
	if got := h.toClient(); !strings.Contains(got, "batch") {
		t.Fatalf("a parked batch element's answer: %q", got)
	}
	if got := h.toServer(); !strings.Contains(got, "ping") || strings.Contains(got, "tools/call") {
		t.Fatalf("the server got %q, want the ping alone", got)
	}
}

// TestRelayOwnRequests: the daemon's own request reaches the client in
// its namespace; the client's answer comes back to the daemon and never
// reaches the server; Forget tells the client, and a late answer is
// dropped.
func TestRelayOwnRequests(t *testing.T) {
	h := newHarness(t, Options{})
	type asked struct {
		id     string
		answer <-chan []byte
		err    error
	}
	ask := func(params string) asked {
		ch := make(chan asked, 1)
		go func() { // the client's end is a synchronous pipe here
			id, answer, err := h.relay.Ask("elicitation/create", []byte(params))
			ch <- asked{id, answer, err}
		}()
		line := h.toClient()
		a := <-ch
		if a.err != nil || !strings.HasPrefix(a.id, OwnIDPrefix) || !strings.Contains(line, `"id":"`+a.id+`"`) || !strings.Contains(line, "elicitation/create") {
			t.Fatalf("Ask: %q, %v; the client got %q", a.id, a.err, line)
		}
		return a
	}
	a := ask(`{"message":"ok?"}`)
	id, answer := a.id, a.answer
	h.fromClient(`{"jsonrpc":"2.0","id":"` + id + `","result":{"action":"accept"}}` + "\n")
	if got := string(<-answer); !strings.Contains(got, "accept") {
		t.Fatalf("the daemon got %q", got)
	}
	a2 := ask(`{}`)
	id2, answer2 := a2.id, a2.answer
	go h.relay.Forget(id2, "timed out")
	if got := h.toClient(); !strings.Contains(got, "notifications/cancelled") || !strings.Contains(got, id2) {
		t.Fatalf("Forget told the client %q", got)
	}
	h.fromClient(`{"jsonrpc":"2.0","id":"` + id2 + `","result":{}}` + "\n")
	ping := `{"jsonrpc":"2.0","id":9,"method":"ping"}` + "\n"
	h.fromClient(ping)
	if got := h.toServer(); got != ping {
		t.Fatalf("the server got %q: a response to the daemon's request must never reach it", got)
	}
	select {
	case v := <-answer2:
		t.Fatalf("a forgotten request got an answer: %q", v)
	default:
	}
}
