package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/wire"
	"github.com/mcpcage/mcpcage/internal/contain"
)

// Options configure a [Conn].
type Options struct {
	URL    *url.URL     // the server's MCP endpoint
	Server string       // the server's name in the config, for messages
	HTTP   *http.Client // TLS, timeouts and redirect policy (see [NewHTTPClient])
	// Auth supplies the bearer token; nil when the server needs none.
	Auth Authorizer
	// MaxMessageBytes bounds one message (a JSON body or an SSE event).
	MaxMessageBytes int64
	Logger          *slog.Logger
	// SignInLink, when set, starts (or returns the pending) sign-in whose
	// link a client that declared URL-mode elicitation is given in-band
	// (error -32042) instead of the mcpcage login hint alone; it returns
	// the link and the elicitation's id.
	SignInLink func(ctx context.Context) (link, id string, err error)
	// OnUpstream is told each answer the server gave (status and how long
	// its headers took), for metrics; may be nil.
	OnUpstream func(method string, status int, took time.Duration)
	// OnInternalError, when set, is told that a goroutine of the bridge
	// panicked (a bug of mcpcaged's, on what the server sent): the bridge
	// is killed, and its session must end saying so. It must not wait.
	OnInternalError func()
}

// Authorizer supplies the token a request carries.
type Authorizer interface {
	// Token returns the access token to send, refreshed ahead of its
	// expiry; a *SignInError when there is none the user can use.
	Token(ctx context.Context) (string, error)
	// Renew is called once the server refused token (401): it returns a
	// new token, or a *SignInError.
	Renew(ctx context.Context, refused string) (string, error)
}

// SignInError says the delegating user must sign in (again); its message
// is shown to the client as it is.
type SignInError struct{ Msg string }

func (e *SignInError) Error() string { return e.Msg }

// Conn is one session's bridge to a remote server. The relay writes
// client messages to it (Write, one newline-terminated message per line)
// and reads server messages from Out.
type Conn struct {
	opts   Options
	ctx    context.Context // cancelled by Kill: in-flight requests abort
	cancel context.CancelFunc
	listen context.CancelFunc // ends the standalone GET stream

	out   *io.PipeReader
	outW  *io.PipeWriter
	outMu sync.Mutex

	pending []byte    // a partial line written so far
	queue   sendQueue // client messages Write took, in order, for the sender

	mu        sync.Mutex
	sessionID string // Mcp-Session-Id, "" when the server keeps none
	version   string // the initialize era's negotiated protocol version
	listening bool
	// The client's initialize and notifications/initialized, replayed
	// when the server forgets the session (404).
	initBody, initializedBody []byte
	reinitMu                  sync.Mutex

	inflight sync.WaitGroup
	slots    chan struct{} // bounds concurrent requests
	// big is the session's one slot for an answer (a JSON body or an
	// SSE event) larger than smallAnswer: of the requests in flight,
	// one at a time reads past that, the others wait with what they
	// have (the server's writes then wait too), so a session holds
	// about maxInFlight x smallAnswer plus one max_message_bytes of
	// answers, not maxInFlight x max_message_bytes.
	big chan struct{}

	closing   atomic.Bool
	renewMu   sync.Mutex
	renewedAt time.Time // when a 401 last renewed the token (see renew)
	// urlElicitation: the client's initialize declared URL-mode
	// elicitation (capabilities.elicitation.url).
	urlElicitation atomic.Bool
	closeOnce      sync.Once
	exited         chan struct{}
	failure        atomic.Value // string: why the bridge ended on its own
	// own counts the lines the bridge wrote to Out itself that the relay
	// asks about (Own): they are read in order, so it holds those not
	// read yet.
	ownMu sync.Mutex
	own   map[string]int
}

// maxInFlight bounds the requests a session has open upstream at once; a
// client that opens more waits for one to finish.
const maxInFlight = 64

// smallAnswer is the size of an answer any number of requests may hold
// at once; a larger one takes the session's big slot (Conn.big).
const smallAnswer = 64 << 10

// New starts a bridge; nothing is sent before the client's first message.
func New(opts Options) *Conn {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	c := &Conn{opts: opts, ctx: ctx, cancel: cancel, listen: func() {}, out: r, outW: w,
		slots: make(chan struct{}, maxInFlight), big: make(chan struct{}, 1), exited: make(chan struct{})}
	c.queue.init(2*opts.MaxMessageBytes + 1<<20)
	c.inflight.Add(1) // the sender
	c.goContained("sender", c.sender)
	return c
}

