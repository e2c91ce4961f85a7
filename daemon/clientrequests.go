package daemon

import (
	"encoding/json"
	"fmt"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/relay"
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
)

// maxPromptRecord caps the prompt of a sampling request in its record.
const maxPromptRecord = 4096

// clientRequestDecision is one decided request of the server's.
type clientRequestDecision struct {
	request config.ClientRequest
	form    requestForm
	id      json.RawMessage // the request's id (initialize era) or the result's (2026-07-28)
	key     string          // the input request's key (2026-07-28)
	allowed bool
	reason  string
	params  []byte // the request's params, for a sampling request's prompt
}

// serverRequest decides on a request the server sends toward the client.
func (p *sessionPolicy) serverRequest(e *wire.Envelope, msg []byte) relay.Verdict {
	r, governed := config.ClientRequestOf(e.Method)
	if !governed {
		return relay.Verdict{}
	}
	c := p.decideClientRequest(r, formRequest, e.ID.Of(msg), "", e.Params.Of(msg))
	if c.allowed {
		return relay.Verdict{}
	}
	return relay.Verdict{Deny: true, Reason: c.reason,
		Reply: wire.ErrorResponse(e.ID.Of(msg), wire.CodeDenied, "mcpcage refused "+e.Method+": "+c.reason, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: c.reason})}
}

// decideClientRequest decides, records and logs one request of the
// server's.
func (p *sessionPolicy) decideClientRequest(r config.ClientRequest, form requestForm, id []byte, key string, params []byte) clientRequestDecision {
	c := clientRequestDecision{request: r, form: form, id: append(json.RawMessage(nil), id...), key: key, allowed: p.srv.Allows(r)}
	if !c.allowed {
		c.reason = fmt.Sprintf("server %q may not send %s to the client (set %s = true in its configuration to allow it)", p.s.server, r, r.Key())
		p.s.denied.Add(1)
		p.s.log.Warn("server request refused", "method", string(r), "form", string(form), "reason", c.reason)
	}
	if c.allowed && r == config.Sampling {
		c.params = params
	}
	p.d.audit.AppendAsync(p.s.serverRequestRecord(c, string(p.d.conf().Daemon.AuditArguments), p.d.secretValues()))
	return c
}

// serverRequestRecord: a request the server made of the client, and its
// decision; an allowed sampling request carries its prompt (the params,
// redacted per audit_arguments and capped at maxPromptRecord bytes).
func (s *session) serverRequestRecord(c clientRequestDecision, argMode string, secrets []string) audit.Record {
	rec := audit.Record{"method": string(c.request), "form": string(c.form), "request_id": c.id, "decision": "allow"}
	if c.key != "" {
		rec["input_key"] = c.key
	}
	if !c.allowed {
		rec["decision"], rec["reason"] = "deny", c.reason
	}
	if len(c.params) > 0 {
		rec["prompt_digest"] = audit.Digest(json.RawMessage(c.params))
		var m map[string]any
		if json.Unmarshal(c.params, &m) == nil {
			if a := audit.Arguments(m, argMode, secrets); a != nil {
				if b, err := json.Marshal(a); err == nil && len(b) > maxPromptRecord {
					rec["prompt_truncated"] = len(b)
					a = string(b[:maxPromptRecord])
				}
				rec["prompt"] = a
			}
		}
	}
	return s.record(api.RecordServerRequest, rec)
}

// inputRequests decides on the input requests of a 2026-07-28 result
// (resultType "input_required") to request (tools/call, prompts/get,
// resources/read). It returns the line to send the client instead when
// one is refused (for tools/call a result with isError, else an error),
// nil when the result may pass. An input request that cannot be read
// unambiguously is refused.
func (p *sessionPolicy) inputRequests(e *wire.Envelope, msg, result []byte, request string) []byte {
	members, ok := wire.Members(result)
	if !ok {
		return nil
	}
	rt, ok := members["resultType"]
	if !ok {
		return nil
	}
	if v, err := wire.String(rt.Of(result)); err != nil || v != "input_required" {
		return nil
	}
	sp, ok := members["inputRequests"]
	if !ok {
		return nil
	}
	id := e.ID.Of(msg)
	reqs, ok := wire.Members(sp.Of(result))
	refused := ""
	if !ok {
		refused = "the result's inputRequests cannot be read unambiguously"
	}
	for key, v := range reqs {
		ir := v.Of(sp.Of(result))
		fields, ok := wire.Members(ir)
		method := ""
		if ok {
			if m, has := fields["method"]; has {
				method, _ = wire.String(m.Of(ir))
			}
		}
		r, governed := config.ClientRequestOf(method)
		if !governed {
			refused = fmt.Sprintf("input request %q asks for %q, which mcpcage does not know", key, method)
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
	if refused == "" {
		return nil
	}
	text := "mcpcage refused this result: " + refused
	if request == "tools/call" {
		body, _ := json.Marshal(map[string]any{"content": []map[string]string{{"type": "text", "text": text}}, "isError": true, "resultType": "complete"})
		return append(append(append(append([]byte(`{"jsonrpc":"2.0","id":`), orNull(id)...), `,"result":`...), body...), '}')
	}
	line := wire.ErrorResponse(id, wire.CodeDenied, text, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: refused})
	return line[:len(line)-1] // a Replace carries no line terminator
}
