// Package jsonsplice edits a JSON document in place: it finds the members
// of an object as byte spans, so that one member's value can be replaced
// while every other byte of the text (order, spacing, indentation, members
// it does not know) stays exactly as it was. `mcpcage client setup` uses it
// to rewrite MCP clients' configuration files.
//
// Members reads one level of an object; values are validated but not
// decoded. It is as strict as the daemon's wire layer is about names:
// duplicate names are allowed (the last one wins, as in JavaScript), but a
// document that is not valid UTF-8, or a name with an unpaired UTF-16
// surrogate escape ("\ud800"), which parsers read differently, is refused.
// Comments and trailing commas (JSONC) are not JSON and are refused too.
//
// This is for files, not for the relay's hot path: it is built on
// encoding/json and allocates; the daemon reads messages with daemon/wire.
package jsonsplice

import (
	"bytes"
	"encoding/json"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// Span is a byte range of a value inside a document.
type Span struct{ Start, End int }

// Of returns the bytes of the span in doc.
func (s Span) Of(doc []byte) []byte { return doc[s.Start:s.End] }

// Members returns the spans of the values of the top-level members of the
// JSON object obj, keyed by decoded name (spans index into obj). It
// returns false when obj is not one valid JSON object (whitespace around it
// is allowed).
func Members(obj []byte) (map[string]Span, bool) {
	if !utf8.Valid(obj) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	out := map[string]Span{}
	for dec.More() {
		before := dec.InputOffset() // whitespace and ',' precede the name
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, ok := t.(string)
		raw := obj[before:dec.InputOffset()]
		q := bytes.IndexByte(raw, '"')
		if !ok || q < 0 || !pairedSurrogates(raw[q:]) {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		end := int(dec.InputOffset())
		out[name] = Span{end - len(v), end}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // a second value, or garbage
	}
	return out, true
}

// Splice returns a copy of doc with span sp replaced by repl.
func Splice(doc []byte, sp Span, repl []byte) []byte {
	out := make([]byte, 0, len(doc)-(sp.End-sp.Start)+len(repl))
	out = append(out, doc[:sp.Start]...)
	out = append(out, repl...)
	return append(out, doc[sp.End:]...)
}

// pairedSurrogates reports whether every \u escape of the valid JSON
// string literal lit that encodes a UTF-16 surrogate is half of a pair.
func pairedSurrogates(lit []byte) bool {
	high := false // the previous escape was a high surrogate
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' {
			if high {
				return false
			}
			continue
		}
		i++
		if lit[i] != 'u' {
			if high {
				return false
			}
			continue
		}
		r := hex4(lit[i+1 : i+5])
		i += 4
		switch {
		case high && (r < 0xDC00 || r > 0xDFFF):
			return false
		case high:
			high = false
		case utf16.IsSurrogate(r) && r < 0xDC00:
			high = true
		case utf16.IsSurrogate(r):
			return false // a low surrogate alone
		}
	}
	return !high
}

// hex4 decodes four hex digits (already validated by the decoder).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= 'a':
			c -= 'a' - 10
		case c >= 'A':
			c -= 'A' - 10
		default:
			c -= '0'
		}
		r = r<<4 | rune(c)
	}
	return r
}