// sender sends what Write queued, in order, until Close: initialize,
// notifications and responses one after the other, requests each in the
// background once the messages before them are sent.
func (c *Conn) sender() {
	defer c.inflight.Done()
	for {
		line, ok := c.queue.pop()
		if !ok {
			return
		}
		c.send(line)
	}
}

// Out is what the server says, one message per line.
func (c *Conn) Out() io.Reader { return c.out }

// Exited is closed once the bridge has ended (Out then reads EOF).
func (c *Conn) Exited() <-chan struct{} { return c.exited }

// Failure says why the bridge ended on its own ("" when the client or
// the daemon ended it).
func (c *Conn) Failure() string {
	f, _ := c.failure.Load().(string)
	return f
}

// Write takes client messages, newline-terminated, and queues them for
// the sender: it never waits for the network, so the relay's loops (which
// also read Out) never wait on the server through it. A client with more
// than twice max_message_bytes (and 1 MiB) of messages not yet sent or
// answered ends the session.
func (c *Conn) Write(p []byte) (int, error) {
	if c.closing.Load() {
		return 0, io.ErrClosedPipe
	}
	c.pending = append(c.pending, p...)
	for {
		i := bytes.IndexByte(c.pending, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimRight(c.pending[:i], "\r")
		if len(bytes.TrimSpace(line)) > 0 {
			if err := c.queue.push(append([]byte(nil), line...)); err != nil {
				return 0, err
			}
		}
		c.pending = c.pending[i+1:]
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return len(p), nil
}

// Close ends the client's side: what was written is still sent, the
// requests still open are answered, then the server's session is ended
// (DELETE) and Out reaches EOF.
func (c *Conn) Close() error {
	c.closing.Store(true)
	c.queue.close()
	go c.finish("")
	return nil
}

// Stop is the stop ladder of a session: the relay closes the bridge (Close)
// once it has written the client's last messages, as it closes a local
// server's stdin; Stop waits up to grace for that and for the open
// requests, then aborts them.
func (c *Conn) Stop(grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.Kill()
		<-c.exited
	}
}

// Kill aborts every open request now.
func (c *Conn) Kill() {
	c.closing.Store(true)
	c.cancel()
	c.queue.close()
	_ = c.outW.CloseWithError(errKilled) // an emit blocked on a reader that is gone returns
	go c.finish("")
}

var errKilled = errors.New("the bridge was killed")

// goContained runs fn on a goroutine of the bridge's own, contained: a
// panic in it (a bug of mcpcaged's, on what the remote server sent) kills
// this bridge and is told to OnInternalError; the daemon and every other
// session go on. fn's own deferred calls (an in-flight count, a slot)
// run before.
func (c *Conn) goContained(name string, fn func()) {
	contain.Go(fn, func(p contain.Panic) {
		c.opts.Logger.Error("internal error in the bridge to a remote server: its session ends; mcpcaged goes on (please report this)",
			"in", name, "server", c.opts.Server, "panic", p.Value, "stack", p.Stack)
		if c.opts.OnInternalError != nil {
			c.opts.OnInternalError()
		}
		c.Kill()
	})
}

// finish ends the bridge once: open requests end, the session is deleted
// upstream, Out closes.
func (c *Conn) finish(failure string) {
	c.closeOnce.Do(func() {
		if failure != "" {
			c.failure.Store(failure)
		}
		c.closing.Store(true)
		c.queue.close()
		c.mu.Lock()
		stopListening := c.listen
		c.mu.Unlock()
		stopListening()
		c.inflight.Wait()
		c.deleteSession()
		c.cancel()
		_ = c.outW.Close()
		close(c.exited)
	})
}

// message is what the bridge reads of one client message.
type message struct {
	body    []byte
	method  string   // the (first) method, "" for responses
	name    string   // Mcp-Name: params.name or params.uri
	version string   // the 2026-07-28 era's per-request protocol version
	ids     []string // IDKey of each request awaiting an answer
	rawIDs  [][]byte
}

func (m *message) isRequest() bool { return len(m.ids) > 0 }

// read classifies a client message.
func read(line []byte) *message {
	m := &message{body: line}
	var w wire.Message
	if err := wire.Peek(line, &w); err != nil {
		return m
	}
	for i, e := range w.Envelopes {
		if i == 0 && e.Method != "" {
			m.method = e.Method
			if !e.Params.Empty() {
				m.name, m.version = paramsHeaders(e.Method, e.Params.Of(line))
			}
		}
		if e.Kind == wire.KindRequest {
			id := e.ID.Of(line)
			m.ids = append(m.ids, wire.IDKey(id))
			m.rawIDs = append(m.rawIDs, id)
		}
	}
	return m
}

// declaresURLElicitation reads an initialize request's
// capabilities.elicitation.url.
func declaresURLElicitation(body []byte) bool {
	var r struct {
		Params struct {
			Capabilities struct {
				Elicitation struct {
					URL *json.RawMessage `json:"url"`
				} `json:"elicitation"`
			} `json:"capabilities"`
		} `json:"params"`
	}
	return json.Unmarshal(body, &r) == nil && r.Params.Capabilities.Elicitation.URL != nil
}

// paramsHeaders reads what the 2026-07-28 era mirrors in headers: member
// by member, never a map of all of params or _meta (found by a red-team
// helper: a _meta of millions of members cost hundreds of MiB).
func paramsHeaders(method string, params []byte) (name, version string) {
	str := func(doc []byte, member string) string {
		sp, ok := wire.Member(doc, member)
		if !ok {
			return ""
		}
		v, err := wire.String(sp.Of(doc))
		if err != nil {
			return ""
		}
		return v
	}
	switch request.Method(method) {
	case request.ToolsCall, request.PromptsGet:
		name = str(params, "name")
	case request.ResourcesRead, request.ResourcesSubscribe, request.ResourcesUnsubscribe:
		name = str(params, "uri")
	}
	if len(name) > maxNameHeader {
		name = "" // not mirrored: a header that large no server takes, and each request in flight would keep it
	}
	if meta, ok := wire.Member(params, "_meta"); ok {
		version = str(meta.Of(params), "io.modelcontextprotocol/protocolVersion")
	}
	return name, version
}

// send delivers one client message, and tells the queue when it is done
// with it.
func (c *Conn) send(line []byte) {
	m := read(line)
	done := func() { c.queue.done(len(line)) }
	switch {
	case m.method == string(request.Initialize):
		// The session id and protocol version come with its answer: what
		// follows waits for it.
		c.mu.Lock()
		c.initBody = m.body
		c.mu.Unlock()
		c.urlElicitation.Store(declaresURLElicitation(m.body))
		c.exchange(m)
		done()
	case !m.isRequest():
		c.exchange(m)
		done()
		if m.method == "notifications/initialized" {
			c.mu.Lock()
			c.initializedBody = m.body
			c.mu.Unlock()
			c.startListening()
		}
	default:
		select {
		case c.slots <- struct{}{}:
		case <-c.ctx.Done():
			c.failAll(m, wire.CodeServerGone, wire.ClassServerGone, "the session with "+c.opts.Server+" ended")
			done()
			return
		}
		c.inflight.Add(1)
		c.goContained("exchange", func() {
			defer c.inflight.Done()
			defer func() { <-c.slots }()
			defer done()
			c.exchange(m)
		})
	}
}

// emit writes one server message to Out as one line.
func (c *Conn) emit(msg []byte) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 {
		return
	}
	if bytes.ContainsAny(msg, "\r\n") {
		var b bytes.Buffer
		if err := json.Compact(&b, msg); err == nil {
			msg = b.Bytes()
		}
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	_, _ = c.outW.Write(append(msg, '\n'))
}

// Upstream error classes, the "mcpcage" member of the error's data.
const (
	ClassSignIn   = "sign_in_required"
	ClassUpstream = "upstream"
)

// failAll answers every request of m with one error.
func (c *Conn) failAll(m *message, code int, class, msg string) {
	if !m.isRequest() {
		c.opts.Logger.Warn("message to remote server not delivered", "method", m.method, "err", msg)
		return
	}
	for _, id := range m.rawIDs {
		c.emit(wire.ErrorResponse(id, code, "mcpcage: "+msg, wire.ErrorData{Mcpcage: class, Reason: msg}))
	}
}

// idempotent methods are retried after a failure that may have happened
// before the server acted; nothing else is.
var idempotent = map[string]bool{
	"ping": true, "server/discover": true, "tools/list": true, "prompts/list": true, "resources/list": true,
	"resources/templates/list": true, "resources/read": true, "prompts/get": true, "completion/complete": true,
}

// CodeURLElicitationRequired is MCP's error (2025-11-25) for a request
// that needs the user to visit a URL first.
const CodeURLElicitationRequired = -32042

// signInNeeded answers m's requests: the sign-in hint, and the sign-in
// link itself where the client can show one (URL-mode elicitation).
func (c *Conn) signInNeeded(m *message, msg string) {
	if !m.isRequest() || !c.urlElicitation.Load() || c.opts.SignInLink == nil {
		c.failAll(m, wire.CodeSignIn, ClassSignIn, msg)
		return
	}
	link, id, err := c.opts.SignInLink(c.ctx)
	if err != nil {
		c.opts.Logger.Info("no in-band sign-in link", "err", err)
		c.failAll(m, wire.CodeSignIn, ClassSignIn, msg)
		return
	}
	type elicitation struct {
		Mode    string `json:"mode"`
		ID      string `json:"elicitationId"`
		URL     string `json:"url"`
		Message string `json:"message"`
	}
	data := struct {
		Elicitations []elicitation `json:"elicitations"`
		Mcpcage      string        `json:"mcpcage"`
		Reason       string        `json:"reason"`
	}{[]elicitation{{Mode: "url", ID: id, URL: link, Message: "Sign in to " + c.opts.Server + " (mcpcage keeps the sign-in; your client never sees it)"}}, ClassSignIn, msg}
	for _, rid := range m.rawIDs {
		c.emitOwn(wire.ErrorResponse(rid, CodeURLElicitationRequired, "mcpcage: "+msg+", or open the sign-in link", data))
	}
}

// emitOwn is emit of a line the bridge wrote itself that the relay must
// tell from the server's (see Own).
func (c *Conn) emitOwn(msg []byte) {
	msg = bytes.TrimSpace(msg)
	c.ownMu.Lock()
	if c.own == nil {
		c.own = map[string]int{}
	}
	c.own[string(msg)]++
	c.ownMu.Unlock()
	c.emit(msg)
}

// Own reports whether line (as read from Out, without its newline) is
// one the bridge wrote itself, not the server: its sign-in link, an
// error the server could imitate. Each line so written is owned once.
func (c *Conn) Own(line []byte) bool {
	c.ownMu.Lock()
	defer c.ownMu.Unlock()
	n := c.own[string(bytes.TrimSpace(line))]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(c.own, string(bytes.TrimSpace(line)))
	} else {
		c.own[string(bytes.TrimSpace(line))] = n - 1
	}
	return true
}

