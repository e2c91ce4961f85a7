package daemon

import (
	"encoding/json"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/inject"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/sandbox"
)

// The daemon's audit records, one constructor per record type: each
// type's fields are defined here and nowhere else. Kernel events are
// built in kernel.go from the event they describe. The audit package caps
// every value when a record is encoded.

// decision is what the policy did with a decided request.
type decision string

const (
	decisionAllow   decision = "allow"   // a consent covered it
	decisionDeny    decision = "deny"    // refused: not covered, or the administrator's rules forbid it
	decisionObserve decision = "observe" // not covered, forwarded anyway (default_decision = "allow")
)

// sessionFields are the who-and-what fields every session record has.
const sessionFields = 6

// record adds the session's who-and-what fields to a record of type t.
func (s *session) record(t api.RecordType, fields audit.Record) audit.Record {
	r := s.newRecord(t, len(fields))
	for k, v := range fields {
		r[k] = v
	}
	return r
}

// newRecord is a record of type t with the session's who-and-what fields
// and room for n more.
func (s *session) newRecord(t api.RecordType, n int) audit.Record {
	w := s.whoFields()
	r := make(audit.Record, sessionFields+n+4) // + the log's time, seq, prev, hash
	r["type"], r["session"], r["agent"], r["agent_instance"], r["user"], r["server"] = boxed(t), w.id, w.agent, w.instance, w.user, w.server
	return r
}

// The who-and-what fields, named once: the hot records add them in key
// order among their own fields (see hotFields).
const (
	keyAgent         = "agent"
	keyAgentInstance = "agent_instance"
	keyServer        = "server"
	keySession       = "session"
	keyType          = "type"
	keyUser          = "user"
)

// hotFields builds the records of every call (tool.call, tool.result) as
// audit.Fields, a list rather than a map (see audit.Fields), adding the
// fields in key order so that encoding them sorts almost nothing (the
// order is a saving, not a rule: the log sorts whatever it is given).
// head adds the who fields that sort before the record's own fields
// (agent, agent_instance); tail those after them (server, session, then
// type and user around the record's own "tool", when it has one).
type hotFields struct {
	f *audit.Fields
	w *sessionWho
}

func (s *session) hotFields(n int) hotFields {
	return hotFields{f: audit.NewFields(sessionFields + n), w: s.whoFields()}
}

func (h hotFields) head() {
	h.f.Add(keyAgent, h.w.agent)
	h.f.Add(keyAgentInstance, h.w.instance)
}

// tail adds server, session, the tool (when tool is not nil), type and
// user.
func (h hotFields) tail(t api.RecordType, tool any) *audit.Fields {
	h.f.Add(keyServer, h.w.server)
	h.f.Add(keySession, h.w.id)
	if tool != nil {
		h.f.Add("tool", tool)
	}
	h.f.Add(keyType, boxed(t))
	h.f.Add(keyUser, h.w.user)
	return h.f
}

// sessionWho holds the session's who-and-what fields already boxed as
// record values: every record of the session shares them instead of
// allocating its own (two records per call).
type sessionWho struct {
	id, agent, instance, user, server any
}

// whoFields is the session's sessionWho, built on first use (the fields
// never change after the session is set up).
func (s *session) whoFields() *sessionWho {
	s.whoOnce.Do(func() {
		s.who = sessionWho{id: s.id, agent: s.agent, instance: s.instance(), user: s.user, server: s.server}
	})
	return &s.who
}

// boxedStrings are strings that every call's records hold (their types,
// decisions, the decided methods), boxed once as record values: a string
// put in a record otherwise costs an allocation each time.
var boxedStrings = func() map[string]any {
	m := map[string]any{}
	for _, t := range []api.RecordType{api.RecordToolCall, api.RecordToolResult, api.RecordRequest,
		api.RecordRequestDenied, api.RecordInfluence, api.RecordServerRequest} {
		m[string(t)] = string(t)
	}
	for _, d := range []decision{decisionAllow, decisionDeny, decisionObserve} {
		m[string(d)] = string(d)
	}
	for _, r := range []request.Method{request.ToolsCall, request.ResourcesRead, request.ResourcesSubscribe, request.SubscriptionsListen,
		request.ResourcesUnsubscribe, request.PromptsGet, request.CompletionComplete} {
		m[string(r)] = string(r)
	}
	return m
}()

