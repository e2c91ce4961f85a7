package consent

import (
	"path"
	"strings"
)

// matchURI reports whether resource URI name matches pattern p. A pattern
// that holds "://" is read as a URI: its scheme, authority and the rest
// are matched each against the URI's own, so that a wildcard never
// reaches from one into another. The authority ends at the first '/',
// '?' or '#' written in the pattern (a wildcard cannot end it); a
// wildcard in the scheme matches scheme characters only, and one in the
// authority never matches '@', so user info cannot be slipped in front of
// a host. Stars that end a pattern right after its authority
// ("https://docs.example.com*") cover what follows the authority, not
// more of the host: matched as text, that pattern also covered
// https://docs.example.com.evil.example/ and
// https://docs.example.com@evil.example/. An authority of stars alone
// ("https://*/x", "https://*") is any authority. Other patterns ("*",
// "*.md", "mem:*") are matched as text (MatchText).
func matchURI(p, name string) bool {
	if _, err := path.Match(p, ""); err != nil {
		return false
	}
	toks := tokens(p)
	sep := indexSeq(toks, "://")
	if sep < 0 {
		return matchTokens(toks, name, nil)
	}
	scheme, rest, ok := strings.Cut(name, "://")
	if !ok || !matchTokens(toks[:sep], scheme, notSchemeRune) {
		return false
	}
	toks = toks[sep+3:]
	end := len(toks) // the pattern's authority: up to its first literal '/', '?' or '#'
	for i, t := range toks {
		if t.is('/') || t.is('?') || t.is('#') {
			end = i
			break
		}
	}
	authP, restP := toks[:end], toks[end:]
	if len(restP) == 0 {
		// Trailing stars after the authority cover what follows it;
		// after a ':' they are the port as well ("http://localhost:*").
		n := len(authP)
		for n > 0 && authP[n-1] == "*" {
			n--
		}
		if n < len(authP) {
			restP = []token{"*"}
			switch {
			case n == 0:
				authP = []token{"*"}
			case authP[n-1].is(':'):
				authP = authP[:n+1]
			default:
				authP = authP[:n]
			}
		}
	}
	cut := strings.IndexAny(rest, "/?#")
	if cut < 0 {
		cut = len(rest)
	}
	auth, tail := rest[:cut], rest[cut:]
	if !(allStars(authP) || matchTokens(authP, auth, isUserInfoMark) || matchTokens(withoutAnyPort(authP), auth, isUserInfoMark)) {
		return false
	}
	return matchTokens(restP, tail, nil)
}

// withoutAnyPort is authority pattern p without a port of stars alone
// (":*" at its end), which covers no port written as well: "localhost:*"
// covers "localhost". Other patterns are returned as they are.
func withoutAnyPort(p []token) []token {
	n := len(p)
	for n > 0 && p[n-1] == "*" {
		n--
	}
	if n < len(p) && n > 1 && p[n-1].is(':') {
		return p[:n-1]
	}
	return p
}

// indexSeq is the index of the first run of literal tokens spelling s, or -1.
func indexSeq(toks []token, s string) int {
	for i := 0; i+len(s) <= len(toks); i++ {
		match := true
		for j := range len(s) {
			if !toks[i+j].is(s[j]) {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}

// is reports whether t is the character c as written, or escaped ('?'
// written alone is a wildcard).
func (t token) is(c byte) bool {
	s := string(t)
	return s == `\`+string(c) || c != '?' && s == string(c)
}

func allStars(toks []token) bool {
	for _, t := range toks {
		if t != "*" {
			return false
		}
	}
	return len(toks) > 0
}

// notSchemeRune: a URI scheme is letters, digits, '+', '-' and '.'.
func notSchemeRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')
}

// isUserInfoMark: '@' ends an authority's user info.
func isUserInfoMark(r rune) bool { return r == '@' }