// ElicitationComplete tells the client the sign-in of elicitation id is
// done (notifications/elicitation/complete), so it may retry.
func (c *Conn) ElicitationComplete(id string) {
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/elicitation/complete", "params": map[string]string{"elicitationId": id}})
	if err == nil && !c.closing.Load() {
		c.emit(b)
	}
}

// exchange POSTs m and relays the answer.
func (c *Conn) exchange(m *message) {
	retries := 0
	renewed, reinit := false, false
	for {
		resp, took, err := c.post(m)
		if err != nil {
			var si *SignInError
			if errors.As(err, &si) {
				c.signInNeeded(m, si.Msg)
				return
			}
			if c.ctx.Err() != nil {
				c.failAll(m, wire.CodeServerGone, wire.ClassServerGone, "the session with "+c.opts.Server+" ended before it answered")
				return
			}
			if idempotent[m.method] && retries < 2 && transient(err) {
				retries++
				c.pause(time.Duration(retries) * 250 * time.Millisecond)
				continue
			}
			why := describe(c.opts.URL, c.opts.Server, err)
			c.opts.Logger.Warn("remote server not reached", "server", c.opts.Server, "method", m.method, "err", why)
			c.failAll(m, wire.CodeUpstream, ClassUpstream, why)
			return
		}
		if c.opts.OnUpstream != nil {
			c.opts.OnUpstream(m.method, resp.StatusCode, took)
		}
		switch {
		case (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && c.opts.Auth != nil && movedAway(resp):
			// Its credentials were dropped on the way (another origin):
			// renewing them changes nothing, and signing in again would
			// not either.
			drain(resp)
			msg := movedMessage(resp, c.opts.Server)
			c.opts.Logger.Warn("remote server redirected to another origin", "server", c.opts.Server, "to", originOf(resp.Request.URL))
			c.failAll(m, wire.CodeUpstream, ClassUpstream, msg)
			return
		case resp.StatusCode == http.StatusUnauthorized && c.opts.Auth != nil && !renewed:
			drain(resp)
			renewed = true
			again, err := c.renew(c.sentToken(resp))
			if err != nil {
				c.signInNeeded(m, signInMessage(err, c.opts.Server))
				return
			}
			if !again {
				c.failAll(m, wire.CodeSignIn, ClassSignIn, c.opts.Server+" refused the sign-in again less than a minute after it was renewed: run `mcpcage login "+c.opts.Server+"`")
				return
			}
			continue
		case resp.StatusCode == http.StatusUnauthorized:
			drain(resp)
			c.failAll(m, wire.CodeSignIn, ClassSignIn, c.opts.Server+" refused the sign-in (401 after a refresh): run `mcpcage login "+c.opts.Server+"`")
			return
		case resp.StatusCode == http.StatusForbidden:
			msg := forbidden(resp, c.opts.Server)
			drain(resp)
			c.failAll(m, wire.CodeUpstream, ClassUpstream, msg)
			return
		case resp.StatusCode == http.StatusNotFound && c.session() != "" && m.method != string(request.Initialize) && !reinit:
			stale := resp.Request.Header.Get("Mcp-Session-Id")
			drain(resp)
			reinit = true
			if c.reinitialize(stale) {
				continue
			}
			c.failAll(m, wire.CodeServerGone, wire.ClassServerGone, c.opts.Server+" ended its session (404 for Mcp-Session-Id) and refused a new one: restart the MCP server in your client")
			go c.finish(c.opts.Server + " ended its session")
			return
		case resp.StatusCode == http.StatusNotFound && c.session() != "" && m.method != string(request.Initialize):
			drain(resp)
			c.failAll(m, wire.CodeServerGone, wire.ClassServerGone, c.opts.Server+" ended its session (404 for Mcp-Session-Id): restart the MCP server in your client")
			go c.finish(c.opts.Server + " ended its session")
			return
		case resp.StatusCode >= 500 && idempotent[m.method] && retries < 2:
			drain(resp)
			retries++
			c.pause(time.Duration(retries) * 500 * time.Millisecond)
			continue
		}
		c.answer(m, resp)
		return
	}
}

// renewEvery bounds how often a session's 401s renew its token.
const renewEvery = time.Minute

// renew answers a 401 for the token refused: whether to send the request
// again, with the token renewed, or with a newer one another request's
// 401 renewed meanwhile. Within renewEvery of a renewal the token is not
// renewed again: a server that refuses every token would otherwise have
// the daemon refresh at its authorization server once a request.
func (c *Conn) renew(refused string) (again bool, err error) {
	c.renewMu.Lock()
	defer c.renewMu.Unlock()
	if !c.renewedAt.IsZero() && time.Since(c.renewedAt) < renewEvery {
		cur, err := c.opts.Auth.Token(c.ctx)
		switch {
		case err != nil:
			return false, err
		case cur != "":
			return cur != refused, nil
		}
		// No token at all: Renew says what to do (sign in), with nothing
		// to refresh.
	}
	if _, err := c.opts.Auth.Renew(c.ctx, refused); err != nil {
		return false, err
	}
	c.renewedAt = time.Now()
	return true, nil
}

// reinitialize opens a new session after the server forgot stale (it
// answered 404, e.g. after its idle timeout): the client's initialize
// and notifications/initialized are sent again and their answers kept
// from the client, which keeps its session. It reports whether a new
// session exists (another request may have made it already).
func (c *Conn) reinitialize(stale string) bool {
	c.reinitMu.Lock()
	defer c.reinitMu.Unlock()
	c.mu.Lock()
	current, initBody, initialized := c.sessionID, c.initBody, c.initializedBody
	c.mu.Unlock()
	if current != stale {
		return current != ""
	}
	if initBody == nil {
		return false
	}
	// The old session's standalone stream ends with it: a new one is
	// opened for the new session (startListening), never beside it.
	c.mu.Lock()
	c.sessionID = ""
	c.listening = false
	stopListening := c.listen
	c.listen = func() {}
	c.mu.Unlock()
	stopListening()
	resp, _, err := c.post(read(initBody))
	if err != nil {
		c.opts.Logger.Warn("remote session not re-established", "err", err)
		return false
	}
	sid := resp.Header.Get("Mcp-Session-Id")
	drain(resp)
	if resp.StatusCode/100 != 2 || !visibleASCII(sid) {
		c.opts.Logger.Warn("remote session not re-established", "status", resp.StatusCode)
		return false
	}
	c.mu.Lock()
	c.sessionID = sid
	c.mu.Unlock()
	if initialized != nil {
		if resp, _, err := c.post(read(initialized)); err == nil {
			drain(resp)
		}
		c.startListening()
	}
	c.opts.Logger.Info("remote server had ended the session: a new one was opened with the client's initialize")
	return true
}

// sentToken is the token the refused request carried.
func (c *Conn) sentToken(resp *http.Response) string {
	tok, _ := bytesCutPrefix(resp.Request.Header.Get("Authorization"), "Bearer ")
	return tok
}

func bytesCutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}

