package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/pins"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/wire"
	"github.com/mcpcage/mcpcage/internal/logbound"
)

// sessionPolicy is the interceptor's policy for one session: who is
// acting (agent), for whom (user), on which server.
type sessionPolicy struct {
	d       *Daemon
	s       *session
	srv     *config.Server
	agent   *config.Agent // nil for an unregistered agent
	observe bool          // default_decision = "allow"
	ask     bool          // default_decision = "ask"
	// secrets: the stores' values and the session's own, merged once per
	// change of the stores (see secretValues).
	secrets atomic.Pointer[mergedSecrets]

	mu    sync.Mutex
	calls map[string]callStart // forwarded tools/call by id key
	defs  map[string]string    // tool name -> digest of the definition the session was last shown
	// defsFull: defs reached maxSessionDefs and a name was not kept.
	defsFull bool
	// pinsHad: the server had tool pins when the list being checked
	// began (see listStart).
	pinsHad  bool
	overflow pinOverflow // tools held back: the pins of the server are full

	listens listenStreams // the client's open subscriptions/listen streams (2026-07-28)

	observed map[observedKey]bool // names forwarded in observe mode, logged once each

	questions       map[string]chan struct{} // parked requests (by id key) whose question a cancel ends
	sessionConsents []string                 // consents given for this session only (revoked when it ends)
	consentsEnded   bool                     // the session's consents were revoked: revoke later ones at once

	// results: tools/call result records to write once the result is on
	// its way to the client (see afterServerMessage).
	results []audit.Entry

	// deferring is set while FromClientDeferred decides: the records of
	// allowed requests wait in deferred for Flush (see relay.Deferrer).
	deferring bool
	deferred  audit.Deferred

	reads        map[string]string   // forwarded prompts/get (resources/read) by id key: the name, for the result's influence
	uiReads      map[string]string   // forwarded resources/read of UI resources by id key: the URI, whose pin the result is checked against
	uiPinnedHere map[string]struct{} // UI resources this session pinned first (see notePinnedHere)
	tasks        taskTools           // task-augmented tools/call: the tool of each task, for its result's checks
	suspectTools map[string]string   // tools kept from the session after a suspect influence (on_suspect = "quarantine-tool"): why
	passing      atomic.Int64        // notifications, task statuses and replies recorded (see passingInfluence)
	lastPassing  boundedMap          // the digest of the last one recorded, by name

	// The session's series of the per-call metrics, by tool (and
	// decision): their labels are hashed once per session, not per call.
	callCounters metrics.Children[toolDecision, prometheus.Counter]
	callLatency  metrics.Children[string, prometheus.Observer]
}

// toolDecision keys the session's tool call counters.
type toolDecision struct {
	tool     string
	decision decision
}

// sessionMetricChildren bounds each per-session metric cache: a client
// may name any number of tools, the metrics count at most
// MaxToolsPerServer of them (and "other").
const sessionMetricChildren = 2 * metrics.MaxToolsPerServer

type observedKey struct {
	kind consent.Kind
	name string
}

// firstObserved reports whether name is forwarded in observe mode for
// the first time in the session.
func (p *sessionPolicy) firstObserved(k consent.Kind, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := observedKey{k, name}
	if p.observed[key] {
		return false
	}
	if p.observed == nil {
		p.observed = map[observedKey]bool{}
	}
	if len(p.observed) >= maxObservedNames {
		return false // logged at debug level: the audit log has it
	}
	p.observed[key] = true
	return true
}

// maxObservedNames bounds the names remembered for firstObserved; past it
// observed calls are logged at debug level only.
const maxObservedNames = 1024

// listKinds are the influences of list results, by the kind listed.
var listKinds = map[consent.Kind]flow.Kind{consent.KindTool: flow.ToolList, consent.KindPrompt: flow.PromptList, consent.KindResource: flow.ResourceList}

// maxReadsTracked bounds the forwarded prompts/get and resources/read
// remembered for their results (a server that never answers cannot grow
// it).
const maxReadsTracked = 4096

type callStart struct {
	tool  string
	id    string
	start time.Time
	call  string // the call's id in the audit log ("" without the data-flow guard)
}

// decide applies the admin ceiling, then the consents. pin is the
// definition of the tool the session was shown (see pinOf).
func (p *sessionPolicy) decide(method string, k consent.Kind, name string, args callArgs, pin string) consent.Decision {
	failpointPanic("decide", name)
	s := p.s
	if p.agent != nil && len(p.agent.Servers) > 0 && !slices.Contains(p.agent.Servers, s.server) {
		return consent.Decision{Reason: fmt.Sprintf("agent %s may not use server %s: the administrator's [agents.%s] servers list does not include it", s.agent, s.server, s.agent)}
	}
	if k == consent.KindTool {
		if matchAny(p.srv.ToolsDeny, name) {
			return consent.Decision{Reason: fmt.Sprintf("tool %q is forbidden by the administrator ([servers.%s] tools_deny)", name, s.server)}
		}
		if len(p.srv.ToolsAllow) > 0 && !matchAny(p.srv.ToolsAllow, name) {
			return consent.Decision{Reason: fmt.Sprintf("tool %q is not in the administrator's [servers.%s] tools_allow", name, s.server)}
		}
		if why := p.quarantineReason(name); why != "" {
			return consent.Decision{Reason: why}
		}
		if why := p.suspectReason(name); why != "" {
			return consent.Decision{Reason: why}
		}
	}
	return p.d.consents.Decide(consent.Query{User: s.user, UID: s.peer.UID, Agent: s.agent, Server: s.server, Kind: k, Name: name, Args: args.values, ArgsUnread: args.unreadReason(),
		Now: time.Now(), Session: s.id, Pin: pin, Definition: p.srv.Definition, Digest: func() string { return args.requestDigest(s.digests, method, string(k), name) }})
}

