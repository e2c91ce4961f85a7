package relay

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/daemon/wire"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// holdCalls holds every tools/call until the test releases it by id.
type holdCalls struct {
	mu    sync.Mutex
	holds map[string]chan error
	seen  chan string // ids of held calls, as the inspector decides them
}

func newHoldCalls() *holdCalls {
	return &holdCalls{holds: map[string]chan error{}, seen: make(chan string, 16)}
}

func (h *holdCalls) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if e.Method != "tools/call" {
		return Verdict{}
	}
	id := string(e.ID.Of(msg))
	ch := make(chan error, 1)
	h.mu.Lock()
	h.holds[id] = ch
	h.mu.Unlock()
	h.seen <- id
	return Verdict{Hold: ch, HoldFailed: func(err error) []byte {
		return wire.ErrorResponse([]byte(id), wire.CodeDenied, "not recorded: "+err.Error(), nil)
	}}
}

func (*holdCalls) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

func (h *holdCalls) release(t *testing.T, id string, err error) {
	t.Helper()
	h.mu.Lock()
	ch := h.holds[id]
	h.mu.Unlock()
	if ch == nil {
		t.Fatalf("no hold for id %s", id)
	}
	ch <- err
}

func (h *holdCalls) waitSeen(t *testing.T, id string) {
	t.Helper()
	select {
	case got := <-h.seen:
		if got != id {
			t.Fatalf("inspector decided id %s, want %s", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the relay did not decide id %s while an earlier call was held", id)
	}
}

// TestRelayHoldKeepsOrderAndReads: a held call keeps everything behind it
// from the server, the relay meanwhile reads and decides the next calls,
// and the server receives all of it in the order the client sent it.
func TestRelayHoldKeepsOrderAndReads(t *testing.T) {
	ins := newHoldCalls()
	h := newHarness(t, Options{Inspector: ins})
	call1 := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}` + "\n"
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}` + "\n"
	call3 := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}}` + "\n"
	h.fromClient(call1 + ping + call3)
	ins.waitSeen(t, "1")
	ins.waitSeen(t, "3") // decided while call 1 is still held
	ins.release(t, "3", nil)
	ins.release(t, "1", nil)
	for i, want := range []string{call1, ping, call3} {
		if got := h.toServer(); got != want {
			t.Fatalf("message %d at the server = %q, want %q", i, got, want)
		}
	}
}

// TestRelayHoldFailedAnswersClient: a call whose hold fails never reaches
// the server; the client gets the inspector's answer, its id is free
// again, and what came behind it goes on.
func TestRelayHoldFailedAnswersClient(t *testing.T) {
	ins := newHoldCalls()
	h := newHarness(t, Options{Inspector: ins})
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a"}}` + "\n"
	ping := `{"jsonrpc":"2.0","id":8,"method":"ping"}` + "\n"
	h.fromClient(call + ping)
	ins.waitSeen(t, "7")
	ins.release(t, "7", errors.New("disk full"))
	// (The answer goes first: the harness's pipes do not buffer.)
	if got := h.toClient(); !strings.Contains(got, `"id":7`) || !strings.Contains(got, "not recorded: disk full") {
		t.Fatalf("client got %q, want the failure answer to id 7", got)
	}
	if got := h.toServer(); got != ping {
		t.Fatalf("server got %q, want only the ping", got)
	}
	if h.relay.Stats.Denied[ClientToServer].Load() != 1 {
		t.Fatalf("denied = %d, want 1", h.relay.Stats.Denied[ClientToServer].Load())
	}
	// The id is free again: the client may reuse it.
	h.fromClient(call)
	ins.waitSeen(t, "7")
	ins.release(t, "7", nil)
	if got := h.toServer(); got != call {
		t.Fatalf("server got %q, want the retried call", got)
	}
}

// TestRelayHoldInBatch: a batch waits for its elements' holds and goes on
// whole, or without the element whose hold failed.
func TestRelayHoldInBatch(t *testing.T) {
	ins := newHoldCalls()
	h := newHarness(t, Options{Inspector: ins})
	a := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`
	b := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}`
	batch := "[" + a + "," + b + "]\n"
	h.fromClient(batch)
	ins.waitSeen(t, "1")
	ins.release(t, "1", nil)
	ins.waitSeen(t, "2")
	ins.release(t, "2", errors.New("disk full"))
	if got := h.toClient(); !strings.Contains(got, `"id":2`) || !strings.Contains(got, "disk full") {
		t.Fatalf("client got %q", got)
	}
	if got := h.toServer(); got != "["+a+"]\n" {
		t.Fatalf("server got %q, want the batch without element 2", got)
	}
}