// boxed is s as a record value, shared when it is one of boxedStrings.
func boxed[S ~string](s S) any {
	if v, ok := boxedStrings[string(s)]; ok {
		return v
	}
	return string(s)
}

// delegator is session.start's delegator: the user, and for a subordinate
// uid (/etc/subuid) the owner whose per-user bounds it counted toward.
func (s *session) delegator() map[string]any {
	d := map[string]any{"uid": s.peer.UID, "name": s.user}
	if o := s.peer.Owner; o != nil {
		d["charged_to"] = map[string]any{"uid": o.UID, "name": o.Name}
	}
	return d
}

// sessionRefusedRecord: the shim's parent failed the identity check, so
// no session started.
func sessionRefusedRecord(server, user, reason string) audit.Record {
	return audit.Record{"type": string(api.RecordSessionRefused), "server": server, "user": user, "reason": reason}
}

// sessionStartRecord: who started what, in which sandbox, under which
// enforcement. Nothing runs before it is durable.
func (s *session) sessionStartRecord(ap identity.Process, params sandbox.Params, enforcement map[string]string, def config.Decision) audit.Record {
	srv := s.srv
	return s.record(api.RecordSessionStart, audit.Record{
		"definition":   srv.Definition, // of a user's own server: what its consents are bound to
		"agent_detail": agentDetail(ap),
		"delegator":    s.delegator(),
		"sandbox": map[string]any{"uid": params.UID, "gid": params.GID, "network": srv.Network, "memory": int64(srv.Memory), "pids": srv.Pids,
			"cpus": srv.CPUs, "seccomp": srv.Seccomp, "landlock": params.Landlock != nil, "mounts": mountList(params), "image": srv.Image,
			"egress": srv.Egress, "listen": srv.Listen, "deny_paths": srv.DenyPatterns(), "warm": s.warmStart,
			"deny_scan_incomplete": denyScanIncomplete(params)},
		"enforcement":      enforcement,
		"default_decision": string(def),
		"stdio":            string(s.stdio),
		"server_stdio":     serverStdio(params),
	})
}

// denyScanIncomplete lists the mounts whose deny_paths search was cut
// short (an empty list when none was).
func denyScanIncomplete(p sandbox.Params) []sandbox.IncompleteScan {
	if p.Denied == nil || len(p.Denied.Incomplete) == 0 {
		return []sandbox.IncompleteScan{}
	}
	return p.Denied.Incomplete
}

// agentDetail is what a session.start record says of the agent process.
func agentDetail(ap identity.Process) map[string]any {
	agent := map[string]any{"exe": ap.Exe, "sha256": ap.SHA256, "uid": ap.UID, "pid": ap.PID, "start_time": ap.StartTime, "binding": ap.Binding}
	if ap.Interpreter {
		agent["script"] = ap.Script
	}
	return agent
}

// sessionEndRecord: why the session ended and what it did.
func (s *session) sessionEndRecord(exit api.Exit) audit.Record {
	st := &s.relay.Stats
	repeated, unrecorded := s.lists.counts()
	return s.record(api.RecordSessionEnd, audit.Record{"reason": string(exit.Reason), "exit_code": exit.Code, "error": exit.Error,
		"lists_repeated": repeated, "lists_unrecorded": unrecorded,
		"duration_ms": time.Since(s.start).Milliseconds(), "calls_allowed": s.allowed.Load(), "calls_denied": s.denied.Load(),
		"messages_in": st.Messages[relay.ClientToServer].Load(), "messages_out": st.Messages[relay.ServerToClient].Load(),
		"denied_syscalls": s.deniedSyscalls.Load(), "kernel_events": s.kernelEvents.Load(), "kernel_denied": s.deniedKernel.Load(),
		"file_opens_folded": s.opensFolded, "kernel_records_dropped": s.recordsDropped.Load(), "kernel_events_throttled": s.eventsThrottled})
}

// claimsRecord: what the client says it is (its initialize or first
// stateless request); unverified, kept for the investigator.
func (s *session) claimsRecord(c relay.Claims) audit.Record {
	return s.record(api.RecordSessionClaims, audit.Record{"era": string(c.Era), "protocol_version": c.ProtocolVersion, "client_info": json.RawMessage(orNull(c.ClientInfo))})
}

// refusal describes a message no decision could be made on.
type refusal struct {
	dir    relay.Direction
	method string          // "" when the message could not be read that far
	kind   string          // request, notification, ...; "" when unknown
	id     json.RawMessage // the request's id, nil otherwise
	reason string
}