// ceiling reports whether the admin rules alone forbid it (a consent
// cannot help then).
func (p *sessionPolicy) ceiling(k consent.Kind, name string) bool {
	if p.agent != nil && len(p.agent.Servers) > 0 && !slices.Contains(p.agent.Servers, p.s.server) {
		return true
	}
	return k == consent.KindTool && (matchAny(p.srv.ToolsDeny, name) || (len(p.srv.ToolsAllow) > 0 && !matchAny(p.srv.ToolsAllow, name)))
}

// matchAny reports whether name matches one of the administrator's
// patterns. They are read as text, '*' crossing '/': "*delete*" must
// forbid a tool named "repo/delete" too (servers may name tools so), as
// a ceiling must never be narrower than it reads.
func matchAny(pats []string, name string) bool {
	return slices.ContainsFunc(pats, func(p string) bool { return consent.MatchText(p, name) })
}

// grantCommand is what the user can run to allow the denied request:
// the name as a pattern that matches only it (a tool named "*" must not
// become a grant of every tool).
func (p *sessionPolicy) grantCommand(k consent.Kind, name string) string {
	flag := map[consent.Kind]string{consent.KindTool: "--tool", consent.KindResource: "--resource", consent.KindPrompt: "--prompt"}[k]
	return fmt.Sprintf("mcpcage grant --agent %s --server %s %s %s", shellQuote(p.s.agent), p.s.server, flag, shellQuote(escapeGlob(name)))
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// FromClient decides requests that consents cover. It reads them with
// package request, which refuses what servers could read differently.
func (p *sessionPolicy) FromClient(e *wire.Envelope, msg []byte) relay.Verdict {
	if request.Method(e.Method) == request.SubscriptionsListen && e.Kind == wire.KindRequest {
		// What it carries passes the data-flow guard first, as any
		// undecided request's does (the URIs, _meta and every other
		// member reach the server).
		if v, refused := p.flowOther(e, msg); refused {
			return v
		}
		v := p.decideListen(e, msg)
		if !v.Deny {
			p.listens.opened(e.ID.Of(msg), e.Params.Of(msg))
		}
		return v // empty when it names no resource: it needs no decision
	}
	if e.Kind == wire.KindRequest {
		switch request.Method(e.Method) {
		case request.TasksResult, request.TasksGet, request.TasksCancel:
			if err := p.noteTaskRead(e.ID.Of(msg), e.Params.Of(msg)); err != nil {
				return p.refuse(e, msg, wire.CodeInvalidRequest, "ambiguous "+e.Method+" (servers could read it differently): "+err.Error())
			}
		}
	}
	if !request.NeedsDecision(e.Method) || e.Kind == wire.KindResponse {
		if v, refused := p.flowOther(e, msg); refused {
			return v
		}
		return relay.Verdict{}
	}
	if e.Kind == wire.KindNotification {
		// A naive server would run it, and nobody would have decided.
		return p.refuse(e, msg, wire.CodeInvalidRequest, e.Method+" must be a request with an id, not a notification")
	}
	if e.Kind != wire.KindRequest {
		return relay.Verdict{}
	}
	s := p.s
	t, err := request.Read(e.Method, e.Params.Of(msg), p.d.consents.ArgNames(s.user, s.agent, s.server))
	switch {
	case errors.Is(err, wire.ErrAmbiguous):
		return p.refuse(e, msg, wire.CodeInvalidRequest, "ambiguous "+e.Method+" (servers could read it differently): "+err.Error())
	case err != nil:
		return p.refuse(e, msg, wire.CodeInvalidParams, err.Error())
	}
	k, name := consentKind(t.Kind), t.Name
	var fo *flowOutcome
	var redacted []byte
	{
		fo, redacted = p.flowCheck(e.Params.Of(msg))
		if fo != nil && k == consent.KindTool {
			fo.call = s.nextCall()
		}
		if redacted != nil {
			// Everything from here on (the decision, a question, the
			// record) is about what the server will get.
			e2, msg2, t2, err := p.reread(e, msg, redacted)
			if err != nil {
				fo.action, fo.reason = config.FlowDeny, fo.reason+"; the redacted request could not be read back ("+err.Error()+"), so it is refused"
			} else {
				e, msg, t, redacted = e2, msg2, t2, msg2
			}
		}
		if fo != nil && fo.action == config.FlowDeny {
			return p.settle(e.Method, k, e.ID.Of(msg), name, argsOf(t), consent.Decision{Reason: fo.reason}, nil, fo)
		}
	}
	v := p.decideRequest(e, msg, t, k, fo)
	if redacted != nil && !v.Deny && v.Replace == nil {
		v.Replace = redacted
	}
	return v
}

// decideListen decides the resources a subscriptions/listen request asks
// the server to watch (the stateless era's resources/subscribe: found
// undecided by a red-team helper), each as resources/subscribe is
// decided, by consents and recorded; the request goes on only when every
// one is allowed (or in observe mode). Ask mode does not ask about them:
// one that no consent covers is refused with the grant that would allow
// it. A request that names no resource needs no decision (empty verdict).
func (p *sessionPolicy) decideListen(e *wire.Envelope, msg []byte) (v relay.Verdict) {
	uris, err := request.ListenResources(e.Params.Of(msg))
	switch {
	case errors.Is(err, wire.ErrAmbiguous):
		return p.refuse(e, msg, wire.CodeInvalidRequest, "ambiguous "+e.Method+" (servers could read it differently): "+err.Error())
	case err != nil:
		return p.refuse(e, msg, wire.CodeInvalidParams, err.Error())
	case len(uris) == 0:
		return relay.Verdict{}
	}
	k := consent.KindResource
	decs := make([]consent.Decision, len(uris))
	for i, uri := range uris {
		decs[i] = p.decide(e.Method, k, uri, callArgs{}, p.pinOf(k, uri))
		if !decs[i].Allow && !p.observe {
			return p.settle(e.Method, k, e.ID.Of(msg), uri, callArgs{}, decs[i], nil, nil)
		}
	}
	// One record each; the last one's durability covers the others
	// (records become durable in the order they were appended).
	for i, uri := range uris {
		v = p.settle(e.Method, k, e.ID.Of(msg), uri, callArgs{}, decs[i], nil, nil)
	}
	return v
}

// decideRequest decides a read request: consents, then (ask mode) the
// user.
func (p *sessionPolicy) decideRequest(e *wire.Envelope, msg []byte, t request.Target, k consent.Kind, fo *flowOutcome) relay.Verdict {
	s, name, args := p.s, t.Name, argsOf(t)
	if p.ask {
		q := asked{method: e.Method, kind: k, id: e.ID.Of(msg), name: name, args: args, pin: p.pinOf(k, name),
			target: ask.Target{User: s.user, Agent: s.agent, Server: s.server, Kind: string(k), Name: name}, flow: fo}
		if v, ok := p.retried(e, msg, q); ok {
			return v
		}
		dec := p.decide(e.Method, k, name, args, q.pin)
		// A completion only helps fill in a prompt or resource: never worth
		// a question of its own.
		if !dec.Allow && p.askable(k, name) && request.Method(e.Method) != request.CompletionComplete {
			return p.askUser(e, msg, q, dec)
		}
		return p.settle(e.Method, k, e.ID.Of(msg), name, args, dec, nil, fo)
	}
	return p.settle(e.Method, k, e.ID.Of(msg), name, args, p.decide(e.Method, k, name, args, p.pinOf(k, name)), nil, fo)
}

// reread makes a request with new params and reads it back as the
// policy reads every request.
func (p *sessionPolicy) reread(e *wire.Envelope, msg, params []byte) (*wire.Envelope, []byte, request.Target, error) {
	whole := e.Whole.Of(msg)
	sp := wire.Span{Start: e.Params.Start - e.Whole.Start, End: e.Params.End - e.Whole.Start}
	out := wire.Splice(whole, sp, params)
	var m wire.Message
	if err := wire.Peek(out, &m); err != nil || m.Batch || len(m.Envelopes) != 1 {
		return nil, nil, request.Target{}, fmt.Errorf("not a single request: %v", err)
	}
	e2 := &m.Envelopes[0]
	s := p.s
	t, err := request.Read(e2.Method, e2.Params.Of(out), p.d.consents.ArgNames(s.user, s.agent, s.server))
	return e2, out, t, err
}

// settle records a decided request and returns its verdict: forwarded
// (replace, when set, instead of the message) once its record is durable,
// or denied with the reason.
func (p *sessionPolicy) settle(method string, k consent.Kind, id []byte, name string, args callArgs, dec consent.Decision, replace []byte, fo *flowOutcome) relay.Verdict {
	s := p.s
	if dec.Allow && !p.observe && fo != nil && fo.action == config.FlowAsk && !fo.asked {
		return p.askFlow(method, k, id, name, args, dec, replace, fo)
	}
	followRead := k != consent.KindTool && (request.Method(method) == request.ResourcesRead || request.Method(method) == request.PromptsGet) && p.d.guard() != nil
	if followRead && (dec.Allow || p.observe) && !p.canFollowRead() {
		dec = consent.Decision{Reason: fmt.Sprintf("the session has %d reads in flight whose results the data-flow guard must follow: wait for their results", maxReadsTracked)}
	}
	uiRead := p.pinsUIRead(method, name)
	if uiRead && (dec.Allow || p.observe) && !p.canTrackUIRead() {
		dec = consent.Decision{Reason: fmt.Sprintf("the session has %d reads of UI resources in flight whose results must be checked against their pins: wait for their results", maxReadsTracked)}
	}
	c := decided{kind: k, method: method, id: id, name: name, args: args, decision: decisionDeny, consent: dec.Record, reason: dec.Reason}
	if fo != nil {
		c.call, c.flow = fo.call, fo.fields(s.runKey())
	}
	switch {
	case dec.Allow:
		c.decision = decisionAllow
	case p.observe:
		c.decision = decisionObserve
	}
	if k == consent.KindTool {
		p.callCounters.Get(toolDecision{name, c.decision}, func() prometheus.Counter {
			return p.d.metrics.ToolCalls.WithLabelValues(s.serverLabel, metrics.Agent(s.agent), p.d.metrics.Tool(s.serverLabel, name), string(c.decision))
		}).Inc()
	}
	rec := s.decisionRecord(c, string(p.d.conf().Daemon.AuditArguments), p.secretValues())
	if c.decision != decisionDeny {
		// Forward only what is durably recorded (without the audit log,
		// fail closed); the relay holds the request until then and goes
		// on deciding the next ones meanwhile.
		durable, deferred := p.appendDurable(rec)
		rid := append([]byte(nil), id...)
		s.allowed.Add(1)
		if k == consent.KindTool {
			p.d.newCall(s)
		}
		// Per call at debug level only (the audit log has every one); the
		// level is checked first so that a call logged at no level costs
		// no allocation for its attributes.
		if dec.Allow {
			if s.log.Enabled(context.Background(), slog.LevelDebug) {
				s.log.Debug("request allowed", "method", method, "name", name, "consent", dec.Record)
			}
		} else {
			level := slog.LevelDebug
			if p.firstObserved(k, name) {
				level = slog.LevelWarn // once per name and session
			}
			if s.log.Enabled(context.Background(), level) {
				s.log.Log(context.Background(), level, "request would be denied (observe mode: default_decision = \"allow\")", "method", method, "name", name, "reason", dec.Reason)
			}
		}
		if k == consent.KindTool {
			p.mu.Lock()
			p.calls[wire.IDKey(id)] = callStart{tool: name, id: string(id), start: time.Now(), call: c.call}
			p.mu.Unlock()
		} else if followRead {
			p.mu.Lock()
			if p.reads == nil {
				p.reads = map[string]string{}
			}
			if len(p.reads) < maxReadsTracked { // in observe mode, past it, not followed
				p.reads[wire.IDKey(id)] = name // its result is an influence
			}
			p.mu.Unlock()
		}
		if uiRead {
			p.mu.Lock()
			if p.uiReads == nil {
				p.uiReads = map[string]string{}
			}
			if len(p.uiReads) < maxReadsTracked { // in observe mode, past it, forwarded unchecked
				p.uiReads[wire.IDKey(id)] = name // its result is checked against the pin
			}
			p.mu.Unlock()
		}
		return relay.Verdict{Replace: replace, Hold: durable, Deferred: deferred, HoldFailed: func(err error) []byte {
			return p.unrecorded(method, k, rid, err)
		}}
	}
	if err := <-p.appendAfterDeferred(rec); err != nil {
		s.log.Error("denied request not recorded in the audit log", "method", method, "err", err)
	}
	s.denied.Add(1)
	text := fmt.Sprintf("mcpcage denied %s %q of server %s for agent %s (user %s): %s.", method, name, s.server, s.agent, s.user, dec.Reason)
	flowDenied := fo != nil && fo.action != "" && strings.HasPrefix(dec.Reason, flowReasonPrefix)
	switch {
	case flowDenied && c.call != "":
		text += " The data-flow guard refused it; `mcpcage why " + c.call + "` shows what the agent had received."
	case flowDenied:
	case p.heldBack(k, name) == "" && !strings.Contains(dec.Reason, "mcpcage approve"):
		// A grant would allow it (not one held back: beyond the ceiling, a
		// pin quarantine, which says its own command, or a suspect tool).
		if p.d.conf().Daemon.ConsentsBy == config.ConsentsByAdmin {
			text += " An administrator can allow it (consents_by = \"admin\"): sudo " + p.grantCommand(k, name) + " --user " + shellQuote(s.user)
		} else {
			text += " To allow it, run: " + p.grantCommand(k, name)
		}
	}
	s.log.Warn("request denied", "method", method, "name", name, "reason", dec.Reason)
	return p.denyReply(id, k, text, dec.Reason)
}

// unrecorded answers an allowed request whose record could not be made
// durable: it was not forwarded.
func (p *sessionPolicy) unrecorded(method string, k consent.Kind, id []byte, err error) []byte {
	s := p.s
	s.allowed.Add(-1)
	s.denied.Add(1)
	if k == consent.KindTool {
		p.takeCall(id)
	}
	p.takeRead(id)
	p.takeUIRead(id)
	s.log.Error("request not forwarded: its audit record could not be written", "method", method, "err", err)
	text := fmt.Sprintf("mcpcage could not record this %s in its audit log, so it was not forwarded (%v). An administrator must repair the audit log: see `mcpcage status`.", method, err)
	return p.denyReply(id, k, text, "audit log unavailable").Reply
}

// consentKind maps a request target onto the consent store's kinds.
func consentKind(k request.TargetKind) consent.Kind {
	switch k {
	case request.Resource:
		return consent.KindResource
	case request.Prompt:
		return consent.KindPrompt
	}
	return consent.KindTool
}

// refuse turns away a message no decision can be made on (ambiguous,
// malformed, or a decided method sent as a notification): a request gets
// a JSON-RPC error, a notification is dropped, and either way the audit
// log says why.
func (p *sessionPolicy) refuse(e *wire.Envelope, msg []byte, code int, reason string) relay.Verdict {
	s := p.s
	r := refusal{dir: relay.ClientToServer, method: e.Method, kind: e.Kind.String(), reason: reason}
	if e.Kind == wire.KindRequest {
		r.id = e.ID.Of(msg)
	}
	p.d.audit.AppendAsync(s.messageRefusedRecord(r))
	s.denied.Add(1)
	s.log.Warn("message refused", "method", e.Method, "kind", e.Kind.String(), "reason", reason)
	v := relay.Verdict{Deny: true, Reason: reason}
	if e.Kind == wire.KindRequest {
		v.Reply = wire.ErrorResponse(e.ID.Of(msg), code, "mcpcage refused this "+e.Method+": "+reason, nil)
	}
	return v
}

func (p *sessionPolicy) denyReply(id []byte, k consent.Kind, text, reason string) relay.Verdict {
	var reply []byte
	if k == consent.KindTool {
		era := relay.EraUnknown
		if p.s.relay != nil {
			era = p.s.relay.Claims().Era
		}
		reply = toolError(id, text, era)
	} else {
		reply = wire.ErrorResponse(id, wire.CodeDenied, text, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: reason})
	}
	return relay.Verdict{Deny: true, Reply: reply, Reason: reason}
}

