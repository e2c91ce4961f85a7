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
	out := map[string]Span{}
	err := s.eachMember(func(name string, _ []byte) error {
		vs := s.i
		if err := s.value(); err != nil {
			return err
		}
		out[name] = Span{vs, s.i}
		return nil
	})
	s.ws()
	if err != nil || s.i != len(s.b) {
		return nil, false
	}
	return out, true
}

// Elements returns the spans of the elements of the JSON array arr.
func Elements(arr []byte) ([]Span, bool) {
	s := scanner{b: arr}
	s.ws()
	if !s.peekIs('[') {
		return nil, false
	}
	var out []Span
	err := s.eachElement(func() error {
		vs := s.i
		if err := s.value(); err != nil {
			return err
		}
		out = append(out, Span{vs, s.i})
		return nil
	})
	if err != nil {
		return nil, false
	}
	return out, true
}

// Splice returns b with span sp replaced by repl.
func Splice(b []byte, sp Span, repl []byte) []byte {
	out := make([]byte, 0, len(b)-(sp.End-sp.Start)+len(repl))
	out = append(out, b[:sp.Start]...)
	out = append(out, repl...)
	return append(out, b[sp.End:]...)
}