// pause waits d unless the bridge is killed.
func (c *Conn) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// post sends one POST with the headers of both eras.
func (c *Conn) post(m *message) (*http.Response, time.Duration, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.opts.URL.String(), bytes.NewReader(m.body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	c.setHeaders(req, m.version)
	if m.method != "" {
		req.Header.Set("Mcp-Method", headerValue(m.method))
	}
	if m.name != "" {
		req.Header.Set("Mcp-Name", headerValue(m.name))
	}
	if err := c.authorize(req); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	resp, err := c.opts.HTTP.Do(req)
	return resp, time.Since(start), err
}

// setHeaders adds the session id and protocol version.
func (c *Conn) setHeaders(req *http.Request, version string) {
	c.mu.Lock()
	sid, v := c.sessionID, c.version
	c.mu.Unlock()
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	if version != "" {
		v = version
	}
	if v != "" {
		req.Header.Set("MCP-Protocol-Version", v)
	}
}

func (c *Conn) authorize(req *http.Request) error {
	if c.opts.Auth == nil {
		return nil
	}
	tok, err := c.opts.Auth.Token(c.ctx)
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

func (c *Conn) session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionID
}

// answer relays a 2xx (or a 4xx whose body is JSON-RPC) answer.
func (c *Conn) answer(m *message, resp *http.Response) {
	defer drain(resp)
	if m.method == string(request.Initialize) && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" && visibleASCII(sid) {
			c.mu.Lock()
			c.sessionID = sid
			c.mu.Unlock()
		}
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNoContent:
		if m.isRequest() {
			c.failAll(m, wire.CodeUpstream, ClassUpstream, fmt.Sprintf("%s accepted the request without answering it (%s)", c.opts.Server, statusLine(resp)))
		}
	case ct == "text/event-stream" && resp.StatusCode/100 == 2 && !m.isRequest():
		// A notification or response is answered 202 (streamable HTTP);
		// a stream in answer would hold the sender, and with it every
		// message after this one, for as long as the server keeps it
		// open. Not read.
		c.opts.Logger.Warn("remote server answered a notification or response with a stream; closed unread (it should answer 202)", "server", c.opts.Server, "method", m.method)
		_ = resp.Body.Close()
	case ct == "text/event-stream" && resp.StatusCode/100 == 2:
		c.stream(m, resp.Body)
	case ct == "application/json":
		body, release, err := c.readBody(resp)
		defer release()
		switch {
		case err != nil:
			c.failAll(m, wire.CodeUpstream, ClassUpstream, describe(c.opts.URL, c.opts.Server, err))
		case int64(len(body)) > c.opts.MaxMessageBytes:
			c.failAll(m, wire.CodeTooLarge, wire.ClassTooLarge, fmt.Sprintf("%s answered more than max_message_bytes (%d bytes)", c.opts.Server, c.opts.MaxMessageBytes))
		case resp.StatusCode/100 != 2 && !answers(body, m):
			c.failAll(m, wire.CodeUpstream, ClassUpstream, statusMessage(resp, c.opts.Server))
		default:
			c.noteAnswer(m, body)
			c.emit(body)
		}
	case resp.StatusCode/100 == 2 && !m.isRequest():
	default:
		c.failAll(m, wire.CodeUpstream, ClassUpstream, statusMessage(resp, c.opts.Server))
	}
}

