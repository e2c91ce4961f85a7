package relay

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// deferCalls is a Deferrer: requests decided while more are read get a
// hold that yields in Flush (with fail's error for their id); deny's ids
// are denied; held's ids get a hold (not deferred) the test releases.
type deferCalls struct {
	log  *eventLog
	fail map[string]error
	deny map[string]bool
	held map[string]chan error

	mu       sync.Mutex
	deferred map[string]chan error
}

func (d *deferCalls) decide(e *wire.Envelope, msg []byte, deferring bool) Verdict {
	id := string(e.ID.Of(msg))
	failed := func(err error) []byte {
		return wire.ErrorResponse([]byte(id), wire.CodeDenied, "not recorded: "+err.Error(), nil)
	}
	switch {
	case d.deny[id]:
		return Verdict{Deny: true, Reason: "test"}
	case d.held[id] != nil:
		return Verdict{Hold: d.held[id], HoldFailed: failed}
	case !deferring:
		return Verdict{}
	}
	ch := make(chan error, 1)
	d.mu.Lock()
	d.deferred[id] = ch
	d.mu.Unlock()
	return Verdict{Hold: ch, Deferred: true, HoldFailed: failed}
}

func (d *deferCalls) FromClient(e *wire.Envelope, msg []byte) Verdict {
	d.log.add("decided " + string(e.ID.Of(msg)))
	return d.decide(e, msg, false)
}

func (d *deferCalls) FromClientDeferred(e *wire.Envelope, msg []byte) Verdict {
	d.log.add("deferred " + string(e.ID.Of(msg)))
	return d.decide(e, msg, true)
}

func (d *deferCalls) Flush() {
	d.log.add("flush")
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, ch := range d.deferred {
		ch <- d.fail[id]
	}
	clear(d.deferred)
}

func (*deferCalls) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

// loggedServer logs each write to the server's stdin.
type loggedServer struct{ log *eventLog }

func (w loggedServer) Write(b []byte) (int, error) {
	w.log.add("server got " + ids(b))
	return len(b), nil
}
func (loggedServer) Close() error { return nil }

// loggedClient logs each write to the client, by the ids it answers.
type loggedClient struct{ log *eventLog }

func (w loggedClient) Write(b []byte) (int, error) {
	w.log.add("client got " + ids(b))
	return len(b), nil
}

// ids lists the ids of the messages in b: "1 2 3".
func ids(b []byte) string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m wire.Message
		if err := wire.Peek([]byte(line), &m); err != nil {
			out = append(out, "?")
			continue
		}
		out = append(out, string(m.Envelopes[0].ID.Of([]byte(line))))
	}
	return strings.Join(out, " ")
}

// runLogged runs a relay with d as its inspector, the server's stdin
// logged to d's log, and clientOut as the client's output; it returns
// the client's input, the server's output, and the relay's end.
func runLogged(d *deferCalls, clientOut io.Writer) (*io.PipeWriter, *io.PipeWriter, chan End) {
	cinR, cinW := io.Pipe()
	soutR, soutW := io.Pipe()
	r := New(Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler), Inspector: d},
		Streams{ClientIn: cinR, ClientOut: clientOut, ServerIn: loggedServer{d.log}, ServerOut: soutR})
	done := make(chan End, 1)
	go func() { done <- r.Run(nil) }()
	return cinW, soutW, done
}

