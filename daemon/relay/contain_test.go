package relay

import (
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// panicking is an inspector with a bug: it panics on the method "boom"
// in the direction it is set for, and passes everything else.
type panicking struct{ fromClient bool }

func (p panicking) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if p.fromClient && e.Method == "boom" {
		panic("a bug")
	}
	return Verdict{}
}

func (p panicking) FromServer(e *wire.Envelope, msg []byte, request string) Verdict {
	if !p.fromClient && e.Method == "boom" {
		panic("a bug")
	}
	return Verdict{}
}

// TestRelayContainsABug: a panic in the loop that deals with one
// direction's messages ends the session (ExitInternal, ErrInternal), not
// the process: the server's stdin is closed, OnInternalError is called
// once, and Run returns once the server's output ends, however much
// either peer still writes.
func TestRelayContainsABug(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fromClient bool
	}{{"client loop", true}, {"server loop", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var bugs atomic.Int32
			h := newHarness(t, Options{Inspector: panicking{fromClient: tc.fromClient}, OnInternalError: func() { bugs.Add(1) }})
			go func() { _, _ = io.Copy(io.Discard, h.clientR) }() // the client reads what it is sent
			h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n")
			h.toServer()
			boom := `{"jsonrpc":"2.0","id":2,"method":"boom"}` + "\n"
			if tc.fromClient {
				h.fromClient(boom)
			} else {
				h.fromServer(boom)
			}
			// The relay closes the server's stdin: the server sees EOF.
			if _, err := h.serverR.ReadString('\n'); !errors.Is(err, io.EOF) {
				t.Fatalf("server stdin: %v, want EOF", err)
			}
			// Both peers may still write; nothing waits on the loop that
			// stopped.
			h.fromClient(`{"jsonrpc":"2.0","method":"notifications/x"}` + "\n")
			h.fromServer(`{"jsonrpc":"2.0","method":"notifications/y"}` + "\n")
			h.serverW.Close()
			h.clientW.Close()
			h.endsForTheBug(t, &bugs)
		})
	}
}

// heldPanicking holds every "held" request, and its HoldFailed has a bug.
type heldPanicking struct{ hold chan error }

func (p heldPanicking) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if e.Method != "held" {
		return Verdict{}
	}
	return Verdict{Hold: p.hold, HoldFailed: func(error) []byte { panic("a bug in HoldFailed") }}
}

func (heldPanicking) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