// toolError is a CallToolResult with isError: the model sees the reason.
// In the stateless era (2026-07-28) every result carries resultType.
func toolError(id []byte, text string, era relay.Era) []byte {
	t, _ := json.Marshal(text)
	b := []byte(`{"jsonrpc":"2.0","id":`)
	b = append(b, id...)
	b = append(b, `,"result":{`...)
	if era == relay.EraStateless {
		b = append(b, `"resultType":"complete",`...)
	}
	b = append(b, `"content":[{"type":"text","text":`...)
	b = append(b, t...)
	return append(b, "}],\"isError\":true}}\n"...)
}

// FromServer filters lists to what the agent may use, and makes sure the
// client is told when that changes.
func (p *sessionPolicy) FromServer(e *wire.Envelope, msg []byte, method string) relay.Verdict {
	if e.Kind == wire.KindNotification {
		if why := p.inputRequests(nil, e.Params.Of(msg)); why != "" {
			return relay.Verdict{Deny: true, Reason: why}
		}
		// What it says (a log line, a progress or task status message)
		// may reach the model like a result: scanned, recorded, dropped
		// when suspect.
		if params := e.Params.Of(msg); len(params) > 0 {
			if why := p.passingInfluence(flow.Notification, e.Method, "", params); why != "" {
				p.d.audit.AppendAsync(p.s.messageRefusedRecord(refusal{dir: relay.ServerToClient, method: e.Method, kind: "notification", reason: why}))
				p.s.denied.Add(1)
				return relay.Verdict{Deny: true, Reason: why}
			}
		}
		if e.Method == methodListenAcked {
			return p.acknowledged(e, msg)
		}
	}
	if e.Kind == wire.KindResponse && request.Method(method) == request.SubscriptionsListen {
		p.listens.closed(e.ID.Of(msg)) // the server ended the stream
	}
	var uiURI string // a read of a UI resource: its result is checked against the pin
	if e.Kind == wire.KindResponse && request.Method(method) == request.ResourcesRead {
		uiURI, _ = p.takeUIRead(e.ID.Of(msg)) // an error answers it too
	}
	if e.Kind == wire.KindRequest {
		return p.serverRequest(e, msg)
	}
	if e.Kind == wire.KindResponse && e.Result.Empty() {
		if v, decided := p.urlElicitationError(e, msg); decided && v.Replace != nil {
			return v
		}
		if v, withheld := p.errorInfluence(e, msg, method); withheld {
			return v
		}
	}
	if e.Kind != wire.KindResponse || e.Result.Empty() {
		return relay.Verdict{}
	}
	whole := e.Whole.Of(msg)
	resultSpan := wire.Span{Start: e.Result.Start - e.Whole.Start, End: e.Result.End - e.Whole.Start}
	result := resultSpan.Of(whole)
	if why := p.inputRequests(e.ID.Of(msg), result); why != "" {
		if request.Method(method) == request.ToolsCall {
			p.recordResult(e, msg, result)
		}
		return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
	}
	var newResult []byte
	var refused string
	switch request.Method(method) {
	case request.ToolsCall:
		c, ok := p.recordResult(e, msg, result)
		if !ok {
			// An answer to no call this policy let through (the relay
			// drops those it can tell; found by a red-team helper: one
			// reached the client unscanned): the server's words all
			// the same, scanned as any reply.
			if why := p.passingInfluence(flow.Reply, method, "", result); why != "" {
				return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
			}
			return relay.Verdict{}
		}
		if why := p.noteTask(result, c.tool); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
		in, suspects := p.influence(flow.ToolResult, c.tool, c.call, result)
		if why := p.suspect(in, c.tool, suspects); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
		return relay.Verdict{}
	case request.TasksResult:
		// A task-augmented tools/call was answered with the task's handle
		// only; its result comes here: scanned, fingerprinted and
		// withheld when suspect, like any tool's result.
		tool := p.taskTool(e.ID.Of(msg))
		name := tool
		if name == "" {
			name = method // a task mcpcage did not see created (or past maxTasks)
		}
		in, suspects := p.influence(flow.ToolResult, name, "", result)
		if why := p.suspect(in, tool, suspects); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
		return relay.Verdict{}
	case request.TasksGet, request.TasksList, request.TasksCancel:
		// Tasks' status messages, the server's words; the task's tool is
		// the one of the task the client asked about (tasks/list: none).
		tool := p.taskTool(e.ID.Of(msg))
		if why := p.passingInfluence(flow.TaskStatus, cmp.Or(tool, method), tool, result); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
		return relay.Verdict{}
	case request.ResourcesRead, request.PromptsGet:
		if uiURI != "" {
			if why := p.checkUIResource(uiURI, result); why != "" {
				p.takeRead(e.ID.Of(msg)) // not shown: no influence
				p.s.denied.Add(1)
				return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
			}
		}
		if name, ok := p.takeRead(e.ID.Of(msg)); ok {
			in, suspects := p.influence(readFlowKind(request.Method(method)), name, "", result)
			if why := p.suspect(in, "", suspects); why != "" {
				return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
			}
		}
		return relay.Verdict{}
	case request.ToolsList:
		newResult, refused = p.filterList(result, "tools", "name", consent.KindTool)
	case request.PromptsList:
		newResult, refused = p.filterList(result, "prompts", "name", consent.KindPrompt)
	case request.ResourcesList:
		newResult, refused = p.filterList(result, "resources", "uri", consent.KindResource)
	case request.Initialize, request.ServerDiscover:
		newResult = advertiseListChanged(result)
		// Changed instructions are held back, as a changed tool is.
		cur := result
		if newResult != nil {
			cur = newResult
		}
		held, why := p.checkInstructions(cur)
		if held != nil {
			newResult = held
		}
		refused = why
		// Its instructions are for the model: scanned, recorded.
		in, suspects := p.influence(flow.ServerInfo, method, "", result)
		p.suspect(in, "", suspects)
	case request.CompletionComplete:
		// Completion values can be the server's data: they taint.
		in, suspects := p.influence(flow.Completion, method, "", result)
		if why := p.suspect(in, "", suspects); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
	case request.ResourcesTemplatesList:
		in, suspects := p.influence(flow.ResourceTemplates, method, "", result)
		if why := p.suspect(in, "", suspects); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
	default:
		// Any other result (ping, logging/setLevel, a subscription, a
		// method mcpcage does not know) should carry nothing, but what
		// it carries reaches the client like any answer: scanned.
		if why := p.passingInfluence(flow.Reply, method, "", result); why != "" {
			return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, why)}
		}
	}
	if refused != "" {
		s := p.s
		s.denied.Add(1)
		s.log.Warn("list refused", "request", method, "reason", refused)
		p.d.audit.AppendAsync(s.messageRefusedRecord(refusal{dir: relay.ServerToClient, method: method, kind: "response", id: append(json.RawMessage(nil), e.ID.Of(msg)...), reason: refused}))
		return relay.Verdict{Replace: refusedResult(e.ID.Of(msg), method, refused)}
	}
	if newResult == nil {
		return relay.Verdict{}
	}
	return relay.Verdict{Replace: wire.Splice(whole, resultSpan, newResult)}
}

