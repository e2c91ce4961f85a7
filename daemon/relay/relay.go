package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Options configure a Relay.
type Options struct {
	// MaxMessageBytes caps one message in either direction.
	MaxMessageBytes int64
	// Inspector sees every valid message; nil relays everything.
	Inspector Inspector
	// Logger receives structured logs; attributes identifying the session
	// should already be attached.
	Logger *slog.Logger
	// ScrubLog, when set, is applied to the peers' words (a method name,
	// a reason that quotes them) before a log line carries them: the
	// session's secrets must not reach the daemon's log through them.
	ScrubLog func(string) string
	// OnClientEOF is called once when the client closes its side, after the
	// server's stdin has been closed: the caller starts its stop ladder.
	OnClientEOF func()
	// OnMessage, when set, is called for every message with its size.
	OnMessage func(d Direction, bytes int)
	// OnInternalError, when set, is called when a loop of the relay or a
	// goroutine started with Go panicked (a bug of mcpcaged's; the session
	// then ends, see ErrInternal), before it ends. It must not wait: the
	// caller stops the server in the background.
	OnInternalError func()
	// OnClaims, when set, is called when the client's claims are first seen.
	OnClaims func(Claims)
	// OnAmbiguous, when set, is called for every message (or batch element)
	// refused because parsers could read its envelope differently (see
	// wire.Envelope.Ambiguous), so it can be recorded.
	OnAmbiguous func(d Direction, problem string)
	// AfterServerMessage, when set, is called on the server's loop after
	// each of its messages has been dealt with (forwarded, replaced or
	// dropped), and once when that loop ends: the inspector's work that
	// must follow a message but need not delay it, such as writing the
	// record of a result the client already has.
	AfterServerMessage func()
}

// Verdict is an Inspector's decision on one message (or batch element).
type Verdict struct {
	// Replace, when set, is forwarded instead of the message (without the
	// line terminator): the one way the daemon rewrites traffic, e.g. to
	// filter a tools/list result.
	Replace []byte
	// Deny keeps the message from its destination.
	Deny bool
	// Reply, when Deny is set on a request, is the complete response line
	// to send back to the sender instead. Empty: a generic
	// wire.CodeDenied error.
	Reply []byte
	// Reason is logged and used in the generic error.
	Reason string
	// Hold, when set on a request from the client, keeps it from the server
	// until the channel yields: nil forwards it; an error keeps it from the
	// server for good, and the client gets HoldFailed(err) (a complete
	// response line) instead. Messages behind a held one wait for it, so
	// the server receives everything in the order it was sent, while the
	// relay goes on reading and deciding (e.g. the next calls' audit
	// records join the same group commit). In a batch the relay waits for
	// the hold before the next element.
	Hold       <-chan error
	HoldFailed func(error) []byte
	// Park, when set on a request from the client, keeps it from the
	// server until the channel yields, without holding up anything behind
	// it (the daemon is asking the user: that may take minutes). nil then
	// sends it to the server (after what is queued at that moment); an
	// error answers the client with HoldFailed(err) instead. A parked
	// request the client cancels is dropped, and the server never hears
	// of it; one still parked when the relay ends is answered with
	// HoldFailed. In a batch a request cannot be parked: HoldFailed
	// answers it at once with ErrParkInBatch.
	Park <-chan error
	// Deferred, set by a Deferrer's FromClientDeferred with Hold, says
	// that Hold yields only once the relay calls the Deferrer's Flush.
	Deferred bool
}

// Deferrer is an Inspector that can leave the durable part of its
// decisions on client requests (writing their records) to be done for
// several at once: while more client messages are already read, the
// relay asks it through FromClientDeferred, keeps the decided messages,
// and forwards them with one write after one Flush.
type Deferrer interface {
	Inspector
	// FromClientDeferred is FromClient, except that a Hold it returns
	// with Deferred set yields only once Flush is called.
	FromClientDeferred(env *wire.Envelope, msg []byte) Verdict
	// Flush does the deferred work: when it returns, every deferred
	// Hold has yielded.
	Flush()
}

