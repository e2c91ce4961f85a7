package wire

import (
	"bytes"
	"fmt"
)

// Members returns the spans of the top-level members of the JSON object
// obj, keyed by decoded member name (spans index into obj). It returns
// false when obj is not a valid JSON object. Used to rewrite one member
// (a tools/list result's "tools") while keeping the rest byte for byte.
func Members(obj []byte) (map[string]Span, bool) {
	s := scanner{b: obj}
	s.ws()
	if !s.peekIs('{') {
		return nil, false
	}
	out, err := s.spans(nil)
	s.ws()
	if err != nil || s.i != len(s.b) {
		return nil, false
	}
	return out, true
}

// Member returns the span of the top-level member called name in the
// JSON object obj, the one Members would return (the last of
// duplicates), without building the map of all of them: names without
// escapes are compared where they are. It returns false when obj is not
// a valid JSON object or has no such member.
func Member(obj []byte, name string) (Span, bool) {
	sp, found, err := findMember(obj, name, false)
	return sp, found && err == nil
}

// StrictMember is [Member] under the rules of [Object] for the one name
// it reads, for a member a decision acts on: it refuses (with an
// [AmbiguityError]) a second member called name, a member whose name
// differs from name only in letter case (an mcp-go peer reads
// {"taskId":"T1","TASKID":"T2"} as T2, a JavaScript or Python one as T1)
// and name spelled with escapes. Other names are not compared with each
// other, so no map of them is built. found is false when obj has no such
// member; an obj that is not an object is an [ErrSyntax].
func StrictMember(obj []byte, name string) (sp Span, found bool, err error) {
	return findMember(obj, name, true)
}

// findMember is Member, or with strict StrictMember.
func findMember(obj []byte, name string, strict bool) (Span, bool, error) {
	s := scanner{b: obj}
	s.ws()
	if !s.peekIs('{') {
		return Span{}, false, fmt.Errorf("%w: not an object", ErrSyntax)
	}
	var sp Span
	found := false
	for more := s.open(); more; {
		raw, err := s.member()
		if err != nil {
			return Span{}, false, err
		}
		match, err := memberIs(raw, name, strict)
		if err != nil {
			return Span{}, false, err
		}
		if match && strict && found {
			return Span{}, false, ambiguous("duplicate member %q", name)
		}
		vs := s.i
		if err := s.value(); err != nil {
			return Span{}, false, err
		}
		if match {
			sp, found = Span{vs, s.i}, true
		}
		if more, err = s.next(closeObject); err != nil {
			return Span{}, false, err
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return Span{}, false, s.errf("unexpected data after the JSON value")
	}
	return sp, found, nil
}

// memberIs reports whether the raw member name literal is name. With
// strict, one that is name only once unescaped, or only under case
// folding, is an [AmbiguityError]. An unpaired surrogate escape is one
// either way (see [unquote]).
func memberIs(raw []byte, name string, strict bool) (bool, error) {
	inner := raw[1 : len(raw)-1]
	escaped := bytes.IndexByte(inner, '\\') >= 0
	if escaped {
		decoded, ok := unquote(raw)
		if !ok {
			return false, ambiguous("member name %s has an unpaired surrogate escape", raw)
		}
		inner = []byte(decoded)
	}
	switch {
	case string(inner) != name:
		if strict && bytes.EqualFold(inner, []byte(name)) {
			return false, ambiguous("member %q differs from %q only in letter case", inner, name)
		}
		return false, nil
	case strict && escaped:
		return false, ambiguous("member name %q is written with escapes (%s)", name, raw)
	}
	return true, nil
}

// spans reads the members of the object at s.i: their value spans keyed by
// decoded name. With read, each name is checked by [checkName] (the rules
// of [Object]); without, the last of duplicates wins.
func (s *scanner) spans(read *readNames) (map[string]Span, error) {
	out := map[string]Span{}
	var names nameSet
	for more := s.open(); more; {
		if read != nil && len(out) >= MaxObjectMembers {
			return nil, ErrTooManyMembers
		}
		name, raw, err := s.name()
		if err != nil {
			return nil, err
		}
		if read != nil {
			if err := checkName(name, raw, read, &names); err != nil {
				return nil, err
			}
		}
		vs := s.i
		if err := s.value(); err != nil {
			return nil, err
		}
		out[name] = Span{vs, s.i}
		if more, err = s.next(closeObject); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Elements returns the spans of the elements of the JSON array arr.
func Elements(arr []byte) ([]Span, bool) {
	s := scanner{b: arr}
	s.ws()
	if !s.peekIs('[') {
		return nil, false
	}
	var out []Span
	for more := s.open(); more; {
		vs := s.i
		if err := s.value(); err != nil {
			return nil, false
		}
		out = append(out, Span{vs, s.i})
		var err error
		if more, err = s.next(closeArray); err != nil {
			return nil, false
		}
	}
	return out, true
}

// Len returns the number of elements of the JSON array arr without
// keeping them (ok false when arr is not a valid array).
func Len(arr []byte) (n int, ok bool) {
	s := scanner{b: arr}
	s.ws()
	if !s.peekIs('[') {
		return 0, false
	}
	for more := s.open(); more; n++ {
		if err := s.value(); err != nil {
			return 0, false
		}
		var err error
		if more, err = s.next(closeArray); err != nil {
			return 0, false
		}
	}
	return n, true
}

// Splice returns b with span sp replaced by repl.
func Splice(b []byte, sp Span, repl []byte) []byte {
	out := make([]byte, 0, len(b)-(sp.End-sp.Start)+len(repl))
	out = append(out, b[:sp.Start]...)
	out = append(out, repl...)
	return append(out, b[sp.End:]...)
}
