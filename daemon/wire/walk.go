package wire

// The walk over an object's members and an array's elements. Every loop
// of the package that reads a container goes through these steps:
// [scanner.object] and the batch of [Peek], [Members], [Elements],
// [Object], [Tree] and [Decode]:
//
//	for more := s.open(); more; {
//		raw, err := s.member() // objects only ([scanner.name] to decode it)
//		... consume the value at s.i ...
//		more, err = s.next(closeObject) // or closeArray
//	}
//
// so the grammar between values (brackets, ':', ',', whitespace) and its
// errors are written once. The steps take no callbacks: the envelope is
// read on every message, and an indirect call per member measurably slowed
// it. [scanner.nested], which validates the values the readers skip,
// shares [scanner.member] but keeps its own loop (see there).

// Closing brackets, for [scanner.next].
const (
	closeObject byte = '}'
	closeArray  byte = ']'
)

// open enters the object or array at s.i (its '{' or '['). It reports
// whether a first member or element follows (s.i is then at it, or at the
// end of input); false means the container was empty and s.i is past it.
func (s *scanner) open() bool {
	end := closeArray
	if s.b[s.i] == '{' {
		end = closeObject
	}
	s.i++
	s.ws()
	if s.peekIs(end) {
		s.i++
		return false
	}
	return true
}

// member scans `"name" :` and the whitespace after it, leaving s.i at the
// value, and returns the raw name literal (quotes and escapes as written).
// Names are not decoded here: the envelope reads them raw, without
// allocating; see [scanner.name].
func (s *scanner) member() ([]byte, error) {
	if !s.peekIs('"') {
		return nil, s.errf("expected a member name")
	}
	start := s.i
	if err := s.str(); err != nil {
		return nil, err
	}
	raw := s.b[start:s.i]
	s.ws()
	if !s.peekIs(':') {
		return nil, s.errf("expected ':' after member name")
	}
	s.i++
	s.ws()
	if s.i >= len(s.b) {
		return nil, s.errf("unexpected end of input")
	}
	return raw, nil
}

// name is [scanner.member] with the name decoded as well. A name with an
// unpaired surrogate escape has no single reading (see [unquote]) and is
// refused with an [AmbiguityError].
func (s *scanner) name() (name string, raw []byte, err error) {
	raw, err = s.member()
	if err != nil {
		return "", nil, err
	}
	name, ok := unquote(raw)
	if !ok {
		return "", nil, ambiguous("member name %s has an unpaired surrogate escape", raw)
	}
	return name, raw, nil
}

// next follows a member's value or an element, in a container that ends
// with end. It reports whether another member or element follows (s.i is
// then at it, or at the end of input); false means the container closed
// and s.i is past it.
func (s *scanner) next(end byte) (bool, error) {
	s.ws()
	switch {
	case s.peekIs(','):
		s.i++
		s.ws()
		return true, nil
	case s.peekIs(end):
		s.i++
		return false, nil
	case end == closeObject:
		return false, s.errf("expected ',' or '}' in object")
	default:
		return false, s.errf("expected ',' or ']' in array")
	}
}