// messageRefusedRecord: a message was refused unread by any server.
func (s *session) messageRefusedRecord(r refusal) audit.Record {
	rec := audit.Record{"direction": r.dir.String(), "reason": r.reason}
	if r.method != "" {
		rec["method"] = r.method
	}
	if r.kind != "" {
		rec["kind"] = r.kind
	}
	if r.id != nil {
		rec["request_id"] = append(json.RawMessage(nil), r.id...) // the relay reuses its buffer
	}
	return s.record(api.RecordMessageRefused, rec)
}

// decided is one decided request (tools/call, resources/read,
// prompts/get) and what the policy did with it.
type decided struct {
	kind     consent.Kind
	method   string
	id       json.RawMessage
	name     string
	args     callArgs // tools/call arguments
	decision decision
	consent  string         // the record that allowed it
	reason   string         // why it was not allowed
	call     string         // the call's id (tools/call; mcpcage why)
	flow     map[string]any // what the data-flow guard saw and did (nil when it is off)
}

// decisionRecord: tool.call for tools, request or request.denied for
// resources and prompts. Arguments are kept as the administrator's
// audit_arguments says, with secrets redacted; their digest always.
func (s *session) decisionRecord(c decided, argMode string, secrets []string) *audit.Fields {
	t := api.RecordRequest
	switch {
	case c.kind == consent.KindTool:
		t = api.RecordToolCall
	case c.decision == decisionDeny:
		t = api.RecordRequestDenied
	}
	tool := c.kind == consent.KindTool
	rec := s.hotFields(8)
	rec.head()
	f := rec.f
	if tool {
		f.Add("args_digest", c.args.digest(s.digests))
		if a := c.args.recorded(argMode, secrets); a != nil {
			f.Add("arguments", a)
		}
		if c.call != "" {
			f.Add("call", c.call)
		}
	}
	if c.decision == decisionAllow {
		f.Add("consent", c.consent)
	}
	f.Add("decision", boxed(c.decision))
	if c.flow != nil {
		f.Add("flow", c.flow)
	}
	f.Add("method", boxed(c.method))
	if !tool {
		f.Add("name", c.name)
	}
	if c.decision != decisionAllow {
		f.Add("reason", c.reason)
	}
	// The id is copied: the relay reuses its buffer before the record is
	// written.
	f.Add("request_id", append(json.RawMessage(nil), c.id...))
	var name any
	if tool {
		name = c.name
	}
	return rec.tail(t, name)
}

// toolResultRecord: a forwarded tools/call came back.
func (s *session) toolResultRecord(c callStart, isError bool, resultBytes int, latency time.Duration) *audit.Fields {
	rec := s.hotFields(5)
	rec.head()
	rec.f.Add("is_error", isError)
	rec.f.Add("latency_ms", millis(latency))
	rec.f.Add("request_id", json.RawMessage(c.id))
	rec.f.Add("result_bytes", resultBytes)
	return rec.tail(api.RecordToolResult, c.tool)
}

// toolCancelledRecord: the client cancelled a forwarded tools/call; no
// result will be recorded for it.
func (s *session) toolCancelledRecord(c callStart, latency time.Duration) audit.Record {
	return s.record(api.RecordToolCancelled, audit.Record{"tool": c.tool, "request_id": json.RawMessage(c.id), "latency_ms": millis(latency)})
}

// listRecordTypes are the list records by the kind of item listed.
var listRecordTypes = map[consent.Kind]api.RecordType{
	consent.KindTool:     api.RecordToolsList,
	consent.KindResource: api.RecordResourcesList,
	consent.KindPrompt:   api.RecordPromptsList,
}

// listRecord: what a list result showed the agent and what it hid, under
// its digest (listDigest).
func (s *session) listRecord(k consent.Kind, shown, hidden []string, digest string) audit.Record {
	return s.record(listRecordTypes[k], audit.Record{"shown": nonNilStrings(shown), "hidden": nonNilStrings(hidden), "list_digest": digest})
}

// listAgainRecord: a list result showed the agent what the recorded list
// of that digest did, after another list.
func (s *session) listAgainRecord(k consent.Kind, digest string) audit.Record {
	return s.record(listRecordTypes[k], audit.Record{"list_digest": digest, "again": true})
}

