package wire

import (
	"bytes"
	"strconv"
)

// envelopeField is one of the members of a JSON-RPC envelope.
type envelopeField uint8

const (
	fieldOther envelopeField = iota
	fieldJSONRPC
	fieldID
	fieldMethod
	fieldParams
	fieldResult
	fieldError
)

// envelopeNames are the envelope's member names, indexed by field.
var envelopeNames = [...]string{fieldJSONRPC: "jsonrpc", fieldID: "id", fieldMethod: "method",
	fieldParams: "params", fieldResult: "result", fieldError: "error"}

var envelopeNameBytes = func() (b [len(envelopeNames)][]byte) {
	for i, n := range envelopeNames {
		b[i] = []byte(n)
	}
	return b
}()

// envelopeMember classifies one top-level member name (its raw literal,
// quotes included) and reports why the message is ambiguous, if it is.
// Parsers disagree on three things (see the package documentation):
// duplicate names (last wins in JavaScript, Python and Go, an error in
// serde), names that differ only in letter case (Go's encoding/json matches
// struct fields case-insensitively, so mcp-go reads "ID" as the id) and
// names spelled with escapes (decoded by every JSON parser, but not by a
// byte scanner). For the envelope's own names mcpcage refuses all three.
func envelopeMember(raw []byte, seen *uint8) (envelopeField, string) {
	inner := raw[1 : len(raw)-1]
	escaped := bytes.IndexByte(inner, '\\') >= 0
	name := inner
	if escaped {
		s, ok := unquote(raw)
		if !ok {
			return fieldOther, "a member name has an unpaired surrogate escape"
		}
		name = []byte(s)
	}
	for f := fieldJSONRPC; f <= fieldError; f++ {
		want := envelopeNames[f]
		switch {
		case string(name) == want && escaped:
			return fieldOther, "member name " + strconv.Quote(want) + " is written with escapes"
		case string(name) == want:
			if *seen&(1<<f) != 0 {
				return fieldOther, "duplicate member " + strconv.Quote(want)
			}
			*seen |= 1 << f
			return f, ""
		case bytes.EqualFold(name, envelopeNameBytes[f]):
			return fieldOther, "member " + strconv.Quote(string(name)) + " differs from " + strconv.Quote(want) + " only in letter case"
		}
	}
	return fieldOther, ""
}
