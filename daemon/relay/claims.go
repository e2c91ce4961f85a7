package relay

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Era names the two generations of the MCP protocol.
type Era string

const (
	EraUnknown    Era = ""
	EraInitialize Era = "initialize" // 2024-11-05 .. 2025-11-25: initialize handshake
	EraStateless  Era = "stateless"  // 2026-07-28 and later: server/discover, per-request _meta
)

// Claims are what the client says about itself. They are recorded, never
// trusted as identity.
type Claims struct {
	Era             Era             `json:"era,omitempty"`
	ProtocolVersion string          `json:"protocol_version,omitempty"`
	ClientInfo      json.RawMessage `json:"client_info,omitempty"`
	// FormElicitation: the client declared it can show a form question
	// (initialize era: capabilities.elicitation, form mode). The
	// 2026-07-28 era declares capabilities per request.
	FormElicitation bool `json:"form_elicitation,omitempty"`
}

// Claims returns the client's claims seen so far.
func (r *Relay) Claims() Claims {
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	return r.claims
}

const (
	metaVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientInfo = "io.modelcontextprotocol/clientInfo"
)

// noteClaims reads the protocol era and client claims from the requests
// that carry them: initialize (older era) or any request whose params._meta
// names a protocol version (stateless era). Only those requests are decoded.
func (r *Relay) noteClaims(msg []byte, e *wire.Envelope) {
	params := e.Params.Of(msg)
	switch {
	case e.Method == string(request.Initialize):
		var p struct {
			ProtocolVersion string          `json:"protocolVersion"`
			ClientInfo      json.RawMessage `json:"clientInfo"`
			Capabilities    struct {
				Elicitation json.RawMessage `json:"elicitation"`
			} `json:"capabilities"`
		}
		if json.Unmarshal(params, &p) != nil {
			return
		}
		r.setClaims(Claims{Era: EraInitialize, ProtocolVersion: p.ProtocolVersion, ClientInfo: p.ClientInfo,
			FormElicitation: FormElicitation(p.Capabilities.Elicitation)})
	case bytes.Contains(params, []byte(metaVersion)):
		r.claimsMu.Lock()
		known := r.claims.Era == EraStateless && r.claims.ClientInfo != nil
		r.claimsMu.Unlock()
		if known {
			return
		}
		// Member by member, never a map of all of _meta (found by a
		// red-team helper: one of millions of members cost 234 MiB, on
		// every request until the claims are known).
		metaAt, ok := wire.Member(params, "_meta")
		if !ok {
			return
		}
		meta := metaAt.Of(params)
		vAt, ok := wire.Member(meta, metaVersion)
		if !ok {
			return
		}
		v, err := wire.String(vAt.Of(meta))
		if err != nil || v == "" {
			return
		}
		var info json.RawMessage
		if at, ok := wire.Member(meta, metaClientInfo); ok {
			info = at.Of(meta)
		}
		r.setClaims(Claims{Era: EraStateless, ProtocolVersion: v, ClientInfo: info})
	}
}

func (r *Relay) setClaims(c Claims) {
	c.ClientInfo = recordableClientInfo(c.ClientInfo) // a copy: the relay reuses its buffer
	r.claimsMu.Lock()
	first := r.claims.Era == EraUnknown
	r.claims = c
	r.claimsMu.Unlock()
	if first && r.opts.OnClaims != nil {
		r.opts.OnClaims(c)
	}
}

// maxClientInfo bounds the clientInfo a session keeps, shows and records.
const maxClientInfo = 4 << 10

// recordableClientInfo is clientInfo as the session keeps, shows and
// records it: JSON with one reading for every parser (no member twice,
// every number within float64's range), re-encoded. Anything else, or
// more than maxClientInfo bytes, becomes {"unreadable": why, "sent": its
// first bytes as a string}: a readers' JSON parser refused the record of
// {"name":"a","name":"b","x":1e400} whole, so the session's claims went
// unseen (found by a red-team helper), and every parser read the name
// its own way.
func recordableClientInfo(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	why := fmt.Sprintf("%d bytes, over %d", len(raw), maxClientInfo)
	if len(raw) <= maxClientInfo {
		v, err := wire.Decode(raw)
		if err == nil {
			err = wire.Tree(raw, nil)
		}
		if err == nil {
			b, merr := json.Marshal(v)
			if merr == nil {
				return b
			}
			err = merr
		}
		why = err.Error()
	}
	sent := raw[:min(len(raw), 256)]
	b, _ := json.Marshal(map[string]string{"unreadable": why, "sent": string(sent)})
	return b
}

// FormElicitation reads an elicitation capability: an object declares
// form questions unless it names only other modes ({"url": {}}).
func FormElicitation(capability json.RawMessage) bool {
	var modes map[string]json.RawMessage
	if json.Unmarshal(capability, &modes) != nil || modes == nil {
		return false
	}
	_, form := modes["form"]
	_, url := modes["url"]
	return form || !url
}
