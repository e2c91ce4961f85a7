package relay

import (
	"errors"
	"io"
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
		})
	}
}