// filterList keeps the items of result[key] the agent may use; the rest of
// the result (nextCursor...) stays byte for byte. nil: nothing to change.
// A result whose list member parsers could read differently ("tools" and
// "Tools": Go clients take the last that matches in any case) is refused
// (refused says why), never forwarded unfiltered.
func (p *sessionPolicy) filterList(result []byte, key, field string, k consent.Kind) (_ []byte, refused string) {
	if len(result) == 0 || result[0] != '{' {
		return nil, ""
	}
	members, err := wire.Object(result, []string{key})
	if err != nil {
		return nil, "a list result that clients could read differently: " + err.Error()
	}
	sp, ok := members[key]
	if !ok {
		return nil, ""
	}
	arr := sp.Of(result)
	items, ok := wire.Elements(arr)
	if !ok {
		return nil, fmt.Sprintf("the result's %q is not an array", key)
	}
	now := time.Now()
	s := p.s
	switch k {
	case consent.KindTool:
		defer p.savePins()
		p.listStart()
	case consent.KindResource:
		defer p.saveResourcePins()
	}
	var kept [][]byte
	var shown, hidden []string
	g := p.d.guard()
	var suspects []suspectItem
	for _, it := range items {
		item := it.Of(arr)
		// Read the name as the decision on a call would; an item that
		// clients could read differently is never shown.
		name, readable := listItemName(item, field)
		quarantined := readable && k == consent.KindTool && p.checkPin(name, item)
		quarantined = quarantined || readable && k == consent.KindResource && p.checkListedUI(name, item)
		if g != nil && readable {
			if ms := itemSuspects(item); len(ms) > 0 {
				suspects = append(suspects, suspectItem{name, ms})
				quarantined = quarantined || p.srv.Suspect() != config.SuspectLog // the agent is not shown it
			}
			quarantined = quarantined || (k == consent.KindTool && p.suspectReason(name) != "") // kept from the session once suspect
		}
		// In ask mode the agent sees what it may ask for: the user decides
		// on the call.
		allowed := readable && !quarantined && !p.ceiling(k, name) && (p.ask || p.d.consents.Visible(s.user, s.peer.UID, s.agent, s.server, s.id, p.srv.Definition, k, name, now))
		if allowed || p.observe {
			kept = append(kept, item)
			shown = append(shown, name)
		} else {
			hidden = append(hidden, name)
		}
	}
	var filtered []byte
	if len(hidden) > 0 {
		out := []byte{'['}
		for i, it := range kept {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, it...)
		}
		out = append(out, ']')
		filtered = wire.Splice(result, sp, out)
	}
	// A resource list taints the run (flow.Kind.Listing) with the items
	// the agent is shown, not with those held back, and one that shows
	// nothing (and held back nothing suspect) is no influence; the other
	// lists are scanned whole, suspect items held back included.
	if g != nil && (k != consent.KindResource || len(kept) > 0 || len(suspects) > 0) {
		shownResult := result
		if filtered != nil && k == consent.KindResource {
			shownResult = filtered
		}
		in, _ := p.influence(listKinds[k], key+"/list", "", shownResult)
		for _, si := range suspects {
			tool := ""
			if k == consent.KindTool {
				tool = si.name
			}
			p.suspect(in, tool, si.matches)
		}
	}
	// Counts, and the first names (a server chooses how many there are);
	// a list the session recorded already is not recorded whole again
	// (listRecords).
	how, digest, firstCounted := s.lists.admit(k, shown, hidden)
	switch how {
	case listCounted:
		if firstCounted {
			s.log.Warn("the server showed more different lists than a session records: the rest are counted (session.end's lists_unrecorded)", "max", maxListRecords)
		}
		s.log.Debug("list shown to the agent, not recorded", "list", key, "shown", len(shown), "hidden", len(hidden), "list_digest", digest)
	case listShownAgain:
		s.log.Info("list shown to the agent again", "list", key, "shown", len(shown), "hidden", len(hidden), "list_digest", digest)
		p.d.audit.AppendAsync(s.listAgainRecord(k, digest))
	default:
		s.log.Info("list shown to the agent", "list", key, "shown", len(shown), "hidden", len(hidden), "hidden_names", logbound.List(hidden))
		p.d.audit.AppendAsync(s.listRecord(k, shown, hidden, digest))
	}
	return filtered, ""
}

