package config

// ClientRequest names a request a server may send toward the client (the
// initialize era), or return as an input request of a result (the
// 2026-07-28 era).
type ClientRequest string

// The requests a server may make of the client, each governed by a
// server key.
const (
	// Sampling asks the client's model to generate: influence on the
	// agent, denied by default (allow_sampling).
	Sampling ClientRequest = "sampling/createMessage"
	// Elicitation asks the user a question through the client, allowed
	// by default (allow_elicitation).
	Elicitation ClientRequest = "elicitation/create"
	// Roots asks which directories the client shares, allowed by default
	// (allow_roots).
	Roots ClientRequest = "roots/list"
)

// ClientRequestOf returns the governed request a method names, and
// whether it is one.
func ClientRequestOf(method string) (ClientRequest, bool) {
	switch r := ClientRequest(method); r {
	case Sampling, Elicitation, Roots:
		return r, true
	}
	return "", false
}

// Key is the server key that governs the request.
func (r ClientRequest) Key() string {
	switch r {
	case Sampling:
		return "allow_sampling"
	case Elicitation:
		return "allow_elicitation"
	}
	return "allow_roots"
}

// Allows says whether the server may make request r of the client.
func (s *Server) Allows(r ClientRequest) bool {
	pick := func(v *bool, def bool) bool {
		if v == nil {
			return def
		}
		return *v
	}
	switch r {
	case Sampling:
		return pick(s.AllowSampling, false)
	case Elicitation:
		return pick(s.AllowElicitation, true)
	case Roots:
		return pick(s.AllowRoots, true)
	}
	return true
}

// PinPolicy says what happens to a tool the daemon has not pinned yet
// (see package daemon/pins); a pinned tool whose definition changes is
// quarantined under every policy but "off".
type PinPolicy string

// Pin policies.
const (
	PinAcceptNew  PinPolicy = "accept-new" // a new tool is pinned as first seen (the default)
	PinQuarantine PinPolicy = "quarantine" // a new tool of a server with pins waits for approval
	PinOff        PinPolicy = "off"        // no pinning
)

// Pins returns the server's pin policy.
func (s *Server) Pins() PinPolicy {
	if s.PinPolicy == "" {
		return PinAcceptNew
	}
	return s.PinPolicy
}