// TestRelayContainsABugInTheWriter: a panic in the loop that writes to
// the server's stdin (here in a held request's refusal) ends the session
// too, with the client still sending more than the queue's room. (A
// red-team helper found the client loop could then wait for room the
// stopped writer would never give back; the writer's drain now turns the
// room's bound off. This test did not reproduce that wait.)
func TestRelayContainsABugInTheWriter(t *testing.T) {
	ins := heldPanicking{hold: make(chan error, 1)}
	bug := make(chan struct{})
	h := newHarness(t, Options{Inspector: ins, MaxMessageBytes: 16 << 20, OnInternalError: func() { close(bug) }})
	go func() { _, _ = io.Copy(io.Discard, h.clientR) }()
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"held"}` + "\n")
	for end := time.Now().Add(10 * time.Second); h.relay.queued.Load() < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(end) { // it waits in the writer's queue
			t.Fatalf("%d messages queued, want 1", h.relay.queued.Load())
		}
	}
	ins.hold <- errors.New("refused") // the writer refuses it: HoldFailed panics
	select {
	case <-bug:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not hit the bug")
	}
	// Whatever the writer took and did not give back when it stopped, the
	// client loop never waits for room again (it did, for good, about
	// once in 60 runs on a loaded machine: the held request's bytes were
	// given back only after its refusal, which panicked).
	took := make(chan struct{})
	go func() { h.relay.queuedBytes.take(maxQueuedBytes+1, maxQueuedBytes, nil); close(took) }()
	select {
	case <-took:
	case <-time.After(10 * time.Second):
		t.Fatal("after the writer's bug, a message waits for room in the queue")
	}
	go func() { _, _ = io.Copy(io.Discard, h.serverR) }()
	// More than the queue's room: read whole by the relay before the
	// client closes.
	if _, err := io.WriteString(h.clientW, `{"jsonrpc":"2.0","method":"notifications/x","params":{"pad":"`+strings.Repeat("a", 9<<20)+`"}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	h.clientW.Close()
	h.serverW.Close()
	select {
	case end := <-h.done:
		if end.Reason != api.ExitInternal {
			t.Fatalf("end = %+v, want %s", end, api.ExitInternal)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end after the writer's bug")
	}
}

// parkedPanicking parks every "parked" request, and its HoldFailed (the
// refusal the park's goroutine writes) has a bug.
type parkedPanicking struct{ park chan error }

func (p parkedPanicking) FromClient(e *wire.Envelope, msg []byte) Verdict {
	if e.Method != "parked" {
		return Verdict{}
	}
	return Verdict{Park: p.park, HoldFailed: func(error) []byte { panic("a bug in the park's refusal") }}
}

func (parkedPanicking) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

// TestRelayContainsABugInAGoroutine: a panic on a goroutine the session
// runs beside its loops (a parked request's, or one started with Go, as
// the daemon does for a question put to the user) ends that session as
// ExitInternal, like a panic in a loop, and not the process.
func TestRelayContainsABugInAGoroutine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(h *harness, park chan error)
	}{
		{"a parked request's", func(h *harness, park chan error) {
			h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"parked"}` + "\n")
			for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				h.relay.parkMu.Lock()
				n := len(h.relay.parked)
				h.relay.parkMu.Unlock()
				if n == 1 {
					break
				}
				if time.Now().After(end) {
					t.Fatal("the request was not parked")
				}
			}
			park <- errors.New("refused") // its refusal panics
		}},
		{"one started with Go", func(h *harness, _ chan error) {
			h.relay.Go("question", func() { panic("a bug in a question") })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins := parkedPanicking{park: make(chan error, 1)}
			bug := make(chan struct{})
			var bugs atomic.Int32
			h := newHarness(t, Options{Inspector: ins, OnInternalError: func() {
				if bugs.Add(1) == 1 {
					close(bug)
				}
			}})
			go func() { _, _ = io.Copy(io.Discard, h.clientR) }()
			tc.start(h, ins.park)
			select {
			case <-bug:
			case <-time.After(10 * time.Second):
				t.Fatal("the bug was not caught")
			}
			// The relay closes the server's stdin: the server sees EOF.
			if _, err := h.serverR.ReadString('\n'); !errors.Is(err, io.EOF) {
				t.Fatalf("server stdin: %v, want EOF", err)
			}
			h.serverW.Close()
			h.clientW.Close()
			h.endsForTheBug(t, &bugs)
		})
	}
}

// endsForTheBug waits for h's relay to end as ExitInternal, with
// OnInternalError told once (counted in bugs).
func (h *harness) endsForTheBug(t *testing.T, bugs *atomic.Int32) {
	t.Helper()
	select {
	case end := <-h.done:
		if end.Reason != api.ExitInternal || !errors.Is(end.Err, ErrInternal) {
			t.Fatalf("end = %+v, want %s", end, api.ExitInternal)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end after the bug")
	}
	if n := bugs.Load(); n != 1 {
		t.Fatalf("OnInternalError called %d times, want once", n)
	}
}

// TestBugBeforeTheServerIsAttached: a session's goroutine started with
// Go can panic before the server's stdin exists (the daemon attaches it
// once the sandbox's FIFOs are open, seconds after its first goroutines
// start). Found by a red-team helper: the relay then closed a nil stdin
// on a goroutine of its own, which ended the daemon, and the stdin
// attached later was never closed. Now the stdin is closed as it is
// attached.
func TestBugBeforeTheServerIsAttached(t *testing.T) {
	clientR, _ := io.Pipe()
	_, clientW := io.Pipe()
	bug := make(chan struct{})
	r := New(Options{OnInternalError: func() { close(bug) }}, Streams{ClientIn: clientR, ClientOut: clientW})
	r.Go("masks", func() { panic("a bug before the server's stdin exists") })
	select {
	case <-bug:
	case <-time.After(10 * time.Second):
		t.Fatal("the bug was not caught")
	}
	serverR, serverW := io.Pipe()
	out, _ := io.Pipe()
	r.AttachServer(serverW, out)
	if _, err := serverR.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the server's stdin attached after the bug: %v, want EOF", err)
	}
	select {
	case <-r.Done():
	default:
		t.Fatal("the relay has not ended")
	}
}