// ErrParkInBatch answers a request that would be parked in a batch.
var ErrParkInBatch = errors.New("a request inside a JSON-RPC batch cannot wait for the user's answer: send it on its own")

// ErrParkEnded answers a parked request when the session ends first.
var ErrParkEnded = errors.New("the session ended before the user answered")

// Inspector decides on messages. Methods run on the direction's goroutine
// and must not block for long.
type Inspector interface {
	// FromClient also sees the client's responses to the server's
	// requests (Replace and Deny apply to them; Hold and Park do not).
	FromClient(env *wire.Envelope, msg []byte) Verdict
	// FromServer also sees responses; request is then the method of the
	// client request they answer ("" for other messages).
	FromServer(env *wire.Envelope, msg []byte, request string) Verdict
}

// Canceller is implemented by an Inspector that wants to know when a
// request it saw was cancelled by its sender (notifications/cancelled)
// and will get no answer. d is the direction of the request; rawID its id.
type Canceller interface {
	Cancelled(d Direction, rawID []byte)
}

// Direction of a message.
type Direction uint8

const (
	ClientToServer Direction = iota
	ServerToClient
)

func (d Direction) String() string {
	if d == ClientToServer {
		return "client_to_server"
	}
	return "server_to_client"
}

// End says why a relay stopped.
type End struct {
	Reason api.ExitReason
	Err    error // user-facing detail for abnormal ends
}

// A ClientStreamError is an error of the client's streams that says what
// the client (or its shim) gave the daemon that cannot work: the session
// ends with it as End.Err, so the shim prints it, where other errors of
// a stream that ended are the client's going away and need no words.
type ClientStreamError interface {
	error
	ClientStreamError()
}

// clientEnded ends the relay on an error of the client's streams.
func (r *Relay) clientEnded(err error) {
	var explained ClientStreamError
	if errors.As(err, &explained) {
		r.log.Warn("the client's stream cannot be used", "err", err)
		r.finish(api.ExitClientGone, explained)
		return
	}
	r.finish(api.ExitClientGone, nil)
}

// Stats are counters of one relay.
type Stats struct {
	Messages     [2]atomic.Int64
	Bytes        [2]atomic.Int64
	Malformed    [2]atomic.Int64
	Denied       [2]atomic.Int64
	Uncorrelated atomic.Int64
}

// Relay connects one client with one server.
type Relay struct {
	opts    Options
	streams Streams
	log     *slog.Logger
	toCli   sync.Mutex // serialises writes to the client
	cliOut  io.Writer

	pending  *table // client requests awaiting the server
	srvCalls *table // server requests awaiting the client
	// cancels holds, per direction, the keys named by notifications/cancelled
	// in the message being relayed; each loop applies its own after the
	// write (see applyCancels).
	cancels     [2][]cancelled
	claims      Claims
	claimsMu    sync.Mutex
	Stats       Stats
	endOnce     sync.Once
	bug         atomic.Bool // a loop panicked: the session ends as ExitInternal, whatever ended first
	end         End
	endCh       chan struct{}
	serverIn    io.WriteCloser
	closeOnce   sync.Once
	inMu        sync.Mutex             // serverIn against AttachServer
	closeWanted bool                   // closeServerIn came before AttachServer
	gone        atomic.Pointer[string] // why the server went away, once it has

	// toServer carries client messages that wait for a hold, and every
	// message behind one, to writeServer; queued counts those not yet
	// written, so the client loop writes itself only when nothing is
	// ahead.
	toServer chan queued
	queued   atomic.Int64
	// queuedBytes is what the queued messages hold (their copies):
	// the client loop waits while it is over maxQueuedBytes.
	queuedBytes     byteBudget
	queueFullLogged bool // client loop only
	// hold is the hold of the single message being admitted (set by admit).
	hold *held
	// inBatch is set, per direction (each its loop's own), while the
	// elements of a batch are admitted.
	inBatch [2]bool
	// deferring is set while the client loop admits a message with more
	// already read behind it and the inspector is a Deferrer; burst holds
	// the messages decided that way, not yet written.
	deferring bool
	burst     burst
	// burstErr is the error of a burst's write done by replyTo, for the
	// client loop.
	burstErr error
	// toSrv serialises writes to the server's stdin (the client loop,
	// writeServer and replies to the server's requests).
	toSrv sync.Mutex

	// parkMu guards parked, parkClosed and sends on toServer by parked
	// requests (toServer is closed under it).
	parkMu     sync.Mutex
	parked     map[string]uint64 // pending-table keys of parked requests -> their park's token
	parkSeq    uint64
	parkClosed bool

	own own // the daemon's own requests to the client
}

