package wire

import (
	"bytes"
	"errors"
	"fmt"
)

// Kind classifies a JSON-RPC message.
type Kind uint8

const (
	KindInvalid      Kind = iota // valid JSON that is not a JSON-RPC 2.0 message
	KindRequest                  // method and id
	KindNotification             // method, no id
	KindResponse                 // result or error, and id
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return "invalid"
}

// Span is a byte range of a member's raw value inside the message.
type Span struct{ Start, End int }

// Empty reports whether the member was absent.
func (s Span) Empty() bool { return s.End <= s.Start }

// Of returns the raw bytes of the span in msg.
func (s Span) Of(msg []byte) []byte { return msg[s.Start:s.End] }

// Envelope is what mcpcage reads of one JSON-RPC message. Spans point into
// the message the envelope was peeked from.
type Envelope struct {
	Kind    Kind
	Method  string // decoded method name of requests and notifications
	Whole   Span   // the whole object (or batch element)
	ID      Span   // raw id (string, number or null), empty when absent
	Params  Span
	Result  Span
	Error   Span
	Problem string // why Kind is KindInvalid
	// Ambiguous is set (and Kind is KindInvalid) when parsers in use by
	// MCP servers could read the envelope differently: see [envelopeMember].
	Ambiguous string
}

// Message is one relayed line: either a single envelope or a batch.
type Message struct {
	Batch     bool
	Envelopes []Envelope // one element unless Batch
}

// ErrSyntax wraps every JSON syntax error reported by [Peek].
var ErrSyntax = errors.New("invalid JSON")

// MaxBatchElements bounds the elements of one batch Peek reads: each is
// an Envelope of its own, and a 16 MiB batch of numbers took 5.8 GiB and
// kept 1.1 GiB for the rest of its session (found by a red-team helper).
// MCP clients send a few at a time, when they batch at all.
const MaxBatchElements = 1024

// ErrBatchTooLarge is returned by Peek for a batch of more than
// MaxBatchElements elements.
var ErrBatchTooLarge = fmt.Errorf("a batch of more than %d messages: send them in smaller batches", MaxBatchElements)

// Peek classifies msg, which may carry a trailing "\r\n". It returns a
// wrapped [ErrSyntax] when msg is not a single valid JSON value, and
// [ErrBatchTooLarge] for a batch past MaxBatchElements. The envelopes
// slice of m is reused when it has room.
func Peek(msg []byte, m *Message) error {
	if err := loneCarriageReturn(msg); err != nil {
		return err
	}
	s := scanner{b: msg}
	s.ws()
	if s.i >= len(s.b) {
		return fmt.Errorf("%w: empty message", ErrSyntax)
	}
	m.Batch = false
	m.Envelopes = m.Envelopes[:0]
	switch s.b[s.i] {
	case '{':
		var e Envelope
		if err := s.object(&e); err != nil {
			return err
		}
		m.Envelopes = append(m.Envelopes, e)
	case '[':
		m.Batch = true
		for more := s.open(); more; {
			if len(m.Envelopes) == MaxBatchElements {
				return ErrBatchTooLarge
			}
			var e Envelope
			if s.peekIs('{') {
				if err := s.object(&e); err != nil {
					return err
				}
			} else {
				e.Whole.Start = s.i
				if err := s.value(); err != nil {
					return err
				}
				e.Whole.End = s.i
				e.Problem = "batch element is not an object"
			}
			m.Envelopes = append(m.Envelopes, e)
			var err error
			if more, err = s.next(closeArray); err != nil {
				return err
			}
		}
	default:
		if err := s.value(); err != nil {
			return err
		}
		m.Envelopes = append(m.Envelopes, Envelope{Problem: "message is not an object or array"})
	}
	s.ws()
	if s.i != len(s.b) {
		return s.errf("unexpected data after the JSON value")
	}
	return nil
}

// loneCarriageReturn refuses a message with a '\r' anywhere but just
// before its final '\n' (or at its very end). JSON allows '\r' as
// whitespace between tokens, but Python's text streams (universal
// newlines, as the official Python SDK reads stdin) and Node's readline
// end a line at a bare '\r': to them one such line is several messages,
// and a request hidden after a '\r' would reach the server undecided.
func loneCarriageReturn(msg []byte) error {
	i := bytes.IndexByte(msg, '\r')
	if i < 0 || i == len(msg)-1 || (i == len(msg)-2 && msg[len(msg)-1] == '\n') {
		return nil
	}
	return &AmbiguityError{Problem: "a carriage return inside a message ends the line for some servers (Python's universal newlines, Node's readline), which would read several messages"}
}

type scanner struct {
	b []byte
	i int
	// values counts the values a strict walk ([Tree]) has seen.
	values int
	// numbersInRange has a strict walk refuse numbers outside float64's
	// range ([TreeValues]).
	numbersInRange bool
}