// listItemName reads the name (or URI) of one list item exactly, the way
// package request reads a call; ok is false for an item that is not an
// object, lacks the field, or is ambiguous across parsers.
func listItemName(item []byte, field string) (string, bool) {
	if len(item) == 0 || item[0] != '{' {
		return "", false
	}
	members, err := wire.Object(item, []string{field})
	if err != nil {
		return "", false
	}
	sp, ok := members[field]
	if !ok {
		return "", false
	}
	name, err := wire.String(sp.Of(item))
	return name, err == nil && name != ""
}

// advertiseListChanged sets capabilities.tools.listChanged in an
// initialize or server/discover result, so the client listens for the
// notifications the daemon sends when consents change.
func advertiseListChanged(result []byte) []byte {
	capsAt, ok := wire.Member(result, "capabilities")
	if !ok || capsAt.End-capsAt.Start > maxCapabilitiesBytes {
		return nil // none, or more than a server declares: left as it is
	}
	var caps map[string]json.RawMessage
	if json.Unmarshal(capsAt.Of(result), &caps) != nil || caps == nil {
		return nil
	}
	var tools map[string]json.RawMessage
	if json.Unmarshal(caps["tools"], &tools) != nil || tools == nil {
		return nil // a server without tools: nothing to announce
	}
	if string(tools["listChanged"]) == "true" {
		return nil
	}
	tools["listChanged"] = json.RawMessage("true")
	caps["tools"], _ = json.Marshal(tools)
	newCaps, _ := json.Marshal(caps)
	return wire.Splice(result, capsAt, newCaps)
}

