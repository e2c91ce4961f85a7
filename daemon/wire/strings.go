package wire

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// utf8Len returns the length of the valid UTF-8 sequence at the start of b,
// or 0 when it is not valid UTF-8.
func utf8Len(b []byte) int {
	r, n := utf8.DecodeRune(b)
	if r == utf8.RuneError && n <= 1 {
		return 0
	}
	return n
}

// unquote decodes a JSON string literal already validated by the scanner.
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
