package daemon

import (
	"bytes"
	"fmt"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// A server can ask for the user's attention without an
// elicitation/create: an error answering any request, code -32042
// (MCP 2025-11-25, "URL elicitation required"), carries URL elicitations
// in its data, which the client shows the user as it would the request.
// Such an error is decided as the elicitations it carries are (the
// server's allow_elicitation, the size bound, the check that it does not
// pose as mcpcage, the influence scan), and replaced by a plain refusal
// when one is refused (found by a red-team helper: a server barred from
// elicitation showed the user a link of its own, dressed as mcpcage's
// sign-in). The remote bridge's own sign-in link is the one error of this
// kind that is not the server's: the bridge says which lines it wrote
// itself (remote.Conn.Own).

// maxURLElicitations bounds the elicitations of one error, as
// maxInputRequests bounds those of a result.
const maxURLElicitations = maxInputRequests

// urlElicitationError decides an error response of the server's that
// carries URL elicitations (or the -32042 code); ok is false when msg
// is not one.
func (p *sessionPolicy) urlElicitationError(e *wire.Envelope, msg []byte) (v relay.Verdict, ok bool) {
	errObj := e.Error.Of(msg)
	if !mayCarryElicitations(errObj) {
		return relay.Verdict{}, false
	}
	if p.s.remote != nil && p.s.remote.conn.Own(e.Whole.Of(msg)) {
		return relay.Verdict{}, true // the bridge's own sign-in link
	}
	id := e.ID.Of(msg)
	refuse := func(why string) (relay.Verdict, bool) {
		return relay.Verdict{Reason: why,
			Replace: wire.ErrorResponse(id, wire.CodeDenied, "mcpcage refused the server's answer: "+why, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: why})}, true
	}
	members, err := wire.Object(errObj, []string{"code", "data"})
	if err != nil {
		return refuse(p.refuseClientRequest(string(config.Elicitation), formURLError, id, "", "an error that parsers would read differently: "+err.Error()).reason)
	}
	var elicitations []byte
	if data, has := members["data"]; has {
		d := data.Of(errObj)
		if len(d) > 0 && d[0] == '{' {
			dm, err := wire.Object(d, []string{"elicitations"})
			if err != nil {
				return refuse(p.refuseClientRequest(string(config.Elicitation), formURLError, id, "", "an error whose data parsers would read differently: "+err.Error()).reason)
			}
			if el, has := dm["elicitations"]; has {
				elicitations = el.Of(d)
			}
		}
	}
	if elicitations == nil {
		// The code alone: nothing the client can show; the error passes.
		return relay.Verdict{}, true
	}
	items, isArray := wire.Elements(elicitations)
	switch {
	case !isArray:
		return refuse(p.refuseClientRequest(string(config.Elicitation), formURLError, id, "", "the error's elicitations are not a list").reason)
	case len(items) > maxURLElicitations:
		return refuse(p.refuseClientRequest(string(config.Elicitation), formURLError, id, "", fmt.Sprintf("%d elicitations in one error; at most %d", len(items), maxURLElicitations)).reason)
	}
	if ask.ImitatesJSON(errObj, p.s.code) { // its message or data, beside the elicitations
		return refuse(p.refuseClientRequest(string(config.Elicitation), formURLError, id, "",
			fmt.Sprintf("server %q sent a sign-in link that imitates mcpcage's own (it names mcpcage or carries the session's question code)", p.s.server)).reason)
	}
	for _, it := range items {
		if c := p.decideClientRequest(config.Elicitation, formURLError, id, "", it.Of(elicitations)); !c.allowed {
			return refuse(c.reason)
		}
	}
	return relay.Verdict{}, true
}

// mayCarryElicitations reports whether an error object may carry URL
// elicitations: the code -32042 or the member name, however escaped.
func mayCarryElicitations(errObj []byte) bool {
	return bytes.Contains(errObj, []byte(`\u`)) || bytes.Contains(errObj, []byte("licitation")) ||
		bytes.Contains(errObj, []byte(fmt.Sprint(remote.CodeURLElicitationRequired)))
}