// readBody reads a JSON answer, up to one byte past max_message_bytes
// (so the caller can tell it is too large). Past smallAnswer it first
// takes the session's big slot; release gives it back.
func (c *Conn) readBody(resp *http.Response) (body []byte, release func(), err error) {
	release = func() {}
	var b bytes.Buffer
	if n := resp.ContentLength; n >= 0 && n <= smallAnswer {
		b.Grow(int(n) + 1)
	}
	all := io.LimitReader(resp.Body, c.opts.MaxMessageBytes+1)
	if _, err := b.ReadFrom(io.LimitReader(all, smallAnswer+1)); err != nil {
		return nil, release, err
	}
	if b.Len() <= smallAnswer || int64(b.Len()) > c.opts.MaxMessageBytes {
		return b.Bytes(), release, nil
	}
	if err := c.takeBig(c.ctx); err != nil {
		return nil, release, err
	}
	release = c.releaseBig
	if n := resp.ContentLength; n > int64(b.Len()) && n <= c.opts.MaxMessageBytes {
		b.Grow(int(n) - b.Len() + 1)
	}
	_, err = b.ReadFrom(all)
	return b.Bytes(), release, err
}

// takeBig waits for the session's big answer slot (see Conn.big).
func (c *Conn) takeBig(ctx context.Context) error {
	select {
	case c.big <- struct{}{}:
		return nil
	default:
	}
	c.opts.Logger.Debug("a large answer waits for the one before it", "server", c.opts.Server)
	select {
	case c.big <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Conn) releaseBig() { <-c.big }

// answers reports whether body is a JSON-RPC response to one of m's
// requests (a server may send its JSON-RPC error with a 4xx status).
func answers(body []byte, m *message) bool {
	var w wire.Message
	if wire.Peek(body, &w) != nil {
		return false
	}
	for _, e := range w.Envelopes {
		if e.Kind == wire.KindResponse {
			k := wire.IDKey(e.ID.Of(body))
			for _, id := range m.ids {
				if id == k {
					return true
				}
			}
		}
	}
	return false
}

// noteAnswer keeps the protocol version an initialize answer chose.
func (c *Conn) noteAnswer(m *message, body []byte) {
	if m.method != string(request.Initialize) {
		return
	}
	var r struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &r) == nil && visibleASCII(r.Result.ProtocolVersion) {
		c.mu.Lock()
		c.version = r.Result.ProtocolVersion
		c.mu.Unlock()
	}
}

