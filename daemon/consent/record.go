package consent

import (
	"path"
	"time"
)

// Kind of object a record covers.
type Kind string

const (
	KindTool     Kind = "tool"
	KindResource Kind = "resource"
	KindPrompt   Kind = "prompt"
)

// Record is one delegation.
type Record struct {
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
	Via       string     `json:"via"` // cli, prompt
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
	Reason    string     `json:"revoke_reason,omitempty"`
}

// Active reports whether the record can allow anything at t.
func (r *Record) Active(t time.Time) bool {
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
func (r *Record) State(t time.Time) string {
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

// Covers reports whether the record names object name of kind k (its
// patterns only: activity and conditions are checked elsewhere).
func (r *Record) Covers(k Kind, name string) bool {
	var pats []string
	switch k {
	case KindTool:
		pats = r.Tools
	case KindResource:
		pats = r.Resources
	case KindPrompt:
		pats = r.Prompts
	}
	for _, p := range pats {
		if ok, err := path.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}

// ValidPattern reports whether p is a well-formed glob.
func ValidPattern(p string) bool {
	_, err := path.Match(p, "")
	return err == nil && p != ""
}
