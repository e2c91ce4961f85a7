package relay

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	park map[string]bool // parked, the user's answer (allow) already given

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
	case d.park[id]:
		ch := make(chan error, 1)
		ch <- nil
		return Verdict{Park: ch, HoldFailed: failed}
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

// serverGot lists the ids of the messages the server got, in order.
func serverGot(log *eventLog) []string {
	var got []string
	for _, e := range log.get() {
		if s, ok := strings.CutPrefix(e, "server got "); ok {
			got = append(got, strings.Fields(s)...)
		}
	}
	return got
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
			"flush", "server got 1 3", "client got 2", // the server first: a write to the client may block
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
	var got []string
	waitUntil(t, func() bool {
		got = serverGot(log)
		return len(got) == 3
	})
	if want := []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Fatalf("server got %q, want %q (all events %q)", got, want, log.get())
	}
	cinW.Close()
	soutW.Close()
	<-done
}

// TestRelayBurstClientNotReading: a client that does not read its output
// blocks the answer written to it (a denial, a parse error), but not the
// requests it sent before: they reach the server.
func TestRelayBurstClientNotReading(t *testing.T) {
	for _, tt := range []struct {
		name, between string
		deny          map[string]bool
	}{
		{"denied", pings("2"), map[string]bool{"2": true}},
		{"not JSON", "{garbage\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := &eventLog{}
			d := &deferCalls{log: log, deferred: map[string]chan error{}, deny: tt.deny}
			_, coutW := io.Pipe() // nobody reads: every write to the client blocks
			cinW, soutW, done := runLogged(d, coutW)
			if _, err := io.WriteString(cinW, pings("1")+tt.between+pings("3")); err != nil {
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
		})
	}
}

// TestRelayBurstBeforeParked: a request parked for the user's answer,
// answered at once, does not reach the server before the requests the
// client sent ahead of it.
func TestRelayBurstBeforeParked(t *testing.T) {
	log := &eventLog{}
	d := &deferCalls{log: log, deferred: map[string]chan error{}, park: map[string]bool{"2": true}}
	cinW, soutW, done := runLogged(d, loggedClient{log})
	var all []string
	for i := 1; i <= 40; i++ {
		all = append(all, strconv.Itoa(i))
	}
	if _, err := io.WriteString(cinW, pings(all...)); err != nil {
		t.Fatal(err)
	}
	var got []string
	waitUntil(t, func() bool {
		got = serverGot(log)
		return len(got) == len(all)
	})
	if i1, i2 := slices.Index(got, "1"), slices.Index(got, "2"); i1 > i2 {
		t.Fatalf("server got %q: the parked request 2 overtook request 1", got)
	}
	cinW.Close()
	soutW.Close()
	<-done
}

// TestRelayBurstBesideServerBatches: the server loop admitting batches
// while the client loop defers does not confuse the two (each direction
// has its own batch state): every client request reaches the server.
func TestRelayBurstBesideServerBatches(t *testing.T) {
	log := &eventLog{}
	d := &deferCalls{log: log, deferred: map[string]chan error{}}
	cinR, cinW := io.Pipe()
	soutR, soutW := io.Pipe()
	var got atomic.Int64
	r := New(Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler), Inspector: d},
		Streams{ClientIn: cinR, ClientOut: io.Discard, ServerIn: countingServer{&got}, ServerOut: soutR})
	done := make(chan End, 1)
	go func() { done <- r.Run(nil) }()
	stop := make(chan struct{})
	go func() { // the server: batches of notifications, all the time
		n := `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`
		b := "[" + n + "," + n + "," + n + "]\n"
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(soutW, b); err != nil {
				return
			}
		}
	}()
	for round := 0; round < 1200; round++ { // 9600 requests, all pending: below the table's bound
		var ids []string
		for i := 0; i < 8; i++ {
			ids = append(ids, strconv.Itoa(round*8+i))
		}
		if _, err := io.WriteString(cinW, pings(ids...)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return got.Load() == int64(round*8+8) })
	}
	close(stop)
	cinW.Close()
	soutW.Close()
	<-done
}

// countingServer counts the messages written to the server.
type countingServer struct{ n *atomic.Int64 }

func (w countingServer) Write(b []byte) (int, error) {
	w.n.Add(int64(strings.Count(string(b), "\n")))
	return len(b), nil
}
func (countingServer) Close() error { return nil }

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

// TestRelayQueuedWrittenTogether: requests queued behind holds (records
// not yet durable, as in "always" mode) whose holds have all yielded by
// the time the first one's does go to the server with one write, in
// order; one whose hold failed is answered and left out.
func TestRelayQueuedWrittenTogether(t *testing.T) {
	for _, tt := range []struct {
		name       string
		fail       error
		wantServer string
	}{
		{"all recorded", nil, "server got 1 2 3"},
		{"second failed", errors.New("disk full"), "server got 1 3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := &eventLog{}
			holds := map[string]chan error{"1": make(chan error, 1), "2": make(chan error, 1), "3": make(chan error, 1)}
			d := &deferCalls{log: log, deferred: map[string]chan error{}, held: holds}
			cinW, soutW, done := runLogged(d, loggedClient{log})
			if _, err := io.WriteString(cinW, pings("1", "2", "3")); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, func() bool { return count(log.get(), "decided 3") == 1 })
			holds["3"] <- nil
			holds["2"] <- tt.fail
			holds["1"] <- nil // the first: writeServer takes it, then the two behind it
			waitUntil(t, func() bool { return count(log.get(), tt.wantServer) == 1 })
			if got := serverGot(log); strings.Join(got, " ") != strings.TrimPrefix(tt.wantServer, "server got ") {
				t.Fatalf("server got %q in writes %q, want one write %q", got, log.get(), tt.wantServer)
			}
			if tt.fail != nil {
				waitUntil(t, func() bool { return count(log.get(), "client got 2") == 1 })
			}
			cinW.Close()
			soutW.Close()
			<-done
		})
	}
}
