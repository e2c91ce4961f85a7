// Package authanswer reads an OAuth authorization server's answer to an
// authorization request: the query of the redirect that brings the
// browser back to a sign-in's loopback listener (mcpcage login's, or the
// daemon's own for an in-band link). Both listeners read it here, so the
// rules are the same for both: no parameter may be given twice (RFC 6749
// §3.1), and the issuer (RFC 9207) is kept apart from its absence.
package authanswer

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
)

// Answer is an authorization server's answer.
type Answer struct {
	State string
	Code  string // "" in an error answer
	// Error is the error answer's error and error_description, made
	// one printable line and bounded (see MaxErrorText); "" when the
	// answer is not an error.
	Error string
	// Issuer is the answer's iss (RFC 9207), nil when it has none.
	Issuer *string
}

// The parameters an answer may carry once at most. A repeated one is how
// an attacker slips a value of its own in front of the server's: a
// client registered with a redirect URI that already holds ?iss=X gets
// answers with two iss, and a reader that takes the first takes X.
var single = []string{"state", "code", "iss", "error", "error_description", "error_uri"}

// NoCode is the error of an answer with neither a code nor an error.
const NoCode = "the answer carried neither a code nor an error"

// MaxErrorText bounds an error answer's text (it is the server's, or
// whoever sent the browser to the listener).
const MaxErrorText = 300

// Parse reads q. It fails when a parameter of the answer is repeated;
// an answer with neither code nor error is an error answer saying so.
func Parse(q url.Values) (Answer, error) {
	for _, k := range single {
		if n := len(q[k]); n > 1 {
			return Answer{}, fmt.Errorf("the answer gives %q %d times: refused (an answer gives each parameter once, RFC 6749; a repeated one is how another server's answer passes for this one's)", k, n)
		}
	}
	a := Answer{State: q.Get("state"), Code: q.Get("code")}
	if q.Has("iss") {
		iss := q.Get("iss")
		a.Issuer = &iss
	}
	if e := q.Get("error"); e != "" || a.Code == "" {
		a.Code = ""
		a.Error = OneLine(strings.TrimSpace(e+" "+q.Get("error_description")), MaxErrorText)
		if a.Error == "" {
			a.Error = NoCode
		}
	}
	return a, nil
}

// Carries reports whether the answer q names state (a sign-in's own,
// never empty): whether it is for that sign-in. A refused answer with
// the state among its repeats counts too, so that it is refused for that
// sign-in rather than ignored as another's.
func Carries(q url.Values, state string) bool {
	return state != "" && slices.Contains(q["state"], state)
}

// OneLine is s with every control or format character (newlines
// included) replaced by a space, cut to at most max bytes on a rune
// boundary ("..." marking a cut): a string from a server, safe to print
// on one line of a terminal or a log.
func OneLine(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			r = ' '
		}
		if b.Len()+len(string(r)) > max {
			b.WriteString("...")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