// held is a client request waiting for its hold.
type held struct {
	ch       <-chan error
	failed   func(error) []byte
	key      string // its pending-table key
	deferred bool   // ch yields once the Deferrer flushes
}

// queued is a client message on its way to writeServer.
type queued struct {
	out     []byte // a copy: the reader reuses its buffer
	hold    *held
	cancels []cancelled
}

// maxQueued bounds the client messages waiting behind a hold; past it
// the client loop stops reading (the client's writes block).
const maxQueued = 1024

// maxQueuedBytes bounds their bytes the same way: a server that stops
// reading its stdin behind a held call let a client queue 1024 messages
// of max_message_bytes each (64 GiB at the default) in the daemon's
// memory (found by a red-team helper: 5.6 GiB from one session). A
// message larger than the bound still goes, alone.
const maxQueuedBytes = 8 << 20

// byteBudget counts bytes taken and given back; take waits while the
// count would pass the bound (unless nothing is taken: one message of any
// size may always wait in the queue).
type byteBudget struct {
	mu      sync.Mutex
	cond    *sync.Cond
	used    int
	waiting bool // take is waiting for room
	off     bool // take no longer waits (see unbound)
}

// take takes n; waits (once) calls waiting(used) first when it has to
// wait for room.
func (b *byteBudget) take(n, max int, waiting func(used int)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cond == nil {
		b.cond = sync.NewCond(&b.mu)
	}
	for !b.off && b.used > 0 && b.used+n > max {
		if !b.waiting && waiting != nil {
			waiting(b.used)
			waiting = nil
		}
		b.waiting = true
		b.cond.Wait()
	}
	b.waiting = false
	b.used += n
}

