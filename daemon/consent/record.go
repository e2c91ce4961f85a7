package consent

import (
	"path"
	"unicode/utf8"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/uri"
)

// Kind of object a record covers.
type Kind string

const (
	KindTool     Kind = "tool"
	KindResource Kind = "resource"
	KindPrompt   Kind = "prompt"
)

// Record is one delegation; its type lives in package api, which carries
// it to the CLI (so the CLI links neither SQLite nor CEL).
type Record = api.Consent

// Covers reports whether record r names object name of kind k (its
// patterns only: activity and conditions are checked elsewhere).
func Covers(r *Record, k Kind, name string) bool {
	for _, p := range patterns(r, k) {
		if Match(k, p, name) {
			return true
		}
	}
	return false
}

func patterns(r *Record, k Kind) []string {
	switch k {
	case KindTool:
		return r.Tools
	case KindResource:
		return r.Resources
	case KindPrompt:
		return r.Prompts
	}
	return nil
}

// Match reports whether name matches pattern p for objects of kind k (see
// the package documentation). A malformed pattern matches nothing, and
// so does a resource URI that is not in normal form (uri.Check): a
// server may serve file:///work/../etc/passwd as file:///etc/passwd.
func Match(k Kind, p, name string) bool {
	if k == KindResource {
		return uri.Check(name) == nil && matchURI(p, name)
	}
	ok, err := path.Match(p, name)
	return err == nil && ok
}

// MatchText reports whether name matches pattern p read as text: '*'
// crosses '/' (see the package documentation). Resource patterns match
// so, and so do the administrator's tools_allow and tools_deny, where a
// '*' that stopped at '/' would let "repo/delete" past "*delete*". A
// malformed pattern matches nothing.
func MatchText(p, name string) bool {
	ok, err := matchText(p, name)
	return err == nil && ok
}

// ValidPattern reports whether p is a well-formed pattern (the same syntax
// for every kind).
func ValidPattern(p string) bool {
	_, err := path.Match(p, "")
	return err == nil && p != ""
}

// matchText is path.Match with one difference: '*' (and so '**') matches
// any run of characters, '/' included, and '?' any one character. URIs
// are not file paths: "file:///work/*" must cover "file:///work/a/b".
func matchText(p, name string) (bool, error) {
	if _, err := path.Match(p, ""); err != nil {
		return false, err
	}
	return matchTokens(tokens(p), name, nil), nil
}

// matchTokens matches name against a pattern's tokens; no wildcard ('*',
// '?', a class) matches a rune for which fence is true (nil: none is
// fenced).
func matchTokens(toks []token, name string, fence func(rune) bool) bool {
	// Classic two-pointer glob matching with backtracking to the last star.
	ti, ni := 0, 0
	star, mark := -1, 0
	for ni < len(name) {
		r, size := utf8.DecodeRuneInString(name[ni:])
		fenced := fence != nil && fence(r)
		if ti < len(toks) && toks[ti] != "*" && toks[ti].matches(r) && (!fenced || toks[ti].literal()) {
			ti++
			ni += size
			continue
		}
		if ti < len(toks) && toks[ti] == "*" {
			star, mark = ti, ni
			ti++
			continue
		}
		if star < 0 {
			return false
		}
		r, size = utf8.DecodeRuneInString(name[mark:])
		if fence != nil && fence(r) {
			return false // the star cannot take it
		}
		mark += size
		ti, ni = star+1, mark
	}
	for ti < len(toks) && toks[ti] == "*" {
		ti++
	}
	return ti == len(toks)
}

// token is one element of a pattern: "*", "?", a class "[...]" or one
// literal character.
type token string

func tokens(p string) []token {
	var out []token
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			out = append(out, "*")
			i++
		case '?':
			out = append(out, "?")
			i++
		case '[':
			j := i + 1
			for j < len(p) && p[j] != ']' {
				if p[j] == '\\' {
					j++
				}
				j++
			}
			out = append(out, token(p[i:j+1])) // well-formed: checked by path.Match
			i = j + 1
		case '\\':
			_, n := utf8.DecodeRuneInString(p[i+1:])
			out = append(out, token(p[i:i+1+n]))
			i += 1 + n
		default:
			_, n := utf8.DecodeRuneInString(p[i:])
			out = append(out, token(p[i:i+n]))
			i += n
		}
	}
	return out
}

// literal reports whether t is one character as written (or escaped),
// not a wildcard or a class.
func (t token) literal() bool { return t != "*" && t != "?" && t[0] != '[' }

func (t token) matches(r rune) bool {
	switch {
	case t == "?":
		return true
	case t[0] == '[' || t[0] == '\\':
		ok, _ := path.Match(string(t), string(r))
		return ok
	}
	return string(t) == string(r)
}