func (s *scanner) errf(format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrSyntax, s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) peekIs(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// object scans an object and fills the envelope from its members.
func (s *scanner) object(e *Envelope) error {
	e.Whole.Start = s.i
	defer func() { e.Whole.End = s.i }()
	var version, methodRaw Span
	var seen uint8 // envelope fields met so far, one bit each
	for more := s.open(); more; {
		raw, err := s.member()
		if err != nil {
			return err
		}
		vs := s.i
		if err := s.value(); err != nil {
			return err
		}
		sp := Span{vs, s.i}
		field, problem := envelopeMember(raw, &seen)
		if problem != "" && e.Ambiguous == "" {
			e.Ambiguous = problem
		}
		switch field {
		case fieldJSONRPC:
			version = sp
		case fieldID:
			e.ID = sp
		case fieldMethod:
			methodRaw = sp
		case fieldParams:
			e.Params = sp
		case fieldResult:
			e.Result = sp
		case fieldError:
			e.Error = sp
		}
		if more, err = s.next(closeObject); err != nil {
			return err
		}
	}
	if e.Ambiguous != "" {
		e.Problem = "ambiguous message: " + e.Ambiguous
		return nil
	}
	classify(s.b, e, version, methodRaw)
	return nil
}

func classify(b []byte, e *Envelope, version, methodRaw Span) {
	if string(version.Of(b)) != `"2.0"` {
		e.Problem = `"jsonrpc" must be "2.0"`
		return
	}
	if !e.ID.Empty() {
		switch b[e.ID.Start] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			e.Problem = `"id" must be a string, a number or null`
			return
		}
	}
	switch {
	case !methodRaw.Empty():
		if b[methodRaw.Start] != '"' {
			e.Problem = `"method" must be a string`
			return
		}
		name, ok := unquote(methodRaw.Of(b))
		if !ok {
			e.Problem = `"method" is not a valid string`
			return
		}
		if !e.Result.Empty() || !e.Error.Empty() {
			e.Problem = `a request cannot carry "result" or "error"`
			return
		}
		if !e.Params.Empty() && b[e.Params.Start] != '{' && b[e.Params.Start] != '[' {
			e.Problem = `"params" must be an object or an array`
			return
		}
		e.Method = name
		if e.ID.Empty() {
			e.Kind = KindNotification
		} else {
			e.Kind = KindRequest
		}
	case !e.Result.Empty() || !e.Error.Empty():
		if !e.Result.Empty() && !e.Error.Empty() {
			e.Problem = `a response cannot carry both "result" and "error"`
			return
		}
		if e.ID.Empty() {
			e.Problem = `a response needs an "id"`
			return
		}
		e.Kind = KindResponse
	default:
		e.Problem = `neither "method" nor "result"/"error"`
	}
}

func (s *scanner) value() error {
	if s.i >= len(s.b) {
		return s.errf("unexpected end of input")
	}
	switch c := s.b[s.i]; {
	case c == '{' || c == '[':
		return s.nested()
	case c == '"':
		return s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.errf("unexpected character %q", c)
	}
}

// maxDepth bounds nesting; encoding/json uses 10000 as well.
const maxDepth = 10000

// nested validates one object or array without recording anything. It
// keeps its own loop instead of the walk of the readers ([scanner.open],
// [scanner.next]; it shares [scanner.member]): the containers it is in are
// on an explicit stack rather than the goroutine's, so hostile nesting
// cannot exhaust it, and the separators are checked inline because this
// loop validates nearly every byte of a large message (through the
// walk's steps it was about 10% slower).
func (s *scanner) nested() error {
	stack := make([]byte, 0, 16)
	for {
		// Expecting a value start at s.i (the opening bracket on first entry).
		c := s.b[s.i]
		if c == '{' || c == '[' {
			if len(stack) >= maxDepth {
				return s.errf("nesting deeper than %d", maxDepth)
			}
			stack = append(stack, c)
			s.i++
			s.ws()
			if c == '{' {
				if s.peekIs('}') {
					s.i++
					stack = stack[:len(stack)-1]
					goto closed
				}
				if _, err := s.member(); err != nil {
					return err
				}
			} else {
				if s.peekIs(']') {
					s.i++
					stack = stack[:len(stack)-1]
					goto closed
				}
			}
			if s.i >= len(s.b) {
				return s.errf("unexpected end of input")
			}
			continue
		}
		if err := s.value(); err != nil { // scalar
			return err
		}
	closed:
		for {
			if len(stack) == 0 {
				return nil
			}
			s.ws()
			top := stack[len(stack)-1]
			if s.peekIs(',') {
				s.i++
				s.ws()
				if top == '{' {
					if _, err := s.member(); err != nil {
						return err
					}
				}
				if s.i >= len(s.b) {
					return s.errf("unexpected end of input")
				}
				break
			}
			if (top == '{' && s.peekIs('}')) || (top == '[' && s.peekIs(']')) {
				s.i++
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return nil
				}
				continue
			}
			return s.errf("expected ',' or closing bracket")
		}
	}
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.errf("invalid literal")
	}
	s.i += len(word)
	return nil
}

func (s *scanner) str() error {
	s.i++ // opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return s.errf("unterminated string")
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if len(s.b)-s.i < 5 || !isHex(s.b[s.i+1]) || !isHex(s.b[s.i+2]) || !isHex(s.b[s.i+3]) || !isHex(s.b[s.i+4]) {
					return s.errf("invalid \\u escape")
				}
				s.i += 5
			default:
				return s.errf("invalid escape")
			}
		case c < 0x20:
			return s.errf("control character in string")
		case c < 0x80:
			s.i++
		default:
			n := utf8Len(s.b[s.i:])
			if n == 0 {
				return s.errf("invalid UTF-8 in string")
			}
			s.i += n
		}
	}
	return s.errf("unterminated string")
}

func (s *scanner) number() error {
	start := s.i
	if s.peekIs('-') {
		s.i++
	}
	switch {
	case s.peekIs('0'):
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return s.errf("invalid number")
	}
	if s.peekIs('.') {
		s.i++
		if !s.digits() {
			return s.errf("invalid number")
		}
	}
	if s.peekIs('e') || s.peekIs('E') {
		s.i++
		if s.peekIs('+') || s.peekIs('-') {
			s.i++
		}
		if !s.digits() {
			return s.errf("invalid number")
		}
	}
	if s.i == start {
		return s.errf("invalid number")
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