// sandboxDeniedRecord: the seccomp profile refused a system call (its
// name, integer arguments only, the caller's host pid, the tools/call
// requests in flight).
func (s *session) sandboxDeniedRecord(syscall string, args map[string]any, pid uint32, calls []string) audit.Record {
	rec := audit.Record{"syscall": syscall, "pid": pid, "action": "EPERM"}
	if args != nil {
		rec["args"] = args
	}
	if len(calls) > 0 {
		rec["tool_calls"] = calls
	}
	return s.record(api.RecordSandboxDenied, rec)
}

// sandboxDeniedOverflowRecord: count refused calls beyond the first
// `recorded` were not recorded one by one.
func (s *session) sandboxDeniedOverflowRecord(count int64, recorded int) audit.Record {
	return s.record(api.RecordSandboxDeniedOverflow, audit.Record{"count": count, "recorded": recorded})
}

// consentGrantRecord: a consent record was stored, by whom.
func consentGrantRecord(r *consent.Record, by string) audit.Record {
	rec := audit.Record{"type": string(api.RecordConsentGrant), "consent": r.ID, "user": r.User, "agent": r.Agent, "server": r.Server,
		"tools": r.Tools, "resources": r.Resources, "prompts": r.Prompts, "when": r.When, "expires_at": r.ExpiresAt,
		"max_calls": r.MaxCalls, "by": by, "via": r.Via}
	if r.Session != "" {
		rec["session"] = r.Session
	}
	if r.Pin != "" {
		rec["pin"] = r.Pin
	}
	rec["definition"] = r.Definition // "": the administrator's server; else the user's own, as then defined
	return rec
}

// consentRevokeRecord: a consent record was revoked, by whom and why.
func consentRevokeRecord(r *consent.Record, by, reason string) audit.Record {
	return audit.Record{"type": string(api.RecordConsentRevoke), "consent": r.ID, "user": r.User, "agent": r.Agent, "server": r.Server,
		"by": by, "reason": reason}
}

// serverStdio says how the server's stdio reach the relay: "fifo", the
// daemon's own pipes (mcpcage-init installed), or "containerd", copied by
// containerd-shim.
func serverStdio(p sandbox.Params) string {
	if p.StdioDir != "" {
		return "fifo"
	}
	return "containerd"
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// influenceRecord: something a server showed the agent (the data-flow
// guard's trail): where from, its digest and size, labels and what the
// detectors and heuristics found; its content only when set
// (audit_arguments = "full"; capped like every value).
func (s *session) influenceRecord(in flow.Influence, content any) audit.Record {
	rec := audit.Record{"influence": in.ID, "run": s.runKey(), "kind": string(in.Kind), "size": in.Size, "digest": in.Digest}
	if in.Name != "" {
		rec["name"] = in.Name
	}
	if in.Call != "" {
		rec["call"] = in.Call
	}
	if len(in.Labels) > 0 {
		rec["labels"] = in.Labels
	}
	if len(in.Found) > 0 {
		rec["found"] = in.Found
	}
	if len(in.Suspect) > 0 {
		rec["suspect"] = in.Suspect
	}
	if content != nil {
		rec["content"] = content
	}
	return s.record(api.RecordInfluence, rec)
}

// suspectRecord: a heuristic matched text a server showed the agent; the
// matched span (an excerpt, bounded) and what was done.
func (s *session) suspectRecord(in flow.Influence, tool string, m inject.Match, action config.OnSuspect) audit.Record {
	rec := audit.Record{"influence": in.ID, "kind": string(in.Kind), "rule": string(m.Rule), "start": m.Start, "end": m.End, "action": string(action)}
	if m.Excerpt != "" {
		rec["excerpt"] = m.Excerpt // see safeExcerpt
	}
	if tool != "" {
		rec["tool"] = tool
	} else if in.Name != "" {
		rec["name"] = in.Name
	}
	return s.record(api.RecordInfluenceSuspect, rec)
}

// taintRecord: the agent run received a label's data for the first time.
func (s *session) taintRecord(t flow.Taint) audit.Record {
	rec := audit.Record{"run": s.runKey(), "label": t.Label, "influence": t.Influence, "kind": string(t.Kind)}
	if t.Name != "" {
		rec["name"] = t.Name
	}
	if t.Call != "" {
		rec["call"] = t.Call
	}
	if len(t.Found) > 0 {
		rec["found"] = t.Found
	}
	return s.record(api.RecordFlowTaint, rec)
}