// maxCapabilitiesBytes bounds the capabilities advertiseListChanged
// decodes (a server's, which may be hostile: a map of millions of
// members would cost the daemon hundreds of MiB).
const maxCapabilitiesBytes = 64 << 10

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// takeCall removes and returns the forwarded tools/call with this raw id.
func (p *sessionPolicy) takeCall(rawID []byte) (callStart, bool) {
	key := wire.IDKey(rawID)
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.calls[key]
	delete(p.calls, key)
	return c, ok
}

// canFollowRead reports whether another read's result can be followed
// (bounded: a server that never answers cannot grow the table).
func (p *sessionPolicy) canFollowRead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reads) < maxReadsTracked
}

// pinsUIRead says whether a request of method for name is a read of a
// UI resource whose result is checked against its pin.
func (p *sessionPolicy) pinsUIRead(method, name string) bool {
	return request.Method(method) == request.ResourcesRead && pins.IsUIResource(name) && p.d.pins != nil && p.srv.Pins() != config.PinOff
}

// canTrackUIRead says whether one more read of a UI resource can be
// followed to its result.
func (p *sessionPolicy) canTrackUIRead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.uiReads) < maxReadsTracked
}

// takeUIRead removes and returns the URI of the forwarded read of a UI
// resource with this raw id.
func (p *sessionPolicy) takeUIRead(rawID []byte) (string, bool) {
	return p.takeFrom(func() map[string]string { return p.uiReads }, rawID)
}

