package wire

import "strings"

// IDKey returns a comparable key for a raw JSON-RPC id: string ids by their
// decoded value, numbers by their literal text, so "7" and 7 stay distinct
// and 9007199254740993 keeps every digit. It returns "" for an empty span
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
	return "n" + canonicalNumber(string(raw))
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
