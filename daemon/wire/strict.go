package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// ErrAmbiguous wraps every error of [Object], [Tree] and [Decode] that
// says a value has more than one reading across the JSON parsers MCP
// servers use.
var ErrAmbiguous = errors.New("ambiguous JSON")

// AmbiguityError says where and why a value is ambiguous.
type AmbiguityError struct {
	Problem string
}

func (e *AmbiguityError) Error() string { return e.Problem }

// Unwrap makes errors.Is(err, ErrAmbiguous) hold.
func (e *AmbiguityError) Unwrap() error { return ErrAmbiguous }

func ambiguous(format string, args ...any) error {
	return &AmbiguityError{Problem: fmt.Sprintf(format, args...)}
}

// Object reads the members of the JSON object obj the way a decision must:
// names unescaped, matched exactly. It refuses (with an [AmbiguityError])
// an object that parsers would read differently:
//   - two members whose names are equal after unescaping, or differ only
//     in letter case (Unicode simple folding, as Go's encoding/json matches
//     struct fields: "NAME", "Name" and "name" are one field to an mcp-go
//     server and three to a JavaScript or Python one);
//   - a member whose name differs from one of read only in letter case, or
//     is one of read spelled with escapes;
//   - a name with an unpaired UTF-16 surrogate escape.
//
// It returns the members' value spans keyed by exact name (spans index
// into obj); nested values are not checked (see [Tree]). obj must be valid
// JSON (as [Peek] guarantees for everything it accepts).
func Object(obj []byte, read []string) (map[string]Span, error) {
	s := scanner{b: obj}
	s.ws()
	if !s.peekIs('{') {
		return nil, fmt.Errorf("%w: not an object", ErrSyntax)
	}
	rn := newReadNames(read)
	return s.spans(&rn)
}

// Tree checks v and every object and string inside it with the rules of
// [Object], with read applying at every depth, and refuses strings whose
// escapes encode unpaired surrogates. It is how the arguments of a call are
// checked against the names a condition reads.
func Tree(v []byte, read []string) error {
	s := scanner{b: v}
	s.ws()
	rn := newReadNames(read)
	return s.strictValue(&rn, 0)
}

// TreeValues is [Tree], and counts the values in v (every object, array,
// member value and element, v itself included): what decoding v would
// build ([Decode]). It also refuses what Decode refuses of numbers (one
// outside float64's range), for values checked but never decoded.
func TreeValues(v []byte, read []string) (values int, err error) {
	s := scanner{b: v, numbersInRange: true}
	s.ws()
	rn := newReadNames(read)
	err = s.strictValue(&rn, 0)
	return s.values, err
}

// MaxObjectMembers bounds the members of one object a strict walk
// ([Object], [Tree]) accepts: it keeps the names of an object to find
// duplicates, and one call of millions of members took 700 MiB and
// seconds to check (found checking the memory a huge call costs). Tool
// arguments never come near it.
const MaxObjectMembers = 1 << 16

// ErrTooManyMembers: an object over MaxObjectMembers.
var ErrTooManyMembers = fmt.Errorf("an object with more than %d members, more than mcpcage checks for names that parsers read differently", MaxObjectMembers)

// checkName applies the rules of [Object] to one more member name.
func checkName(name string, raw []byte, read *readNames, earlier *nameSet) error {
	if canon, ok := read.match(name); ok {
		if name != canon {
			return ambiguous("member %q differs from %q only in letter case", name, canon)
		}
		if len(raw) != len(canon)+2 {
			return ambiguous("member name %q is written with escapes (%s)", canon, raw)
		}
	}
	if e, ok := earlier.add(name); !ok {
		if e == name {
			return ambiguous("duplicate member %q", name)
		}
		return ambiguous("members %q and %q differ only in letter case", e, name)
	}
	return nil
}

// foldKey maps a name to the same key as every name it equals under
// Unicode simple case folding (strings.EqualFold, and so encoding/json's
// field matching): each rune becomes the smallest rune of its fold orbit.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		b.WriteRune(m)
	}
	return b.String()
}

// smallSet is how many names are compared pairwise before a set switches
// to a map keyed by fold (so a hostile object with many members costs
// linear time, not quadratic).
const smallSet = 8

// nameSet is one object's member names, for the collision checks.
type nameSet struct {
	small  [smallSet]string // the first names, without an allocation
	n      int              // how many of small are used
	byFold map[string]string
}

// add records name; when an earlier name equals it under folding it
// returns that name and false.
func (n *nameSet) add(name string) (string, bool) {
	if n.byFold == nil {
		for _, e := range n.small[:n.n] {
			if strings.EqualFold(e, name) {
				return e, false
			}
		}
		if n.n < smallSet {
			n.small[n.n] = name
			n.n++
			return "", true
		}
		n.byFold = make(map[string]string, 2*smallSet)
		for _, e := range n.small {
			n.byFold[foldKey(e)] = e
		}
		n.small, n.n = [smallSet]string{}, 0
	}
	k := foldKey(name)
	if e, ok := n.byFold[k]; ok {
		return e, false
	}
	n.byFold[k] = name
	return "", true
}

// readNames are the names a decision reads, for checkName.
type readNames struct {
	names  []string
	byFold map[string]string // when there are many
}

