package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Ask mode (default_decision = "ask"): a request no consent covers is put
// to the user. The initialize era asks with an elicitation/create of the
// daemon's own (the call is parked meanwhile); the 2026-07-28 era answers
// the call with an input_required result whose requestState is sealed,
// and the client's retry carries the answer. An answer becomes a consent
// record (via "prompt"); a request nobody could be asked about, or that
// nobody answered in time, is denied and kept pending for mcpcage approve.

// consentInputKey names mcpcage's input request in an input_required
// result.
const consentInputKey = "mcpcage-consent"

// Results of a question, for mcpcage_consent_prompts_total.
const (
	promptAllowed   = "allowed"
	promptDenied    = "denied"
	promptDismissed = "dismissed"
	promptTimeout   = "timeout"
	promptNotAsked  = "not_asked"
	promptAsked     = "asked" // 2026-07-28: the question went out with the result
)

// Forms of a consent.prompt record.
const (
	askElicitation   = "elicitation"    // the daemon's own elicitation/create (initialize era)
	askInputRequired = "input_required" // an input_required result (2026-07-28 era)
	askPending       = "pending"        // nobody was asked in the client: kept for mcpcage approve
	askCLI           = "cli"            // answered with mcpcage approve or deny
)

// asked is one question: what it is about.
type asked struct {
	method string
	kind   consent.Kind
	id     []byte // the request's raw id
	name   string
	args   callArgs
	pin    string
	target ask.Target
	digest string // ask.RequestDigest of the request (set by askUser)
	flow   *flowOutcome
}

// anyScript reports whether the session's agent is a bare interpreter
// or shell, which any script of the user's could be: an answer for it
// covers no more than the session.
func (p *sessionPolicy) anyScript() bool { return identity.AnyScript(p.s.agent, p.d.agentRules()) }

// askable reports whether a denied request may be put to the user: ask
// mode is on and the request is not held back (heldBack).
func (p *sessionPolicy) askable(k consent.Kind, name string) bool {
	return p.ask && p.heldBack(k, name) == ""
}

// heldBack says why an answer allowing a request could not be kept ("" when
// it could): the request is beyond the admin ceiling, or it is a tool
// held back from the session (a pin quarantine, or a suspect tool under
// on_suspect = "quarantine-tool"), which an answer would not free but
// would leave a consent behind for the tool's later sessions.
func (p *sessionPolicy) heldBack(k consent.Kind, name string) string {
	switch {
	case p.ceiling(k, name):
		return "the administrator's tools_allow / tools_deny leave it out"
	case k != consent.KindTool:
		return ""
	}
	if why := p.quarantineReason(name); why != "" {
		return why
	}
	return p.suspectReason(name)
}

// heldBackReason says why askable refuses a request.
func (p *sessionPolicy) heldBackReason(k consent.Kind, name string) string {
	if why := p.heldBack(k, name); why != "" {
		return why
	}
	return "ask mode is off for this session"
}

// pinOf is the digest of the definition of tool name the session was
// shown (else the approved pin; "" when neither is known).
func (p *sessionPolicy) pinOf(k consent.Kind, name string) string {
	if k != consent.KindTool {
		return ""
	}
	p.mu.Lock()
	def, listed := p.defs[name]
	p.mu.Unlock()
	if listed && def != unreadableDef {
		return def
	}
	if p.d.pins != nil {
		if pin, ok := p.d.pins.Get(p.s.pinKey, name); ok {
			return pin.Approved.Digest
		}
	}
	return ""
}

