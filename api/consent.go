package api

import "time"

// Consent is one delegation: what a user let an agent use on a server,
// under what condition, until when and for how many calls. The daemon
// stores it (package consent) and sends it to the CLI as it is.
type Consent struct {
	ID        string     `json:"id"`
	User      string     `json:"user"`
	Agent     string     `json:"agent"`
	Server    string     `json:"server"`
	Tools     []string   `json:"tools,omitempty"`
	Resources []string   `json:"resources,omitempty"`
	Prompts   []string   `json:"prompts,omitempty"`
	When      string     `json:"when,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	MaxCalls  *int64     `json:"max_calls,omitempty"`
	CallsUsed int64      `json:"calls_used"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	Via       string     `json:"via"` // cli, prompt (answered in the client), pending (mcpcage approve)
	// Session, when set, limits the record to that one session ("allow
	// for this session").
	Session string `json:"session,omitempty"`
	// Pin, when set, is the digest of the tool definition the user was
	// shown: the record covers no other definition of the tool.
	Pin string `json:"pin,omitempty"`
	// Request, when set, is the digest of the one request the user
	// allowed (method, target and arguments): "allow once".
	Request string `json:"request,omitempty"`
	// Definition is the definition of the server the record was given
	// for: "" the administrator's server of that name, otherwise the
	// digest of the user's own server as it was then defined. The record
	// covers no session of another definition of the name: a user's
	// server defined anew, added where the administrator's was, or
	// running from before it was defined anew.
	Definition string `json:"definition,omitempty"`
	// UID is the uid User had when the record was given: the record
	// covers no session of another uid, so an account made anew under
	// the name (its uid another) inherits nothing. UIDUnbound marks a
	// record of a release before records were bound to a uid, until the
	// daemon binds it; UIDGone one whose user was gone then.
	UID       int64      `json:"uid"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
	Reason    string     `json:"revoke_reason,omitempty"`
}

// The UIDs of records not bound to a user's uid.
const (
	UIDUnbound int64 = -1 // made before records were bound to a uid
	UIDGone    int64 = -2 // its user was unknown when it was bound: it covers nothing
)

// Active reports whether the record can allow anything at t.
func (r *Consent) Active(t time.Time) bool {
	if r.RevokedAt != nil {
		return false
	}
	if r.ExpiresAt != nil && !t.Before(*r.ExpiresAt) {
		return false
	}
	if r.MaxCalls != nil && r.CallsUsed >= *r.MaxCalls {
		return false
	}
	return true
}

// State names the record's state for listings.
func (r *Consent) State(t time.Time) string {
	switch {
	case r.RevokedAt != nil:
		return "revoked"
	case r.ExpiresAt != nil && !t.Before(*r.ExpiresAt):
		return "expired"
	case r.MaxCalls != nil && r.CallsUsed >= *r.MaxCalls:
		return "used up"
	}
	return "active"
}
