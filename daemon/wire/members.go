package wire

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
	s.i++
	out := map[string]Span{}
	s.ws()
	if s.peekIs('}') {
		s.i++
		s.ws()
		return out, s.i == len(s.b)
	}
	for {
		s.ws()
		if !s.peekIs('"') {
			return nil, false
		}
		ks := s.i
		if s.str() != nil {
			return nil, false
		}
		name, ok := unquote(obj[ks:s.i])
		if !ok {
			return nil, false
		}
		s.ws()
		if !s.peekIs(':') {
			return nil, false
		}
		s.i++
		s.ws()
		vs := s.i
		if s.value() != nil {
			return nil, false
		}
		out[name] = Span{vs, s.i}
		s.ws()
		if s.peekIs(',') {
			s.i++
			continue
		}
		if s.peekIs('}') {
			s.i++
			s.ws()
			return out, s.i == len(s.b)
		}
		return nil, false
	}
}

// Elements returns the spans of the elements of the JSON array arr.
func Elements(arr []byte) ([]Span, bool) {
	s := scanner{b: arr}
	s.ws()
	if !s.peekIs('[') {
		return nil, false
	}
	s.i++
	var out []Span
	s.ws()
	if s.peekIs(']') {
		s.i++
		return out, true
	}
	for {
		s.ws()
		vs := s.i
		if s.value() != nil {
			return nil, false
		}
		out = append(out, Span{vs, s.i})
		s.ws()
		if s.peekIs(',') {
			s.i++
			continue
		}
		if s.peekIs(']') {
			s.i++
			return out, true
		}
		return nil, false
	}
}

// Splice returns b with span sp replaced by repl.
func Splice(b []byte, sp Span, repl []byte) []byte {
	out := make([]byte, 0, len(b)-(sp.End-sp.Start)+len(repl))
	out = append(out, b[:sp.Start]...)
	out = append(out, repl...)
	return append(out, b[sp.End:]...)
}