// takeFrom removes and returns the entry for this raw id of the map of
// p's that reads returns (read under p.mu: it is made when first used).
func (p *sessionPolicy) takeFrom(reads func() map[string]string, rawID []byte) (string, bool) {
	key := wire.IDKey(rawID)
	p.mu.Lock()
	defer p.mu.Unlock()
	m := reads()
	v, ok := m[key]
	delete(m, key)
	return v, ok
}

// takeRead removes and returns the name of the forwarded prompts/get or
// resources/read with this raw id (tracked with the data-flow guard on).
func (p *sessionPolicy) takeRead(rawID []byte) (string, bool) {
	return p.takeFrom(func() map[string]string { return p.reads }, rawID)
}

// recordResult logs a tools/call response: size, isError, latency. It
// returns the call (false: not a forwarded call).
func (p *sessionPolicy) recordResult(e *wire.Envelope, msg, result []byte) (callStart, bool) {
	c, ok := p.takeCall(e.ID.Of(msg))
	if !ok {
		return c, false
	}
	failpointPanic("result", c.tool)
	lat := time.Since(c.start)
	s := p.s
	p.d.newCall(s) // the call ended: later opens are not its
	p.callLatency.Get(c.tool, func() prometheus.Observer {
		return p.d.metrics.ToolCallDuration.WithLabelValues(s.serverLabel, p.d.metrics.Tool(s.serverLabel, c.tool))
	}).Observe(lat.Seconds())
	rec := s.toolResultRecord(c, resultIsError(result), len(result), lat)
	p.mu.Lock()
	p.results = append(p.results, rec)
	p.mu.Unlock()
	return c, true
}