// stream relays an SSE answer until every request of m is answered;
// a stream that drops first is resumed with Last-Event-ID.
func (c *Conn) stream(m *message, body io.ReadCloser) {
	open := map[string]bool{}
	for _, id := range m.ids {
		open[id] = true
	}
	lastID := ""
	for attempt := 0; ; attempt++ {
		var retry time.Duration
		lastID, retry = c.events(c.ctx, body, m, open, lastID)
		_ = body.Close()
		if len(open) == 0 || !m.isRequest() {
			return
		}
		if c.ctx.Err() != nil {
			c.failOpen(m, open, wire.CodeServerGone, wire.ClassServerGone, "the session with "+c.opts.Server+" ended before it answered")
			return
		}
		if lastID == "" || attempt >= resumeAttempts {
			c.failOpen(m, open, wire.CodeUpstream, ClassUpstream, fmt.Sprintf("the connection to %s dropped before it answered (%s)", c.opts.Server, resumeWhy(lastID)))
			return
		}
		if retry <= 0 {
			retry = time.Duration(attempt+1) * 200 * time.Millisecond
		}
		c.pause(min(retry, maxRetryPause))
		c.opts.Logger.Debug("resuming a dropped stream", "last_event_id", lastID, "attempt", attempt+1)
		resp, err := c.get(lastID)
		if err != nil || resp.StatusCode != http.StatusOK {
			if resp != nil {
				drain(resp)
			}
			continue
		}
		body = resp.Body
	}
}