// askUser decides a request no consent covers in ask mode.
func (p *sessionPolicy) askUser(e *wire.Envelope, msg []byte, q asked, dec consent.Decision) relay.Verdict {
	s, d := p.s, p.d
	q.id = append([]byte(nil), q.id...) // the relay reuses its buffer; a parked request outlives it
	now := time.Now()
	if until := d.book.Refused(q.target, now); !until.IsZero() {
		dec.Reason = fmt.Sprintf("%s denied it when asked; mcpcage will not ask again before %s", s.user, until.Local().Format("2006-01-02 15:04"))
		return p.settle(e.Method, q.kind, q.id, q.name, q.args, dec, nil, q.flow)
	}
	if why := p.staleDefinition(); why != "" {
		// No answer could be kept (sameDefinition): nobody is asked.
		dec.Reason += "; the user is not asked because " + why
		return p.settle(e.Method, q.kind, q.id, q.name, q.args, dec, nil, q.flow)
	}
	params := e.Params.Of(msg)
	stateless := s.relay.Claims().Era == relay.EraStateless
	q.digest = q.args.requestDigest(s.digests, e.Method, string(q.kind), q.name)
	args, unshowable := p.questionArguments(q, params)
	if unshowable != "" {
		// Nobody can approve what nobody can be shown: refused, as
		// without ask mode.
		dec.Reason += "; the user is not asked because " + unshowable
		return p.settle(e.Method, q.kind, q.id, q.name, q.args, dec, nil, q.flow)
	}
	argsFit := len(args) <= ask.MaxArguments
	var why string
	switch {
	case q.kind == consent.KindTool && q.pin == "" && p.d.pins != nil && p.srv.Pins() != config.PinOff:
		why = "mcpcage had not seen this tool's definition in a tools/list result yet, so it cannot say which definition the user would allow"
	case !argsFit:
		why = fmt.Sprintf("its arguments are too long to show in a question (over %d bytes); `mcpcage pending --json` shows them", ask.MaxArguments)
	case s.relay.InBatch():
		why = "the request came inside a JSON-RPC batch, which cannot wait for an answer"
	case stateless && !requestDeclaresElicitation(params):
		why = "the client's request did not declare that it can show a question (elicitation)"
	case !stateless && !s.relay.Claims().FormElicitation:
		why = "the client did not declare that it can show a question (elicitation)"
	default:
		why = s.limiter.Take(d.conf().Daemon.AskPerMinute, now)
	}
	if why != "" {
		return p.keepPending(e.Method, q, why)
	}
	question := p.question(q, args)
	if stateless {
		s.limiter.Done() // nothing waits: the client retries with the answer
		st := d.sealer.Seal(ask.State{Session: s.id, User: s.user, Agent: s.agent, Server: s.server, Method: e.Method,
			Digest: q.digest, Pin: q.pin, Key: consentInputKey,
			Expires: now.Add(time.Duration(d.conf().Daemon.AskTimeout)).UnixMilli()})
		d.metrics.ConsentPrompts.WithLabelValues(promptAsked).Inc()
		d.audit.AppendAsync(s.consentPromptRecord(q, askInputRequired, promptAsked, "", "", ""))
		s.log.Info("asked the user in the client (input_required)", "method", e.Method, "name", q.name)
		return relay.Verdict{Deny: true, Reason: "asking the user", Reply: inputRequiredResult(q.id, question.Elicitation(), st)}
	}
	return p.parkForAnswer(e.Method, q, question)
}