// resultIsError says whether a tools/call result is an error result: its
// top-level isError member is the literal true, read as the client's
// JSON parser reads it (the name matched exactly, the last of duplicate
// members). Anything else is recorded as not an error. One scan of the
// result, which the relay already checked is valid JSON, and no decoding:
// results can be many megabytes.
func resultIsError(result []byte) bool {
	sp, ok := wire.Member(result, "isError")
	return ok && string(sp.Of(result)) == "true"
}

// afterServerMessage writes the result records of the message just dealt
// with (relay.Options.AfterServerMessage). A result's record is an
// observation (the call's own record was durable before the server saw
// it): writing it after the client has the result takes the encoding and
// the write off the response's path. Its time is when it is written,
// a moment after the client has the result.
func (p *sessionPolicy) afterServerMessage() {
	p.mu.Lock()
	recs := p.results
	p.results = nil
	p.mu.Unlock()
	if len(recs) > 0 {
		p.d.audit.AppendNowAll(recs...)
	}
}

// acknowledged makes a stream's acknowledgement include the tool list
// changes the daemon itself will send on it.
func (p *sessionPolicy) acknowledged(e *wire.Envelope, msg []byte) relay.Verdict {
	params := p.listens.acknowledge(e.Params.Of(msg))
	if params == nil {
		return relay.Verdict{}
	}
	whole := e.Whole.Of(msg)
	sp := wire.Span{Start: e.Params.Start - e.Whole.Start, End: e.Params.End - e.Whole.Start}
	return relay.Verdict{Replace: wire.Splice(whole, sp, params)}
}

// Cancelled forgets a tools/call the client cancelled (no result will
// come) and records the cancellation.
func (p *sessionPolicy) Cancelled(d relay.Direction, rawID []byte) {
	if d != relay.ClientToServer {
		return
	}
	p.listens.closed(rawID) // a cancelled subscriptions/listen ends its stream
	p.takeRead(rawID)
	p.takeUIRead(rawID)
	p.mu.Lock()
	if q, ok := p.questions[wire.IDKey(rawID)]; ok {
		close(q) // a parked request: its question ends
		delete(p.questions, wire.IDKey(rawID))
	}
	p.mu.Unlock()
	c, ok := p.takeCall(rawID)
	if !ok {
		return
	}
	lat := time.Since(c.start)
	p.d.audit.AppendAsync(p.s.toolCancelledRecord(c, lat))
}

// appendDurable records a decided request. While the relay defers
// (FromClientDeferred) the record waits for Flush, with the others the
// relay decides before it forwards them: deferred reports that. A
// session with no other call in flight has nothing to read and decide
// while the record syncs, so it commits the record on its own goroutine
// (audit.Log.AppendDurableNow); one with calls in flight queues it, so
// the relay goes on deciding the next ones and their records share the
// sync.
func (p *sessionPolicy) appendDurable(rec audit.Entry) (durable <-chan error, deferred bool) {
	p.mu.Lock()
	if p.deferring {
		durable = p.deferred.Add(rec)
		p.mu.Unlock()
		return durable, true
	}
	behind := p.deferred.Len() > 0
	alone := len(p.calls) == 0
	p.mu.Unlock()
	if behind {
		return p.appendAfterDeferred(rec), false
	}
	if alone {
		return p.d.audit.AppendDurableNow(rec), false
	}
	return p.d.audit.AppendDurable(rec), false
}

// FromClientDeferred is FromClient leaving the records of allowed
// requests to Flush (relay.Deferrer). Only in "batch" mode, where a
// record is durable once written: in "always" mode the writer's group
// commit already shares one write and one sync among the records
// waiting. Never when deciding may ask the user in the client: the
// question is a write to the client, which blocks while the client does
// not read, and the requests decided before would wait behind it.
func (p *sessionPolicy) FromClientDeferred(e *wire.Envelope, msg []byte) relay.Verdict {
	if p.d.audit.Sync() != audit.SyncBatch || p.mayAsk() {
		return p.FromClient(e, msg)
	}
	p.mu.Lock()
	p.deferring = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.deferring = false
		p.mu.Unlock()
	}()
	return p.FromClient(e, msg)
}

// mayAsk reports whether deciding a request may put a question to the
// user in the client: ask mode, or a data-flow rule that asks.
func (p *sessionPolicy) mayAsk() bool {
	return p.ask || slices.ContainsFunc(p.d.conf().Flows, func(f config.Flow) bool { return f.Action == config.FlowAsk })
}

// appendAfterDeferred appends rec durably after the records deferred
// before it, with them (one write in "batch" mode): the log keeps the
// order of the decisions.
func (p *sessionPolicy) appendAfterDeferred(rec audit.Entry) <-chan error {
	p.mu.Lock()
	durable := p.deferred.Add(rec)
	p.mu.Unlock()
	p.Flush()
	return durable
}

// Flush writes the deferred records, with one write (relay.Deferrer).
func (p *sessionPolicy) Flush() {
	p.mu.Lock()
	d := p.deferred
	p.deferred = audit.Deferred{}
	p.mu.Unlock()
	p.d.audit.CommitDurable(&d)
}
