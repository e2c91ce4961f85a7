package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Requests a server makes of the client: sampling/createMessage (the
// client's model generates for the server: influence on the agent),
// elicitation/create (a question to the user) and roots/list. The
// initialize era sends them as requests toward the client; the
// 2026-07-28 era returns them as the input requests of a tools/call,
// prompts/get or resources/read result. Each is decided by the server's
// allow_sampling, allow_elicitation and allow_roots, and recorded
// (server.request); an allowed sampling request is recorded with its
// prompt, redacted and capped.

// requestForm says how the server made the request.
type requestForm string

const (
	formRequest      requestForm = "request"       // a request toward the client (initialize era)
	formInputRequest requestForm = "input_request" // an input request of a result (2026-07-28 era)
	formURLError     requestForm = "url_error"     // a URL elicitation in an error's data (-32042, see urlelicitation.go)
)

// clientRequestDecision is one decided request of the server's.
type clientRequestDecision struct {
	method  string // as the server wrote it
	form    requestForm
	id      json.RawMessage // the request's id (initialize era) or the result's (2026-07-28)
	key     string          // the input request's key (2026-07-28)
	allowed bool
	reason  string
	params  []byte // the request's params, for a sampling request's prompt
}

// serverToClient are the requests a server may send toward the client at
// all: ping, the governed ones, and the task methods of the initialize
// era's tasks utility. Anything else is refused: a method mcpcage does
// not know is one it cannot govern.
var serverToClient = map[string]bool{"ping": true, string(request.TasksGet): true, string(request.TasksResult): true,
	string(request.TasksList): true, string(request.TasksCancel): true}

// maxInputRequests bounds the input requests of one result: more are
// refused whole, with one record (each is a record and a decision).
const maxInputRequests = 16

// serverRequest decides on a request the server sends toward the client.
func (p *sessionPolicy) serverRequest(e *wire.Envelope, msg []byte) relay.Verdict {
	id := e.ID.Of(msg)
	r, governed := config.ClientRequestOf(e.Method)
	var c clientRequestDecision
	switch {
	case governed:
		c = p.decideClientRequest(r, formRequest, id, "", e.Params.Of(msg))
	case serverToClient[e.Method]:
		return relay.Verdict{}
	default:
		c = p.refuseClientRequest(e.Method, formRequest, id, "", fmt.Sprintf("server %q sent %q, a request mcpcage does not let a server make of the client", p.s.server, e.Method))
	}
	if c.allowed {
		return relay.Verdict{}
	}
	return relay.Verdict{Deny: true, Reason: c.reason,
		Reply: wire.ErrorResponse(id, wire.CodeDenied, "mcpcage refused "+e.Method+": "+c.reason, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: c.reason})}
}

// decideClientRequest decides, records and logs one request of the
// server's.
func (p *sessionPolicy) decideClientRequest(r config.ClientRequest, form requestForm, id []byte, key string, params []byte) clientRequestDecision {
	if !p.srv.Allows(r) {
		c := p.refuseClientRequest(string(r), form, id, key,
			fmt.Sprintf("server %q may not send %s to the client (set %s = true in its configuration to allow it)", p.s.server, r, r.Key()), params)
		return c
	}
	if r == config.Elicitation && len(params) > ask.MaxQuestionBytes {
		return p.refuseClientRequest(string(r), form, id, key,
			fmt.Sprintf("server %q sent a question of %d KiB, more than the %d KiB mcpcage reads to check it", p.s.server, len(params)>>10, ask.MaxQuestionBytes>>10), params)
	}
	if r == config.Elicitation && ask.ImitatesJSON(params, p.s.code) {
		return p.refuseClientRequest(string(r), form, id, key,
			fmt.Sprintf("server %q sent a question that imitates mcpcage's own consent questions (it names mcpcage or carries the session's question code)", p.s.server), params)
	}
	// A sampling request is the server's prompt to the model, an
	// elicitation its question to the user: scanned, recorded, and
	// refused when suspect (unless on_suspect only logs).
	if in, suspects := p.influence(flow.Request, string(r), "", params); len(suspects) > 0 {
		if why := p.suspect(in, "", suspects); why != "" {
			return p.refuseClientRequest(string(r), form, id, key, why, params)
		}
	}
	c := clientRequestDecision{method: string(r), form: form, id: append(json.RawMessage(nil), id...), key: key, allowed: true}
	if r == config.Sampling {
		c.params = params
	}
	p.d.audit.AppendAsync(p.s.serverRequestRecord(c, string(p.d.conf().Daemon.AuditArguments), p.secretValues()))
	return c
}

// refuseClientRequest records and logs a refused request of the
// server's; a sampling request's params (the attempted prompt) go into
// the record too.
func (p *sessionPolicy) refuseClientRequest(method string, form requestForm, id []byte, key, reason string, params ...[]byte) clientRequestDecision {
	c := clientRequestDecision{method: method, form: form, id: append(json.RawMessage(nil), id...), key: key, reason: reason}
	if len(params) > 0 && method == string(config.Sampling) {
		c.params = params[0]
	}
	p.s.denied.Add(1)
	secrets := p.secretValues()
	p.s.log.Warn("server request refused", "method", audit.ScrubText(method, secrets), "form", string(form), "reason", audit.ScrubText(reason, secrets))
	p.d.audit.AppendAsync(p.s.serverRequestRecord(c, string(p.d.conf().Daemon.AuditArguments), secrets))
	return c
}