// unbound makes take wait no more, now or later: the one who gives
// back stopped (a bug of mcpcaged's in the writer), and what it took but
// did not give back would hold the room for good.
func (b *byteBudget) unbound() {
	b.mu.Lock()
	b.off = true
	if b.cond != nil {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}

func (b *byteBudget) give(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.cond != nil {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}

// New returns a relay joining the streams; call Run to start it.
func New(opts Options, s Streams) *Relay {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Relay{
		streams:  s,
		cliOut:   s.ClientOut,
		serverIn: s.ServerIn,
		opts:     opts,
		log:      opts.Logger,
		pending:  newTable(),
		srvCalls: newTable(),
		endCh:    make(chan struct{}),
		toServer: make(chan queued, maxQueued),
		parked:   map[string]uint64{},
		own:      own{waiting: map[string]chan []byte{}},
	}
}

// AttachServer gives the relay the server's ends when they exist only
// after New (the sandbox starts after the relay is built): call it before
// Run.
func (r *Relay) AttachServer(in io.WriteCloser, out io.Reader) {
	r.inMu.Lock()
	r.streams.ServerIn, r.streams.ServerOut = in, out
	r.serverIn = in
	closeNow := r.closeWanted
	r.inMu.Unlock()
	if closeNow { // a stop (or a contained bug) came before the server's stdin existed
		go func() { _ = in.Close() }()
	}
}

// Streams are the four ends a relay joins.
type Streams struct {
	ClientIn  io.ReadCloser  // bytes from the client
	ClientOut io.Writer      // bytes to the client
	ServerIn  io.WriteCloser // the server's stdin
	ServerOut io.Reader      // the server's stdout
}

// Run relays until the server's output ends or a fatal error. It closes
// ClientIn and ServerIn before returning, and answers every request still
// pending. serverGone, when not nil, is asked for a description of the
// server's fate (e.g. its exit status) for those answers.
func (r *Relay) Run(serverGone func() string) End {
	s := r.streams
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.contained("client", func() { r.clientLoop(s.ClientIn) }, discard(s.ClientIn))
	}()
	go func() {
		defer wg.Done()
		r.contained("server stdin", r.writeServer, func() {
			// The message the writer had in hand when it stopped was
			// never given back: the client loop must not wait for its
			// room (found by TestRelayContainsABugInTheWriter failing
			// about once in 60 runs on a loaded machine).
			r.queuedBytes.unbound()
			for q := range r.toServer { // until the client loop closes it, giving back what each took (found by a red-team helper: the client loop waited for room for good)
				r.queued.Add(-1)
				r.queuedBytes.give(len(q.out))
			}
		})
	}()
	r.contained("server", func() { r.serverLoop(s.ServerOut) }, discard(s.ServerOut))

	// The server's output is done: nothing more will answer the client.
	detail := "the MCP server stopped"
	if serverGone != nil {
		if d := serverGone(); d != "" {
			detail = d
		}
	}
	r.finish(api.ExitServerExited, nil)
	r.own.end()
	// From here on a request the client sent is answered at once: it
	// may already be on its way (written just before the end).
	r.gone.Store(&detail)
	r.failPending(detail)
	if e, ok := s.ClientIn.(EndAfterer); ok {
		e.EndAfter(clientDrainWait) // what the client already wrote is read and answered
	} else {
		_ = s.ClientIn.Close()
	}
	r.closeServerIn()
	wg.Wait()
	_ = s.ClientIn.Close()
	if r.bug.Load() {
		// The loop's own deferred calls run before its panic is caught:
		// they can end the server (its stdin closed) and so the relay
		// with another reason first. The bug is why it ended.
		return End{Reason: api.ExitInternal, Err: ErrInternal}
	}
	return r.end
}

// EndAfterer is a client input that can end by itself once what is
// already available has been read (within d).
type EndAfterer interface{ EndAfter(d time.Duration) }

// clientDrainWait bounds the reading of what a client wrote before its
// server went away.
const clientDrainWait = 100 * time.Millisecond

// answerGone answers the requests of a message read after the server
// went away.
func (r *Relay) answerGone(msg []byte, m *wire.Message, detail string) {
	for i := range m.Envelopes {
		e := &m.Envelopes[i]
		if e.Kind != wire.KindRequest || !wire.PlainID(e.ID.Of(msg)) {
			continue
		}
		_ = r.writeClient(wire.ErrorResponse(e.ID.Of(msg), wire.CodeServerGone,
			fmt.Sprintf("mcpcage: %s before answering %s", detail, e.Method), wire.ErrorData{Mcpcage: wire.ClassServerGone, Reason: detail}))
	}
}

// finish records the first reason the relay ended.
func (r *Relay) finish(reason api.ExitReason, err error) {
	r.endOnce.Do(func() {
		r.end = End{Reason: reason, Err: err}
		close(r.endCh)
	})
}

// Done is closed when the relay has decided to end.
func (r *Relay) Done() <-chan struct{} { return r.endCh }

// CloseServerIn closes the server's stdin now, whatever is still queued
// for it: the first step of stopping a server the client has not finished
// with (the daemon shuts down, a rule ends the session). A client's own
// end of input closes it after the last message instead.
func (r *Relay) CloseServerIn() { r.closeServerIn() }

// closeServerIn closes the server's stdin once. The close runs on a
// goroutine of its own: it waits for a write to the
// pipe in progress, and a process of the sandbox can hold the pipe's lock
// (a splice from it into a full socket) so that the write, and the close,
// wait until that process dies (found by a red-team helper). Nothing
// that stops the server may wait for it.
func (r *Relay) closeServerIn() {
	r.inMu.Lock()
	defer r.inMu.Unlock()
	if r.serverIn == nil {
		r.closeWanted = true // AttachServer closes it
		return
	}
	in := r.serverIn
	r.closeOnce.Do(func() { go func() { _ = in.Close() }() }) // EOF for the server; nothing left to send
}

// writeClient sends one complete message to the client.
func (r *Relay) writeClient(b []byte) error {
	r.toCli.Lock()
	defer r.toCli.Unlock()
	_, err := r.cliOut.Write(b)
	return err
}

// writeServerIn writes one message to the server's stdin.
func (r *Relay) writeServerIn(b []byte) error {
	r.toSrv.Lock()
	defer r.toSrv.Unlock()
	_, err := r.serverIn.Write(b)
	return err
}

// closeToServer ends writeServer's queue; parked requests answered later
// are no longer sent.
func (r *Relay) closeToServer() {
	r.parkMu.Lock()
	r.parkClosed = true
	close(r.toServer)
	r.parkMu.Unlock()
}

func (r *Relay) clientLoop(in io.Reader) {
	defer r.closeToServer() // writeServer closes the server's stdin once it has written the rest
	rd := wire.NewReader(in, r.opts.MaxMessageBytes)
	var m wire.Message
	deferrer, _ := r.opts.Inspector.(Deferrer)
	// broken: the server's stdin failed; drain the client so it is not
	// blocked (the server loop ends the session).
	broken := func(err error) {
		r.log.Debug("server stdin closed", "err", err)
		_, _ = io.Copy(io.Discard, in)
	}
	for {
		if r.burst.pending() && !rd.Ready() {
			if err := r.flushBurst(deferrer); err != nil {
				broken(err)
				return
			}
		}
		msg, err := rd.Next()
		if err != nil && r.burst.pending() {
			// What was decided goes to the server before the end.
			if ferr := r.flushBurst(deferrer); ferr != nil {
				broken(ferr)
				return
			}
		}
		if err != nil {
			var tl *wire.TooLargeError
			switch {
			case errors.As(err, &tl):
				r.log.Warn("client message too large, ending session", "limit", tl.Limit)
				_ = r.writeClient(wire.ErrorResponse(nil, wire.CodeTooLarge,
					fmt.Sprintf("mcpcage: %v; raise [daemon] max_message_bytes if this is legitimate", tl), wire.ErrorData{Mcpcage: wire.ClassTooLarge, Reason: tl.Error()}))
				r.finish(api.ExitClientTooLarge, fmt.Errorf("the client sent a %v", tl))
				r.closeServerIn()
			case errors.Is(err, io.EOF):
				r.log.Debug("client closed its input")
				r.finish(api.ExitClientClosed, nil)
			default:
				r.log.Debug("client input ended", "err", err)
				r.clientEnded(err)
			}
			if r.opts.OnClientEOF != nil {
				r.opts.OnClientEOF()
			}
			return
		}
		r.count(ClientToServer, msg)
		if err := wire.Peek(msg, &m); err != nil {
			r.Stats.Malformed[ClientToServer].Add(1)
			r.log.Warn("malformed message from client", "err", err, "bytes", len(msg))
			code, text := wire.CodeParseError, "parse error: "+err.Error()
			if errors.Is(err, wire.ErrBatchTooLarge) {
				code, text = wire.CodeInvalidRequest, "mcpcage: "+err.Error()
			}
			if errors.Is(err, wire.ErrAmbiguous) {
				code, text = wire.CodeInvalidRequest, "mcpcage: ambiguous message: "+err.Error()
				r.ambiguous(ClientToServer, err.Error())
			}
			r.replyTo(ClientToServer, wire.ErrorResponse(nil, code, text, nil))
			if err := r.burstErr; err != nil {
				broken(err)
				return
			}
			continue
		}
		if gone := r.gone.Load(); gone != nil {
			r.answerGone(msg, &m, *gone)
			continue
		}
		r.hold = nil
		r.deferring = deferrer != nil && !m.Batch && rd.Ready() && !r.burst.full()
		out := r.filter(ClientToServer, msg, &m)
		r.deferring = false
		if err := r.burstErr; err != nil { // flushed before a reply to the client (replyTo)
			broken(err)
			return
		}
		if out == nil {
			continue
		}
		if r.queued.Load() == 0 && ((r.hold != nil && r.hold.deferred) || (r.hold == nil && len(r.burst.msgs) > 0 && !r.burst.full())) {
			// Decided with more to read, or behind such a message:
			// forwarded with them (flushBurst).
			r.burst.add(out, r.hold, r.takeCancels(ClientToServer))
			continue
		}
		if r.burst.pending() {
			// Messages behind a hold, or a deferred one behind them,
			// follow the burst.
			if err := r.flushBurst(deferrer); err != nil {
				broken(err)
				return
			}
		}
		if r.hold != nil || r.queued.Load() > 0 {
			// Held, or behind a held message: writeServer sends it in turn.
			r.queuedBytes.take(len(out), maxQueuedBytes, r.queueFull) // writeServer gives it back as it takes messages
			r.queued.Add(1)
			r.toServer <- queued{out: append([]byte(nil), out...), hold: r.hold, cancels: r.takeCancels(ClientToServer)}
			continue
		}
		err = r.writeServerIn(out)
		r.applyCancels(ClientToServer)
		if err != nil {
			broken(err)
			return
		}
	}
}

// queueFull logs, once a session, that the client's messages wait for
// the server to take the ones before them.
func (r *Relay) queueFull(used int) {
	if r.queueFullLogged {
		return
	}
	r.queueFullLogged = true
	r.log.Info("client not read until the server takes its earlier messages: it is not reading its input",
		"queued_bytes", used, "bound", maxQueuedBytes)
}

// flushBurst has the Deferrer do its deferred work, then writes the
// burst's messages whose holds yielded nil to the server with one write;
// those whose holds failed are answered instead. It returns the write's
// error.
func (r *Relay) flushBurst(d Deferrer) error {
	if d != nil {
		d.Flush()
	}
	out := r.burst.out[:0]
	type kept struct {
		h   *held
		err error
	}
	var failed []kept
	for _, q := range r.burst.msgs {
		if q.hold != nil {
			if err := <-q.hold.ch; err != nil {
				failed = append(failed, kept{q.hold, err})
				continue
			}
		}
		out = append(out, q.out...)
	}
	var err error
	if len(out) > 0 {
		err = r.writeServerIn(out)
	}
	for _, q := range r.burst.msgs {
		r.applyCancelList(ClientToServer, q.cancels)
	}
	// Then the answers of those kept from the server (a write to the
	// client, which may block, after the server has the rest).
	for _, k := range failed {
		r.answerKept(k.h.key, k.h.failed, k.err)
	}
	r.burst.reset(out)
	return err
}

// Bounds of a burst: past either, the next message is decided without
// deferring, which flushes the burst.
const (
	maxBurstBytes = 64 << 10
	maxBurstMsgs  = 64
)

// burst is client messages decided while more were already read, not yet
// written (see Deferrer).
type burst struct {
	// deferred: the Deferrer was asked to defer since the last flush
	// (what it deferred may belong to no message here: one refused after
	// its decision).
	deferred bool
	msgs     []queued
	buf      []byte // their bytes, one after the other
	out      []byte // the write's buffer, kept between bursts
}

func (b *burst) pending() bool { return len(b.msgs) > 0 || b.deferred }
func (b *burst) full() bool    { return len(b.msgs) >= maxBurstMsgs || len(b.buf) >= maxBurstBytes }

// reset empties the burst once written; out was the write's buffer.
func (b *burst) reset(out []byte) {
	b.deferred = false
	clear(b.msgs)
	b.msgs = b.msgs[:0]
	if cap(out) <= 4*maxBurstBytes {
		b.out = out
	}
	if cap(b.buf) > 4*maxBurstBytes {
		b.buf = nil // after one huge message: do not keep its buffer
	}
}

// add copies msg in (the reader reuses its buffer).
func (b *burst) add(msg []byte, h *held, cancels []cancelled) {
	if len(b.msgs) == 0 {
		b.buf = b.buf[:0]
	}
	start := len(b.buf)
	b.buf = append(b.buf, msg...)
	b.msgs = append(b.msgs, queued{out: b.buf[start:len(b.buf):len(b.buf)], hold: h, cancels: cancels})
}

// writeServer writes the client messages queued behind holds, in order,
// each once its hold has yielded; when the client loop ends it closes the
// server's stdin after the last of them.
func (r *Relay) writeServer() {
	defer r.closeServerIn()
	broken := false
	var buf []byte
	var cancels [][]cancelled
	var next *queued // taken from the queue, its hold not yet yielded
	for {
		q, ok := next, true
		if q == nil {
			var got queued
			if got, ok = <-r.toServer; !ok {
				return
			}
			q = &got
		}
		next = nil
		// q, and every message queued behind it whose hold has already
		// yielded, go to the server with one write.
		buf, cancels = buf[:0], cancels[:0]
		n, bytes := 0, 0
		for q != nil {
			if q.hold != nil {
				if err := <-q.hold.ch; err != nil {
					r.queued.Add(-1)
					r.queuedBytes.give(len(q.out))
					r.answerKept(q.hold.key, q.hold.failed, err)
					q = nil
				}
			}
			if q != nil {
				buf = append(buf, q.out...)
				cancels = append(cancels, q.cancels)
				n++
				bytes += len(q.out)
			}
			q = nil
			if len(buf) >= maxBurstBytes {
				break
			}
			select {
			case more, open := <-r.toServer:
				if !open {
					ok = false
					break
				}
				if more.hold != nil {
					select {
					case err := <-more.hold.ch:
						more.hold.ch = yielded(err)
					default:
						next = &more // written after these, once it yields
						break
					}
				}
				if next == nil {
					q = &more
				}
			default:
			}
		}
		if n > 0 {
			if !broken {
				if err := r.writeServerIn(buf); err != nil {
					r.log.Debug("server stdin closed", "err", err)
					broken = true // the rest is discarded; the server loop ends the session
				}
			}
			for _, cs := range cancels {
				r.applyCancelList(ClientToServer, cs)
			}
			r.queued.Add(int64(-n))
			r.queuedBytes.give(bytes)
		}
		if cap(buf) > 4*maxBurstBytes {
			buf = nil
		}
		if !ok {
			return
		}
	}
}

// answerKept answers a client request kept from the server for err (its
// hold or park failed), unless it was answered already (the server went
// away and failPending did).
func (r *Relay) answerKept(key string, failed func(error) []byte, err error) {
	if _, ok := r.pending.take(key); !ok {
		return
	}
	r.Stats.Denied[ClientToServer].Add(1)
	_ = r.writeClient(failed(err))
}

// yielded is a channel that yields err, for a hold already taken.
func yielded(err error) <-chan error {
	ch := make(chan error, 1)
	ch <- err
	return ch
}

func (r *Relay) serverLoop(out io.Reader) {
	rd := wire.NewReader(out, r.opts.MaxMessageBytes)
	var m wire.Message
	after := r.opts.AfterServerMessage
	if after == nil {
		after = func() {}
	}
	defer after()
	// Messages for the client are written together while the next one is
	// already read in whole (the server answered several calls at once):
	// one write, and one wake-up of the client, for the lot. A message
	// alone is written at once; nothing waits for a read.
	var batch coalesced
	clientGone := func(err error) bool {
		if err == nil {
			return false
		}
		r.log.Debug("client output closed", "err", err)
		r.clientEnded(err)
		return true
	}
	flush := func() bool { return !clientGone(batch.flush(r.writeClient)) }
	for {
		if batch.pending() && !rd.Ready() && !flush() {
			return
		}
		if !batch.pending() {
			after() // the previous messages', now that they are on their way
		}
		msg, err := rd.Next()
		if err != nil {
			if !flush() {
				return
			}
			var tl *wire.TooLargeError
			if errors.As(err, &tl) {
				r.log.Warn("server message too large, ending session", "limit", tl.Limit)
				r.finish(api.ExitServerTooLarge, fmt.Errorf("the MCP server sent a %v", tl))
				r.failPending(fmt.Sprintf("the MCP server sent a %v; raise [daemon] max_message_bytes if this is legitimate", tl))
			} else if !errors.Is(err, io.EOF) {
				r.log.Debug("server output ended", "err", err)
			}
			return
		}
		r.count(ServerToClient, msg)
		if err := wire.Peek(msg, &m); err != nil {
			r.Stats.Malformed[ServerToClient].Add(1)
			r.log.Warn("dropped malformed message from server", "err", err, "bytes", len(msg), "head", head(msg))
			if errors.Is(err, wire.ErrAmbiguous) {
				r.ambiguous(ServerToClient, err.Error())
			}
			continue
		}
		if batch.pending() && (m.Batch || m.Envelopes[0].Kind != wire.KindResponse) && !flush() {
			return // only responses join the messages waiting: a request or notification may take its inspector longer
		}
		fwd := r.filter(ServerToClient, msg, &m)
		if fwd == nil {
			continue
		}
		// The server's cancellations apply before the client can see
		// them, so an answer the client sends in reply is dropped.
		r.applyCancels(ServerToClient)
		if (!batch.pending() && !rd.Ready()) || len(fwd) > maxCoalesced {
			// Alone, or too big to copy: written as it is, after what waits.
			if !flush() || clientGone(r.writeClient(fwd)) {
				return
			}
			continue
		}
		batch.add(fwd)
		if batch.full() && !flush() {
			return
		}
	}
}

// maxCoalesced bounds the messages written to the client together.
const maxCoalesced = 64 << 10

// coalesced is messages for the client not yet written.
type coalesced struct{ buf []byte }

func (c *coalesced) pending() bool { return len(c.buf) > 0 }
func (c *coalesced) full() bool    { return len(c.buf) >= maxCoalesced }

// add copies msg in (the reader reuses its buffer).
func (c *coalesced) add(msg []byte) { c.buf = append(c.buf, msg...) }

// flush writes what is pending with one write.
func (c *coalesced) flush(write func([]byte) error) error {
	if len(c.buf) == 0 {
		return nil
	}
	err := write(c.buf)
	if cap(c.buf) > 4*maxCoalesced {
		c.buf = nil // after one huge message: do not keep its buffer
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

func (r *Relay) count(d Direction, msg []byte) {
	r.Stats.Messages[d].Add(1)
	r.Stats.Bytes[d].Add(int64(len(msg)))
	if r.opts.OnMessage != nil {
		r.opts.OnMessage(d, len(msg))
	}
}

// ambiguous reports a message refused because parsers would read it
// differently.
func (r *Relay) ambiguous(d Direction, problem string) {
	if r.opts.OnAmbiguous != nil {
		r.opts.OnAmbiguous(d, problem)
	}
}

// head returns a short printable prefix of a message for logs.
func head(msg []byte) string {
	const n = 80
	if len(msg) > n {
		msg = msg[:n]
	}
	return fmt.Sprintf("%q", msg)
}

// failPending answers every client request the server will never answer.
func (r *Relay) failPending(detail string) {
	for _, p := range r.pending.drain() {
		_ = r.writeClient(wire.ErrorResponse(p.rawID, wire.CodeServerGone,
			fmt.Sprintf("mcpcage: %s before answering %s", detail, p.method), wire.ErrorData{Mcpcage: wire.ClassServerGone, Reason: detail}))
	}
}

// Notify sends a notification of the daemon's own to the client (a
// complete JSON-RPC notification, without terminator).
func (r *Relay) Notify(msg []byte) error {
	return r.writeClient(append(append([]byte(nil), msg...), '\n'))
}

// InFlight lists the client requests the server has not answered yet,
// oldest first.
func (r *Relay) InFlight() []Call { return r.pending.list() }

// Call describes a request in flight.
type Call struct {
	ID     string // raw JSON id
	Method string
	Since  time.Time
	Until  time.Time // when it was answered; zero while in flight
}

// CallsAt lists the client's requests of method that were in flight at
// time t (still pending, or answered after t), oldest first.
func (r *Relay) CallsAt(t time.Time, method string) []Call { return r.pending.at(t, method) }