func pings(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}` + "\n")
	}
	return b.String()
}

// TestRelayBurst: requests the client sent together are decided with
// their records deferred, and forwarded in order with one write after one
// Flush; a failed hold answers the client and keeps only that request
// from the server; a denial's answer waits for nothing and is written
// after the messages before it reached the server; a request that waits
// for a hold of its own keeps the burst behind it.
func TestRelayBurst(t *testing.T) {
	tests := []struct {
		name string
		fail map[string]error
		deny map[string]bool
		want []string
	}{
		{"together", nil, nil, []string{
			"deferred 1", "deferred 2", "decided 3", // nothing read after 3
			"flush", "server got 1 2 3",
		}},
		{"failed hold", map[string]error{"2": errors.New("disk full")}, nil, []string{
			"deferred 1", "deferred 2", "decided 3",
			"flush", "client got 2", "server got 1 3",
		}},
		{"denied between", nil, map[string]bool{"2": true}, []string{
			"deferred 1", "deferred 2",
			"flush", "server got 1", "client got 2", // the burst goes first
			"decided 3", "server got 3",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &eventLog{}
			d := &deferCalls{log: log, fail: tt.fail, deny: tt.deny, deferred: map[string]chan error{}}
			cinW, soutW, done := runLogged(d, loggedClient{log})
			if _, err := io.WriteString(cinW, pings("1", "2", "3")); err != nil { // one write: all three are read at once
				t.Fatal(err)
			}
			last := tt.want[len(tt.want)-1]
			waitUntil(t, func() bool { return count(log.get(), last) == 1 })
			if got := log.get(); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			cinW.Close()
			soutW.Close()
			<-done
		})
	}
}

// TestRelayBurstBehindHold: a request decided with more to read does not
// overtake one that waits for its own hold.
func TestRelayBurstBehindHold(t *testing.T) {
	log := &eventLog{}
	release := make(chan error, 1)
	d := &deferCalls{log: log, deferred: map[string]chan error{}, held: map[string]chan error{"1": release}}
	cinW, soutW, done := runLogged(d, loggedClient{log})
	if _, err := io.WriteString(cinW, pings("1", "2", "3")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return count(log.get(), "decided 3") == 1 })
	for _, e := range log.get() {
		if strings.HasPrefix(e, "server got") {
			t.Fatalf("the server got a message while the first waits for its hold: %q", log.get())
		}
	}
	release <- nil
	waitUntil(t, func() bool { return count(log.get(), "server got 3") == 1 })
	var got []string
	for _, e := range log.get() {
		if strings.HasPrefix(e, "server got") {
			got = append(got, e)
		}
	}
	if want := []string{"server got 1", "server got 2", "server got 3"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("server got %q, want %q (all events %q)", got, want, log.get())
	}
	cinW.Close()
	soutW.Close()
	<-done
}

// TestRelayBurstClientNotReading: a client that does not read its output
// blocks the denial written to it, but not the requests it sent before
// the denied one: they reach the server.
func TestRelayBurstClientNotReading(t *testing.T) {
	log := &eventLog{}
	d := &deferCalls{log: log, deferred: map[string]chan error{}, deny: map[string]bool{"2": true}}
	_, coutW := io.Pipe() // nobody reads: every write to the client blocks
	cinW, soutW, done := runLogged(d, coutW)
	if _, err := io.WriteString(cinW, pings("1", "2", "3")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return count(log.get(), "server got 1") == 1 })
	coutW.Close() // the client goes away: the write fails, the relay goes on
	cinW.Close()
	soutW.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end")
	}
}

// TestRelayBurstBounded: a burst is written once it holds maxBurstMsgs
// messages, however many more the client has already sent.
func TestRelayBurstBounded(t *testing.T) {
	log := &eventLog{}
	d := &deferCalls{log: log, deferred: map[string]chan error{}}
	cinW, soutW, done := runLogged(d, loggedClient{log})
	n := 3*maxBurstMsgs + 5
	var all []string
	for i := 0; i < n; i++ {
		all = append(all, strconv.Itoa(i))
	}
	if _, err := io.WriteString(cinW, pings(all...)); err != nil {
		t.Fatal(err)
	}
	var got []string
	waitUntil(t, func() bool {
		got = nil
		for _, e := range log.get() {
			if s, ok := strings.CutPrefix(e, "server got "); ok {
				got = append(got, s)
			}
		}
		return len(strings.Fields(strings.Join(got, " "))) == n
	})
	for i, w := range got {
		if k := len(strings.Fields(w)); k > maxBurstMsgs {
			t.Fatalf("write %d carried %d messages, more than %d", i, k, maxBurstMsgs)
		}
	}
	if strings.Join(got, " ") != strings.Join(all, " ") {
		t.Fatalf("server got %q, want every message in order", got)
	}
	cinW.Close()
	soutW.Close()
	<-done
}