func newReadNames(names []string) readNames {
	r := readNames{names: names}
	if len(names) > smallSet {
		r.byFold = make(map[string]string, len(names))
		for _, n := range names {
			r.byFold[foldKey(n)] = n
		}
	}
	return r
}

// match returns the read name that name equals under folding.
func (r *readNames) match(name string) (string, bool) {
	if r.byFold != nil {
		c, ok := r.byFold[foldKey(name)]
		return c, ok
	}
	for _, c := range r.names {
		if strings.EqualFold(c, name) {
			return c, true
		}
	}
	return "", false
}

// maxStrictDepth bounds the nesting Tree and Decode follow (Peek bounds
// nesting by the same number).
const maxStrictDepth = maxDepth

func (s *scanner) strictValue(read *readNames, depth int) error {
	if depth > maxStrictDepth {
		return s.errf("nesting deeper than %d", maxStrictDepth)
	}
	if s.i >= len(s.b) {
		return s.errf("unexpected end of input")
	}
	s.values++
	switch s.b[s.i] {
	case '{':
		var names nameSet
		members := 0
		for more := s.open(); more; {
			if members++; members > MaxObjectMembers {
				return ErrTooManyMembers
			}
			name, raw, err := s.name()
			if err != nil {
				return err
			}
			if err := checkName(name, raw, read, &names); err != nil {
				return err
			}
			if err := s.strictValue(read, depth+1); err != nil {
				return err
			}
			if more, err = s.next(closeObject); err != nil {
				return err
			}
		}
		return nil
	case '[':
		for more := s.open(); more; {
			if err := s.strictValue(read, depth+1); err != nil {
				return err
			}
			var err error
			if more, err = s.next(closeArray); err != nil {
				return err
			}
		}
		return nil
	case '"':
		start := s.i
		if err := s.str(); err != nil {
			return err
		}
		if !decodable(s.b[start:s.i]) {
			return ambiguous("string %.40s has an unpaired surrogate escape", s.b[start:s.i])
		}
		return nil
	default:
		start := s.i
		if err := s.value(); err != nil {
			return err
		}
		if !s.numbersInRange {
			return nil // kept as written (tool pins)
		}
		return inRange(s.b[start:s.i])
	}
}

// inRange refuses a number outside float64's range, as Decode does, for
// values a strict walk checks but nobody decodes (found by a red-team
// helper: arguments past request.MaxArgumentValues took 1e400). Only a
// number with an exponent or of over 300 digits can be outside it.
func inRange(lit []byte) error {
	if len(lit) == 0 || (lit[0] != '-' && (lit[0] < '0' || lit[0] > '9')) {
		return nil // true, false, null
	}
	if len(lit) <= 300 && !bytes.ContainsAny(lit, "eE") {
		return nil
	}
	if f, err := strconv.ParseFloat(string(lit), 64); err != nil || math.IsInf(f, 0) {
		return ambiguous("number %.40s is outside the range every parser reads alike", lit)
	}
	return nil
}

// String decodes the JSON string literal raw. It fails on anything that
// is not a string, and on unpaired surrogate escapes.
func String(raw []byte) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: not a string", ErrSyntax)
	}
	v, ok := unquote(raw)
	if !ok {
		return "", ambiguous("string %.40s has an unpaired surrogate escape", raw)
	}
	return v, nil
}

// Decode builds the Go value of the JSON text v for a decision (a policy
// condition): objects become map[string]any with exact names (the last
// of duplicates wins, as in JavaScript and Python; run [Tree] first to
// refuse them), arrays []any, strings string, integers that fit int64
// become int64 (as Python reads them) and other numbers float64. Numbers
// outside float64's range are refused.
func Decode(v []byte) (any, error) {
	s := scanner{b: v}
	s.ws()
	out, err := s.decodeValue(0)
	if err != nil {
		return nil, err
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, s.errf("unexpected data after the JSON value")
	}
	return out, nil
}

func (s *scanner) decodeValue(depth int) (any, error) {
	if depth > maxStrictDepth {
		return nil, s.errf("nesting deeper than %d", maxStrictDepth)
	}
	if s.i >= len(s.b) {
		return nil, s.errf("unexpected end of input")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		m := map[string]any{}
		for more := s.open(); more; {
			name, _, err := s.name()
			if err != nil {
				return nil, err
			}
			if m[name], err = s.decodeValue(depth + 1); err != nil {
				return nil, err
			}
			if more, err = s.next(closeObject); err != nil {
				return nil, err
			}
		}
		return m, nil
	case c == '[':
		a := []any{}
		for more := s.open(); more; {
			v, err := s.decodeValue(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			if more, err = s.next(closeArray); err != nil {
				return nil, err
			}
		}
		return a, nil
	case c == '"':
		start := s.i
		if err := s.str(); err != nil {
			return nil, err
		}
		return String(s.b[start:s.i])
	case c == 't' || c == 'f' || c == 'n':
		start := s.i
		if err := s.value(); err != nil {
			return nil, err
		}
		switch s.b[start] {
		case 't':
			return true, nil
		case 'f':
			return false, nil
		}
		return nil, nil
	default:
		start := s.i
		if err := s.number(); err != nil {
			return nil, err
		}
		lit := string(s.b[start:s.i])
		if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, ambiguous("number %.40s is outside the range every parser reads alike", lit)
		}
		return f, nil
	}
}