// questionArguments renders a request's name and arguments for the user,
// exactly: unshowable says why they cannot be (a value that is a secret
// or holds one, a number servers could read otherwise than it would be
// shown, a name or arguments too long), and then nobody may approve the
// request. params, when set, are the request's (for the numbers' text).
func (p *sessionPolicy) questionArguments(q asked, params []byte) (args, unshowable string) {
	if len(q.name) > ask.MaxName {
		return "", fmt.Sprintf("its name is longer than %d bytes", ask.MaxName)
	}
	if why := q.args.unreadReason(); why != "" {
		return "", why // nobody can be shown what mcpcage did not read
	}
	if q.args.values == nil {
		return "", ""
	}
	shown, redacted := audit.ValuesRedacted(q.args.values, p.secretValues())
	if redacted {
		return "", "its arguments carry a secret or a credential-shaped value, which a question must not show"
	}
	if members, err := wire.Object(params, []string{"arguments"}); err == nil && params != nil {
		if sp, ok := members["arguments"]; ok && !ask.ExactNumbers(sp.Of(params)) {
			return "", "its arguments carry a number that servers could read otherwise than mcpcage would show it"
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "&&" and ">" shown as they are
	if err := enc.Encode(shown); err != nil {
		return "", "its arguments cannot be shown"
	}
	args = strings.TrimSuffix(b.String(), "\n")
	if len(args) > maxPendingArguments {
		return "", fmt.Sprintf("its arguments are longer than %d bytes", maxPendingArguments)
	}
	return args, ""
}

// question builds what the user is shown.
func (p *sessionPolicy) question(q asked, args string) ask.Question {
	s := p.s
	return ask.Question{Agent: s.agent, User: s.user, Server: s.server, Method: q.method, Kind: string(q.kind), Name: q.name,
		NoDuration:  p.anyScript(),
		Annotations: p.annotations(q), Arguments: args, Code: s.code, For: time.Duration(p.d.conf().Daemon.AskDuration).String(),
		Flow: q.flowWarning()}
}

// flowWarning is the data-flow guard's warning a question about q shows
// ("" when no [[flow]] rule asks about it).
func (q asked) flowWarning() string {
	if q.flow == nil || q.flow.action != config.FlowAsk {
		return ""
	}
	return q.flow.reason
}

// annotations are the tool's behaviour hints as the server declared
// them, in mcpcage's own words ("" when none): no text of the server's
// reaches a question that carries the session's code.
func (p *sessionPolicy) annotations(q asked) string {
	if q.kind != consent.KindTool || p.d.pins == nil {
		return ""
	}
	pin, ok := p.d.pins.Get(p.s.pinKey, q.name)
	if !ok {
		return ""
	}
	def := pin.Approved
	if pin.Pending != nil && pin.Pending.Digest == q.pin {
		def = *pin.Pending
	}
	var d struct {
		Annotations map[string]any `json:"annotations"`
	}
	if json.Unmarshal([]byte(def.JSON), &d) != nil {
		return ""
	}
	var out []string
	for _, h := range []struct{ key, yes, no string }{
		{"readOnlyHint", "read-only", "not read-only"}, {"destructiveHint", "destructive", "not destructive"},
		{"idempotentHint", "idempotent", "not idempotent"}, {"openWorldHint", "reaches outside systems", "stays within its own system"},
	} {
		if v, ok := d.Annotations[h.key].(bool); ok {
			out = append(out, map[bool]string{true: h.yes, false: h.no}[v])
		}
	}
	return strings.Join(out, ", ")
}

// requestDeclaresElicitation reads a 2026-07-28 request's declared client
// capabilities (params._meta): can the client show a form question?
func requestDeclaresElicitation(params []byte) bool {
	var p struct {
		Meta struct {
			Caps struct {
				Elicitation json.RawMessage `json:"elicitation"`
			} `json:"io.modelcontextprotocol/clientCapabilities"`
		} `json:"_meta"`
	}
	return json.Unmarshal(params, &p) == nil && relay.FormElicitation(p.Meta.Caps.Elicitation)
}

// inputRequiredResult answers a request with mcpcage's question.
func inputRequiredResult(id []byte, elicitation json.RawMessage, state string) []byte {
	body, _ := json.Marshal(map[string]any{
		"resultType":    "input_required",
		"inputRequests": map[string]any{consentInputKey: map[string]any{"method": "elicitation/create", "params": elicitation}},
		"requestState":  state,
	})
	out := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
	out = append(out, `,"result":`...)
	out = append(out, body...)
	return append(out, "}\n"...)
}

// parkedReply carries the complete response a parked request gets
// instead of being forwarded.
type parkedReply struct{ line []byte }

func (r parkedReply) Error() string { return "answered by mcpcage" }

// parkForAnswer sends the daemon's own question to the client and parks
// the request until the answer (or the timeout) decides it.
func (p *sessionPolicy) parkForAnswer(method string, q asked, question ask.Question) relay.Verdict {
	s, d := p.s, p.d
	id, answer, err := s.relay.Ask("elicitation/create", question.Elicitation())
	if err != nil {
		s.limiter.Done()
		return p.keepPending(method, q, "the question could not be sent: "+err.Error())
	}
	res := make(chan error, 1)
	cancelled := make(chan struct{})
	key := wire.IDKey(q.id)
	p.mu.Lock()
	p.questions[key] = cancelled
	p.mu.Unlock()
	timeout := time.Duration(d.conf().Daemon.AskTimeout)
	s.log.Info("asked the user in the client (elicitation)", "method", method, "name", q.name, "question", id)
	s.relay.Go("question", func() { // a bug there ends the session, not the daemon
		defer s.limiter.Done()
		defer func() {
			p.mu.Lock()
			if p.questions[key] == cancelled { // not a later request that reused the id
				delete(p.questions, key)
			}
			p.mu.Unlock()
		}()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case resp, ok := <-answer:
			if !ok {
				res <- relay.ErrParkEnded
				return
			}
			res <- p.answered(method, q, resp, id)
		case <-t.C:
			s.relay.Forget(id, "nobody answered in "+timeout.String())
			v := p.keepPending(method, q, fmt.Sprintf("nobody answered the question in the client within %s", timeout))
			d.metrics.ConsentPrompts.WithLabelValues(promptTimeout).Inc()
			res <- parkedReply{v.Reply}
		case <-cancelled:
			s.relay.Forget(id, "the client cancelled the request")
			d.audit.AppendAsync(s.consentPromptRecord(q, askElicitation, promptDismissed, "", "", "the client cancelled the request"))
			res <- relay.ErrParkEnded
		case <-s.relay.Done():
			res <- relay.ErrParkEnded
		}
	})
	return relay.Verdict{Deny: false, Park: res, HoldFailed: func(err error) []byte {
		var pr parkedReply
		if errors.As(err, &pr) {
			return pr.line
		}
		return p.denyReply(q.id, q.kind, fmt.Sprintf("mcpcage did not forward %s %q: %v.", method, q.name, err), err.Error()).Reply
	}}
}

// answered turns the client's response to the daemon's question into the
// request's fate: nil forwards it (its record durable), a parkedReply
// answers it.
func (p *sessionPolicy) answered(method string, q asked, resp []byte, questionID string) error {
	failpointPanic("answer", q.name)
	var m wire.Message
	var result []byte
	if wire.Peek(resp, &m) == nil && !m.Batch {
		if e := &m.Envelopes[0]; !e.Error.Empty() {
			// The client could not ask (no handler, an error): keep it.
			v := p.keepPending(method, q, "the client answered the question with an error")
			return parkedReply{v.Reply}
		}
		result = m.Envelopes[0].Result.Of(resp)
	}
	a, outcome := ask.ParseAnswer(result)
	return p.parkedFate(p.applyAnswer(method, q, a, outcome, askElicitation, questionID, nil))
}

// applyAnswer records the user's answer to a question about q and
// decides q again; the verdict forwards q (replace, when set, instead of
// the message) once its record is durable, or answers it.
func (p *sessionPolicy) applyAnswer(method string, q asked, a api.Answer, outcome ask.Outcome, form, questionID string, replace []byte) relay.Verdict {
	s, d := p.s, p.d
	deny := func(result, answer, why string) relay.Verdict {
		d.metrics.ConsentPrompts.WithLabelValues(result).Inc()
		d.audit.AppendAsync(s.consentPromptRecord(q, form, result, answer, "", why))
		return p.settle(method, q.kind, q.id, q.name, q.args, consent.Decision{Reason: why}, nil, q.flow)
	}
	switch outcome {
	case ask.Dismissed:
		return deny(promptDismissed, "", "the user dismissed the question")
	case ask.Unusable:
		return deny(promptDismissed, "", "the client's answer could not be read")
	}
	if a != api.AnswerDeny && !p.askable(q.kind, q.name) {
		// Held back since the question went out (a result of the tool
		// was suspect, its pin changed, the ceiling was lowered): an
		// answer would not free the call, and its consent would outlive
		// the session for the tool's later ones. Not kept.
		return deny(promptDenied, string(a), "the answer was not kept: "+p.heldBackReason(q.kind, q.name))
	}
	if a != api.AnswerDeny {
		beforeAnswerKept()
	}
	rec, err := d.consentFromAnswer(answerGrant{target: q.target, answer: a, session: s.id, onceSession: s.id,
		onceTTL: time.Duration(d.conf().Daemon.AskTimeout), pin: q.pin, digest: q.digest, by: s.user, via: "prompt",
		uid: s.peer.UID, definition: p.srv.Definition})
	if err != nil {
		return deny(promptDenied, string(a), err.Error())
	}
	d.book.Forget(q.target, q.digest, p.srv.Definition)
	if rec == nil {
		return deny(promptDenied, string(a), fmt.Sprintf("%s denied it when asked", s.user))
	}
	if why := p.heldBack(q.kind, q.name); why != "" {
		// Held back between the check above and the store: withdrawn, so
		// that no consent outlives the session for what it holds back.
		failed := d.withdrawConsent(rec, s.user, heldBackWithdrawal)
		return deny(promptDenied, string(a), "the answer was not kept: "+why+failed)
	}
	if rec.Session != "" {
		d.trackSessionConsent(rec.Session, rec.ID)
	}
	d.metrics.ConsentPrompts.WithLabelValues(promptAllowed).Inc()
	d.audit.AppendAsync(s.consentPromptRecord(q, form, promptAllowed, string(a), rec.ID, ""))
	s.log.Info("the user answered a consent question", "name", q.name, "answer", string(a), "consent", rec.ID, "question", questionID)
	if q.flow != nil && q.flow.action == config.FlowAsk {
		q.flow.asked = true // the question carried the data-flow warning
	}
	// Decide again: the new record must cover it, and nothing may have
	// changed meanwhile (a revocation, a quarantine, the ceiling).
	return p.settle(method, q.kind, q.id, q.name, q.args, p.decide(method, q.kind, q.name, q.args, q.pin), replace, q.flow)
}

// parkedFate turns a verdict on a parked request into what the relay
// does with it: nil forwards it (its record durable), a parkedReply
// answers it.
func (p *sessionPolicy) parkedFate(v relay.Verdict) error {
	if v.Deny {
		return parkedReply{v.Reply}
	}
	if v.Deferred {
		// Decided while the client loop defers: its record waits with
		// that loop's, and this goroutine writes them.
		p.Flush()
	}
	if err := <-v.Hold; err != nil {
		return parkedReply{v.HoldFailed(err)}
	}
	return nil
}

// keepPending denies a request nobody could be asked about in the client
// and keeps it for mcpcage approve; the reply says how.
func (p *sessionPolicy) keepPending(method string, q asked, why string) relay.Verdict {
	s, d := p.s, p.d
	args, unshowable := p.questionArguments(q, nil)
	if unshowable != "" {
		return p.settle(method, q.kind, q.id, q.name, q.args, consent.Decision{Reason: "no consent covers it, and the user is not asked because " + unshowable}, nil, q.flow)
	}
	if q.digest == "" {
		q.digest = q.args.requestDigest(s.digests, method, string(q.kind), q.name)
	}
	pend, ok := d.book.Keep(ask.Pending{PendingInfo: api.PendingInfo{Session: s.id, Arguments: args, Why: why, Definition: p.srv.Definition}, Target: q.target,
		UID: s.peer.UID, Account: s.peer.account().uid, Pin: q.pin, Digest: q.digest, PinKey: s.pinKey}, time.Now(), time.Duration(d.conf().Daemon.PendingTTL))
	d.metrics.ConsentPrompts.WithLabelValues(promptNotAsked).Inc()
	reason := fmt.Sprintf("no consent covers it and the user could not be asked (%s)", why)
	if !ok {
		d.audit.AppendAsync(s.consentPromptRecord(q, askPending, promptNotAsked, "", "", why+"; too many requests are pending to keep this one"))
		return p.settle(method, q.kind, q.id, q.name, q.args, consent.Decision{Reason: reason + "; too many requests are pending to keep this one"}, nil, q.flow)
	}
	d.audit.AppendAsync(s.consentPromptRecord(q, askPending, promptNotAsked, "", "", why, "pending", pend.ID))
	if p.d.conf().Daemon.ConsentsBy == config.ConsentsByAdmin {
		reason += fmt.Sprintf("; it is kept as pending request %s: an administrator can allow it with `sudo mcpcage approve %s` (consents_by = \"admin\"), the user can refuse it with `mcpcage deny %s`, and the agent then tries again", pend.ID, pend.ID, pend.ID)
	} else {
		reason += fmt.Sprintf("; it is kept as pending request %s: the user can allow it with `mcpcage approve %s` (this call once; or --session, or --for 8h) or refuse it with `mcpcage deny %s`, and the agent then tries again", pend.ID, pend.ID, pend.ID)
	}
	return p.settle(method, q.kind, q.id, q.name, q.args, consent.Decision{Reason: reason}, nil, q.flow)
}

// staleDefinition says why the session runs a definition of its server
// that is no longer the current one ("" when it is current, or the server
// is the administrator's): an answer given in it is never kept.
func (p *sessionPolicy) staleDefinition() string {
	if !p.srv.Personal {
		return ""
	}
	err := p.d.sameDefinition(p.s.peer.UID, p.s.server, p.srv.Definition)
	switch {
	case errors.Is(err, errServerChanged):
		return fmt.Sprintf("server %s was removed or defined anew since this session started: start the session again (restart the server in the MCP client) to use it as it is now", p.s.server)
	case err != nil:
		return err.Error()
	}
	return ""
}

// maxPendingArguments bounds the arguments a pending request keeps to
// show (the approval binds to the digest of them all).
const maxPendingArguments = 16 << 10

// answerGrant is an answer to turn into a consent.
type answerGrant struct {
	target  ask.Target
	answer  api.Answer
	forDur  time.Duration // overrides ask_duration ("duration", "deny")
	session string        // the session that asked: what "session" covers
	// onceSession, when set, limits "once" to that session too (an
	// answer in the client); an approval out of band may be used by the
	// agent's next session.
	onceSession string
	onceTTL     time.Duration // how long a "once" waits to be used
	pin, digest string        // the tool definition shown, the request allowed ("once")
	by, via     string
	// uid and definition: the delegating user, and the definition of
	// the server its session ran ([config.Server].Definition); the
	// consent is stored only while the server is still defined so.
	uid        uint32
	definition string
	byRoot     bool // the answer is root's (mcpcage approve as root)
}

// consentFromAnswer stores the consent an answer gives (nil for deny,
// which is remembered instead): "once" allows the one request the user
// saw (its digest), within onceTTL; "session" every call of the session;
// "duration" every call for a while.
func (d *Daemon) consentFromAnswer(g answerGrant) (*consent.Record, error) {
	now := time.Now()
	t := g.target
	dur := time.Duration(d.conf().Daemon.AskDuration)
	if g.forDur > 0 {
		dur = g.forDur
	}
	if g.answer == api.AnswerDeny {
		d.book.Refuse(t, now.Add(dur), now)
		return nil, nil
	}
	if err := d.consentForSubordinate(g.uid, g.byRoot); err != nil {
		return nil, err
	}
	r := &consent.Record{User: t.User, UID: int64(g.uid), Agent: t.Agent, Server: t.Server, CreatedBy: g.by, Via: g.via, Pin: g.pin}
	pattern := []string{escapeGlob(t.Name)} // exactly this name
	switch consent.Kind(t.Kind) {
	case consent.KindResource:
		r.Resources = pattern
	case consent.KindPrompt:
		r.Prompts = pattern
	default:
		r.Tools = pattern
	}
	switch g.answer {
	case api.AnswerOnce:
		one := int64(1)
		exp := now.Add(g.onceTTL)
		r.MaxCalls, r.Request, r.Session, r.ExpiresAt = &one, g.digest, g.onceSession, &exp
	case api.AnswerSession:
		r.Session = g.session
	case api.AnswerDuration:
		if identity.AnyScript(t.Agent, d.agentRules()) {
			return nil, fmt.Errorf("agent %s is a bare interpreter or shell, which any script of %s's could be: allow it once or for its session, or grant to its script (mcpcage grant --agent script:...)", t.Agent, t.User)
		}
		exp := now.Add(dur)
		r.ExpiresAt = &exp
	default:
		return nil, fmt.Errorf("unknown answer %q", g.answer)
	}
	bind := func() (string, error) { return g.definition, d.sameDefinition(g.uid, t.Server, g.definition) }
	if err := d.storeConsent(r, g.by, bind); err != nil {
		return nil, err
	}
	d.consentChanged(r.User, r.Agent, r.Server)
	return r, nil
}

// beforeAnswerKept runs between the check that an answer allowing a
// request may be kept and its store: a no-op, but a failpoint of the
// integration tests' build holds it there (failpoint_on.go).
var beforeAnswerKept = func() {}

// escapeGlob makes a pattern that matches exactly name.
func escapeGlob(name string) string {
	var b strings.Builder
	for _, r := range name {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// retried handles a 2026-07-28 request that carries mcpcage's own
// requestState: the client's retry with the user's answer. ok is false
// when the request carries none (nothing to do here).
func (p *sessionPolicy) retried(e *wire.Envelope, msg []byte, q asked) (v relay.Verdict, ok bool) {
	params := e.Params.Of(msg)
	if !bytes.Contains(params, []byte(ask.StatePrefix)) {
		return relay.Verdict{}, false
	}
	members, err := wire.Object(params, []string{"requestState", "inputResponses"})
	if err != nil {
		return relay.Verdict{}, false // request.Read refused it already
	}
	sp, has := members["requestState"]
	if !has {
		return relay.Verdict{}, false
	}
	sealed, err := wire.String(sp.Of(params))
	if err != nil || !strings.HasPrefix(sealed, ask.StatePrefix) {
		return relay.Verdict{}, false // the server's own state
	}
	s, d := p.s, p.d
	now := time.Now()
	refuse := func(why string) (relay.Verdict, bool) {
		d.audit.AppendAsync(s.consentPromptRecord(q, askInputRequired, promptDenied, "", "", why))
		return p.settle(e.Method, q.kind, q.id, q.name, q.args, consent.Decision{Reason: "the consent answer was refused: " + why}, nil, q.flow), true
	}
	st, err := d.sealer.Open(sealed, now)
	if err != nil {
		return refuse(err.Error())
	}
	q.digest = q.args.requestDigest(s.digests, e.Method, string(q.kind), q.name)
	if why := st.Mismatch(ask.State{Session: s.id, User: s.user, Agent: s.agent, Server: s.server, Method: e.Method,
		Digest: q.digest, Pin: q.pin}); why != "" {
		return refuse(why + " (a question answers only the request it was asked about, in its session)")
	}
	if !d.sealer.Use(st, now) {
		return refuse(ask.ErrReused.Error())
	}
	var answer []byte
	if rs, has := members["inputResponses"]; has {
		all := rs.Of(params)
		if resp, err := wire.Object(all, []string{consentInputKey}); err == nil {
			if a, has := resp[consentInputKey]; has {
				answer = a.Of(all)
			}
		}
	}
	stripped, err := withoutOurAnswer(params)
	if err != nil {
		return refuse(err.Error())
	}
	whole := e.Whole.Of(msg)
	replace := wire.Splice(whole, wire.Span{Start: e.Params.Start - e.Whole.Start, End: e.Params.End - e.Whole.Start}, stripped)
	a, outcome := ask.ParseAnswer(answer)
	return p.applyAnswer(e.Method, q, a, outcome, askInputRequired, "", replace), true
}

// withoutOurAnswer returns a retried request's params without mcpcage's
// requestState and its input response: the server never minted them.
// Input responses to the server's own input requests stay.
func withoutOurAnswer(params []byte) ([]byte, error) {
	return rewriteMembers(params, func(name string, value []byte) ([]byte, error) {
		switch name {
		case "requestState":
			return nil, nil
		case "inputResponses":
			rest, err := rewriteMembers(value, func(key string, v []byte) ([]byte, error) {
				if key == consentInputKey {
					return nil, nil
				}
				return v, nil
			})
			if err != nil || string(rest) == "{}" {
				return nil, err
			}
			return rest, nil
		}
		return value, nil
	})
}

// rewriteMembers rebuilds the object obj in its order, each member's
// value replaced by what keep returns (nil drops the member); values kept
// are copied byte for byte. An object parsers could read differently is
// refused.
func rewriteMembers(obj []byte, keep func(name string, value []byte) ([]byte, error)) ([]byte, error) {
	members, err := wire.Object(obj, nil)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return members[names[i]].Start < members[names[j]].Start })
	out := []byte{'{'}
	for _, name := range names {
		v, err := keep(name, members[name].Of(obj))
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		k, _ := json.Marshal(name)
		out = append(append(append(out, k...), ':'), v...)
	}
	return append(out, '}'), nil
}

// consentPromptRecord: a question about q, its form and outcome, the
// answer and the consent it made; extra is pairs of further fields.
func (s *session) consentPromptRecord(q asked, form, outcome, answer, consentID, why string, extra ...string) audit.Record {
	rec := audit.Record{"form": form, "outcome": outcome, "method": q.method, "kind": string(q.kind), "name": q.name,
		"request_id": append(json.RawMessage(nil), q.id...), "args_digest": q.args.digest(s.digests)}
	if q.pin != "" {
		rec["pin"] = q.pin
	}
	if answer != "" {
		rec["answer"] = answer
	}
	if consentID != "" {
		rec["consent"] = consentID
	}
	if why != "" {
		rec["reason"] = why
	}
	for i := 0; i+1 < len(extra); i += 2 {
		rec[extra[i]] = extra[i+1]
	}
	return s.record(api.RecordConsentPrompt, rec)
}

// endSessionConsents revokes the consents given for this session only,
// so they do not stay listed as active.
func (d *Daemon) endSessionConsents(s *session) {
	if s.policy == nil {
		return
	}
	s.policy.mu.Lock()
	ids := s.policy.sessionConsents
	s.policy.sessionConsents, s.policy.consentsEnded = nil, true
	s.policy.mu.Unlock()
	for _, id := range ids {
		r, err := d.consents.Store().Revoke(id, "mcpcaged", "its session ended")
		if err != nil {
			continue // already revoked by the user
		}
		d.audit.AppendAsync(consentRevokeRecord(r, "mcpcaged", "its session ended"))
		d.consents.InvalidateFor(r.User, r.Agent, r.Server)
	}
	if len(ids) > 0 {
		d.updateConsentGauge()
	}
}

// askMode reports whether the server's requests are put to the user.
func askMode(c *config.Config, srv *config.Server) bool { return c.Decision(srv) == config.DecisionAsk }