// yieldedHolds decides tools/call with a hold that has already yielded:
// ok for names other than "fail" (the record is written before the
// verdict, as the audit log's batch mode does).
type yieldedHolds struct{}

func (yieldedHolds) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if e.Method != "tools/call" {
		return Verdict{}
	}
	ch := make(chan error, 1)
	if strings.Contains(string(msg), `"fail"`) {
		ch <- errors.New("disk full")
	} else {
		ch <- nil
	}
	id := string(e.ID.Of(msg))
	return Verdict{Hold: ch, HoldFailed: func(err error) []byte {
		return wire.ErrorResponse([]byte(id), wire.CodeDenied, "not recorded: "+err.Error(), nil)
	}}
}

func (yieldedHolds) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

// TestRelayHoldAlreadyYielded: a hold that has yielded when the verdict
// comes forwards at once (or answers the client with the failure), in
// order with what follows.
func TestRelayHoldAlreadyYielded(t *testing.T) {
	h := newHarness(t, Options{Inspector: yieldedHolds{}})
	ok := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok"}}` + "\n"
	bad := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fail"}}` + "\n"
	ping := `{"jsonrpc":"2.0","id":3,"method":"ping"}` + "\n"
	h.fromClient(ok)
	if got := h.toServer(); got != ok {
		t.Fatalf("server got %q, want the call", got)
	}
	h.fromClient(bad + ping)
	if got := h.toClient(); !strings.Contains(got, `"id":2`) || !strings.Contains(got, "not recorded: disk full") {
		t.Fatalf("client got %q, want the failure answer to id 2", got)
	}
	if got := h.toServer(); got != ping {
		t.Fatalf("server got %q, want the ping", got)
	}
	if n := h.relay.Stats.Denied[ClientToServer].Load(); n != 1 {
		t.Fatalf("denied = %d, want 1", n)
	}
	h.fromClient(strings.Replace(bad, `"fail"`, `"ok"`, 1)) // id 2 is free again
	if got := h.toServer(); !strings.Contains(got, `"id":2`) {
		t.Fatalf("server got %q, want the retried call", got)
	}
}

// TestRelayQueueIsBoundedInBytes: behind a held call, with a server that
// reads nothing, the client's messages wait in the daemon's memory. They
// were bounded in number only (1024 of max_message_bytes each: a client
// grew the daemon by 5.6 GiB from one session, found by a red-team
// helper). The relay now stops reading once maxQueuedBytes wait, and
// every message still reaches the server, in order, once it reads.
func TestRelayQueueIsBoundedInBytes(t *testing.T) {
	ins := newHoldCalls()
	ins.seen = make(chan string, 64)
	h := newHarness(t, Options{Inspector: ins, MaxMessageBytes: 4 << 20})
	const n = 24
	pad := strings.Repeat("x", 1<<20)
	msg := func(i int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"a","arguments":{"pad":%q}}}`+"\n", i, pad)
	}
	var all strings.Builder
	for i := 1; i <= n; i++ {
		all.WriteString(msg(i))
	}
	h.fromClient(all.String())
	// Call 1 is held; the calls behind it are decided and queued while
	// their bytes fit, and the next one decided waits for room.
	decided := maxQueuedBytes/len(msg(10)) + 1
	for i := 1; i <= decided; i++ {
		ins.waitSeen(t, strconv.Itoa(i))
	}
	// The client loop waits for room, with at most the bound queued, and
	// reads nothing more meanwhile.
	var used int
	testenv.WaitFor(t, "the client loop to wait for room in the queue", 10*time.Second, func() (bool, string) {
		h.relay.queuedBytes.mu.Lock()
		defer h.relay.queuedBytes.mu.Unlock()
		used = h.relay.queuedBytes.used
		return h.relay.queuedBytes.waiting, fmt.Sprintf("%d bytes queued, not waiting", used)
	})
	if used > maxQueuedBytes {
		t.Fatalf("%d bytes queued behind a held call, want at most %d", used, maxQueuedBytes)
	}
	select {
	case id := <-ins.seen:
		t.Fatalf("call %s was read and decided with %d bytes already queued behind a held call", id, used)
	default:
	}
	// The server reads: every call arrives, in the client's order.
	got := make(chan string, n)
	go func() {
		for range n {
			got <- h.toServer()
		}
	}()
	for i := 1; i <= n; i++ {
		if i > decided {
			ins.waitSeen(t, strconv.Itoa(i))
		}
		ins.release(t, strconv.Itoa(i), nil)
	}
	for i := 1; i <= n; i++ {
		select {
		case line := <-got:
			if line != msg(i) {
				t.Fatalf("message %d at the server is %.80q, want call %d", i, line, i)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("call %d did not reach the server", i)
		}
	}
}