const resumeAttempts = 5

// maxNameHeader bounds the name or URI mirrored in Mcp-Name.
const maxNameHeader = 8 << 10

// maxToken bounds a session id, protocol version or event id the bridge
// keeps and sends back; a longer one is not kept.
const maxToken = 1 << 10

// maxRetryPause bounds the pause a server's retry field asks for before
// a stream is resumed (a request waits that long, holding its slot).
const maxRetryPause = 30 * time.Second

func resumeWhy(lastID string) string {
	if lastID == "" {
		return "the server gave no event ids to resume from"
	}
	return "it did not resume the stream"
}

// failOpen answers the requests of m still open.
func (c *Conn) failOpen(m *message, open map[string]bool, code int, class, msg string) {
	for i, id := range m.ids {
		if open[id] {
			c.emit(wire.ErrorResponse(m.rawIDs[i], code, "mcpcage: "+msg, wire.ErrorData{Mcpcage: class, Reason: msg}))
		}
	}
}

// events relays one SSE body; it returns the last event id seen and the
// server's retry advice. open loses each request answered.
func (c *Conn) events(ctx context.Context, body io.Reader, m *message, open map[string]bool, lastID string) (string, time.Duration) {
	sr := newSSEReader(body, c.opts.MaxMessageBytes)
	sr.big, sr.release = func() error { return c.takeBig(ctx) }, c.releaseBig
	defer sr.settle()
	var w wire.Message
	for {
		ev, err := sr.next()
		if err != nil {
			var tl errEventTooLarge
			if errors.As(err, &tl) {
				c.opts.Logger.Warn("remote server sent an event larger than max_message_bytes", "limit", tl.limit)
				if m != nil {
					c.failOpen(m, open, wire.CodeTooLarge, wire.ClassTooLarge,
						fmt.Sprintf("%s answered more than max_message_bytes (%d bytes)", c.opts.Server, tl.limit))
					clear(open)
				}
			}
			return lastID, sr.retry
		}
		if ev.id != "" {
			lastID = ev.id
		}
		if ev.event != "" && ev.event != "message" {
			continue
		}
		if wire.Peek(ev.data, &w) == nil {
			for _, e := range w.Envelopes {
				if e.Kind == wire.KindResponse {
					delete(open, wire.IDKey(e.ID.Of(ev.data)))
				}
			}
		}
		if m != nil {
			c.noteAnswer(m, ev.data)
		}
		c.emit(ev.data)
		if m != nil && m.isRequest() && len(open) == 0 {
			return lastID, 0
		}
	}
}

