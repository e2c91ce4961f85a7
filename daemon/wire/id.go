package wire

import "strings"

// IDKey returns a comparable key for a raw JSON-RPC id: string ids by their
// decoded value, numbers by their literal text, so "7" and 7 stay distinct
// (a request's id beyond ±(2^53-1) is refused: see PlainID). It returns "" for an empty span
// or a null id, which cannot be correlated.
func IDKey(raw []byte) string {
	if len(raw) == 0 || raw[0] == 'n' {
		return ""
	}
	if raw[0] == '"' {
		s, ok := unquote(raw)
		if !ok {
			return ""
		}
		return "s" + s
	}
	if PlainID(raw) {
		// The common case, an integer as written: one allocation.
		k := make([]byte, 0, 1+len(raw))
		return string(append(append(k, 'n'), raw...))
	}
	return "n" + canonicalNumber(string(raw))
}

// maxPlainID is the largest integer id every peer reads exactly: 2^53-1,
// the last of the integers a double holds one by one. A server that reads
// ids as doubles (JavaScript, mcp-go) answers 9007199254740993 as
// 9007199254740992, the id of another request.
const maxPlainID = 1<<53 - 1

// PlainID reports whether a raw request id reads the same to every peer:
// a string, null (refused elsewhere) or an integer written plainly
// (-?[1-9][0-9]* or 0) within ±(2^53-1). Ids with a fraction, an exponent
// or a minus zero, or beyond that range, are numbers a peer reading
// doubles would confuse with others (1e0 and 1).
func PlainID(raw []byte) bool {
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' {
		return true
	}
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || (digits[0] == '0' && (len(digits) > 1 || len(raw) > 1)) {
		return false // "-0", or a leading zero (invalid JSON anyway)
	}
	if len(digits) > 16 { // 2^53-1 has 16 digits
		return false
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + uint64(c-'0')
	}
	return n <= maxPlainID
}

// canonicalNumber strips a zero fraction ("7.0" -> "7") so a peer that
// echoes an integer id as a float still correlates. Other numbers are kept
// as written.
func canonicalNumber(n string) string {
	if i := strings.IndexByte(n, '.'); i >= 0 && !strings.ContainsAny(n, "eE") {
		if strings.Trim(n[i+1:], "0") == "" {
			return n[:i]
		}
	}
	return n
}