// serverRequestRecord: a request the server made of the client, and its
// decision; a sampling request carries its prompt (the params, redacted
// per audit_arguments, its head when long) and the prompt's digest.
func (s *session) serverRequestRecord(c clientRequestDecision, argMode string, secrets []string) audit.Record {
	rec := audit.Record{"method": audit.ScrubText(c.method, secrets), "form": string(c.form), "request_id": c.id, "decision": "allow"}
	// The key and a reason that quotes it are the server's words: a
	// server holding a secret must not write it into the log through them.
	if c.key != "" {
		rec["input_key"] = audit.ScrubText(c.key, secrets)
	}
	if !c.allowed {
		rec["decision"], rec["reason"] = "deny", audit.ScrubText(c.reason, secrets)
	}
	if len(c.params) > 0 {
		rec["prompt_digest"] = s.digests.Digest(json.RawMessage(c.params))
		var m map[string]any
		if len(c.params) <= maxDecodedForRecord && json.Unmarshal(c.params, &m) == nil {
			if a := audit.Arguments(m, argMode, secrets); a != nil {
				if b, err := json.Marshal(a); err == nil && len(b) > audit.MaxString {
					// The record keeps a string's first MaxString bytes:
					// say so, and keep them whole.
					rec["prompt_truncated"] = len(b)
					a = string(b)
				}
				rec["prompt"] = a
			}
		}
	}
	return s.record(api.RecordServerRequest, rec)
}

// inputRequests decides on the input requests in a result or in the
// params of a notification (the 2026-07-28 era's input_required results,
// and task results and notifications that carry them), wherever an
// inputRequests member is, whatever resultType says. It returns the
// reason to refuse the message ("" when it may pass). Members are read
// as a decision must (see wire.Object): a result or input request that
// parsers could read differently is refused, as are more than
// maxInputRequests and a method mcpcage does not know.
func (p *sessionPolicy) inputRequests(id, obj []byte) string {
	if len(obj) == 0 || obj[0] != '{' || !mayNameInputRequests(obj) {
		return ""
	}
	members, err := wire.Object(obj, []string{"resultType", "inputRequests"})
	if err != nil {
		return p.refuseClientRequest("", formInputRequest, id, "", "a result or notification that parsers would read differently: "+err.Error()).reason
	}
	sp, ok := members["inputRequests"]
	if !ok {
		return ""
	}
	all := sp.Of(obj)
	reqs, err := wire.Object(all, nil)
	if err != nil || len(all) == 0 || all[0] != '{' {
		return p.refuseClientRequest("", formInputRequest, id, "", "inputRequests is not an object every parser reads the same way").reason
	}
	if len(reqs) > maxInputRequests {
		return p.refuseClientRequest("", formInputRequest, id, "", fmt.Sprintf("%d input requests in one message; at most %d", len(reqs), maxInputRequests)).reason
	}
	refused := ""
	for key, v := range reqs {
		ir := v.Of(all)
		fields, err := wire.Object(ir, []string{"method", "params"})
		method := ""
		if err == nil {
			if m, has := fields["method"]; has {
				method, _ = wire.String(m.Of(ir))
			}
		}
		r, governed := config.ClientRequestOf(method)
		if !governed {
			refused = p.refuseClientRequest(method, formInputRequest, id, key, fmt.Sprintf("input request %q asks for %q, which mcpcage cannot govern", key, method)).reason
			continue
		}
		var params []byte
		if ps, has := fields["params"]; has {
			params = ps.Of(ir)
		}
		if c := p.decideClientRequest(r, formInputRequest, id, key, params); !c.allowed {
			refused = c.reason
		}
	}
	return refused
}

// mayNameInputRequests says whether obj could hold a member that some
// parser reads as "inputRequests": the name in any letter case (Go's
// encoding/json folds case, and "ſ" is "s" to it), or any name written
// with a \u escape. False is certain; true sends obj to the strict reader.
// It costs two byte searches instead of a scan of every value (a 16 MiB
// result scanned strictly takes about 90 ms here).
func mayNameInputRequests(obj []byte) bool {
	if bytes.Contains(obj, []byte(`\u`)) {
		return true
	}
	const name = "inputreque" // the part before any "s"
	const q = 7               // its "q"
	for _, c := range []byte{'q', 'Q'} {
		for off := 0; ; {
			i := bytes.IndexByte(obj[off:], c)
			if i < 0 {
				break
			}
			i += off
			if i >= q && i-q+len(name) <= len(obj) && bytes.EqualFold(obj[i-q:i-q+len(name)], []byte(name)) {
				return true
			}
			off = i + 1
		}
	}
	return false
}

// refusedResult is what the client gets instead of a message whose input
// requests were refused: for a tools/call a result with isError (the
// model reads why), for another response an error; a notification is
// dropped (nil). The line has no terminator (a relay.Verdict's Replace).
func refusedResult(id []byte, method, reason string) []byte {
	text := "mcpcage refused this result: " + reason
	if m := request.Method(method); m == request.ToolsCall || m == request.TasksResult {
		body, _ := json.Marshal(map[string]any{"content": []map[string]string{{"type": "text", "text": text}}, "isError": true, "resultType": "complete"})
		return append(append(append(append([]byte(`{"jsonrpc":"2.0","id":`), orNull(id)...), `,"result":`...), body...), '}')
	}
	line := wire.ErrorResponse(id, wire.CodeDenied, text, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: reason})
	return line[:len(line)-1]
}