// get opens a GET stream (the standalone one, or a resumption).
func (c *Conn) get(lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.opts.URL.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	c.setHeaders(req, "")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if err := c.authorize(req); err != nil {
		return nil, err
	}
	return c.opts.HTTP.Do(req)
}

// startListening opens the standalone GET stream once, for the server's
// own requests and notifications.
//
// It waits (up to listenWait) until the server has answered the first
// GET, so the server's stream exists before the client's next request:
// the notifications a request makes the server send on it (logging,
// progress of work it starts) are not lost for want of a stream yet.
func (c *Conn) startListening() {
	c.mu.Lock()
	if c.listening {
		c.mu.Unlock()
		return
	}
	c.listening = true
	ctx, cancel := context.WithCancel(c.ctx)
	c.listen = cancel
	c.mu.Unlock()
	answered := make(chan struct{})
	c.goContained("standalone stream", func() { c.listenLoop(ctx, answered) })
	t := time.NewTimer(listenWait)
	defer t.Stop()
	select {
	case <-answered:
	case <-t.C:
	case <-ctx.Done():
	}
}

// listenWait bounds how long the client's messages wait for the
// standalone stream to open.
const listenWait = 2 * time.Second

// listenLoop keeps the standalone stream open (resuming after a drop)
// until the bridge ends or the server says it offers none. Every failed
// or empty attempt backs off (250 ms doubling to 30 s), and a 401 renews
// the token at most once a minute: a server cannot make the daemon spin
// or hammer its authorization server.
func (c *Conn) listenLoop(ctx context.Context, answered chan struct{}) {
	var once sync.Once
	defer once.Do(func() { close(answered) })
	lastID := ""
	var backoff time.Duration
	var renewed time.Time
	failures := 0
	grow := func() {
		failures++
		backoff = min(max(backoff*2, 250*time.Millisecond), 30*time.Second)
	}
	for ctx.Err() == nil {
		if backoff > 0 {
			sleepCtx(ctx, backoff)
		}
		if failures > 20 {
			c.opts.Logger.Warn("standalone stream given up after repeated failures", "server", c.opts.Server)
			return
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.opts.URL.String(), nil)
		if err != nil {
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		c.setHeaders(req, "")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		if err := c.authorize(req); err != nil {
			c.opts.Logger.Info("standalone stream not opened", "err", err)
			return
		}
		resp, err := c.opts.HTTP.Do(req)
		once.Do(func() { close(answered) })
		if err != nil {
			grow()
			continue
		}
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		switch {
		case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound:
			drain(resp)
			c.opts.Logger.Debug("remote server offers no standalone stream", "status", resp.StatusCode)
			return
		case resp.StatusCode == http.StatusUnauthorized && c.opts.Auth != nil:
			drain(resp)
			grow()
			if time.Since(renewed) < time.Minute {
				continue
			}
			renewed = time.Now()
			if _, err := c.opts.Auth.Renew(ctx, c.sentToken(resp)); err != nil {
				c.opts.Logger.Info("standalone stream closed: sign-in needed", "err", err)
				return
			}
		case resp.StatusCode != http.StatusOK || ct != "text/event-stream":
			drain(resp)
			grow()
		default:
			opened := time.Now()
			var retry time.Duration
			lastID, retry = c.events(ctx, resp.Body, nil, nil, lastID)
			_ = resp.Body.Close()
			if time.Since(opened) > 5*time.Second {
				failures, backoff = 0, 0 // it was a stream, not a server that hangs up at once
			} else {
				grow()
			}
			backoff = max(backoff, min(retry, maxRetryPause))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// deleteSession ends the server's session, when it keeps one.
func (c *Conn) deleteSession() {
	if c.session() == "" || c.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.opts.URL.String(), nil)
	if err != nil {
		return
	}
	c.setHeaders(req, "")
	if c.opts.Auth != nil {
		if tok, err := c.opts.Auth.Token(ctx); err == nil && tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	resp, err := c.opts.HTTP.Do(req)
	if err != nil {
		c.opts.Logger.Debug("remote session not deleted", "err", err)
		return
	}
	drain(resp)
}

// drain reads what is left of a body (bounded) so the connection is
// reused, and closes it.
func drain(resp *http.Response) {
	// Bounded in time too: a server that sends the rest slowly, or never,
	// does not hold the request (or the sender) that reads it.
	t := time.AfterFunc(drainWait, func() { _ = resp.Body.Close() })
	defer t.Stop()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// drainWait bounds how long drain reads what is left of a body.
const drainWait = 5 * time.Second

// visibleASCII reports whether s is a header token mcpcage keeps and
// sends back (a session id, a protocol version): visible ASCII, at most
// maxToken bytes.
func visibleASCII(s string) bool {
	if len(s) > maxToken {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}
