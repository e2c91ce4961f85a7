package wire

import "bytes"

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
	s := scanner{b: obj}
	s.ws()
	if !s.peekIs('{') {
		return Span{}, false
	}
	var sp Span
	found := false
	for more := s.open(); more; {
		raw, err := s.member()
		if err != nil {
			return Span{}, false
		}
		match := false
		if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
			match = string(inner) == name
		} else if decoded, ok := unquote(raw); ok {
			match = decoded == name
		} else {
			return Span{}, false // an unpaired surrogate escape, as Members
		}
		vs := s.i
		if err := s.value(); err != nil {
			return Span{}, false
		}
		if match {
			sp, found = Span{vs, s.i}, true
		}
		if more, err = s.next(closeObject); err != nil {
			return Span{}, false
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return Span{}, false
	}
	return sp, found
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
