package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on one record. They are applied when a record is encoded, so no
// caller can forget them (see the package comment for the shapes).
const (
	// MaxString is the longest string, map key, number or raw JSON value
	// kept whole in a record.
	MaxString = 1 << 10
	// MaxRecord is the budget of one encoded record: past it, the largest
	// fields (never the who-and-what fields) are replaced by their digests.
	MaxRecord = 64 << 10
)

// Truncated stands in a record for a value longer than MaxString, and for
// a field dropped to keep the record within MaxRecord. Bytes and SHA256
// describe the whole value: a string's UTF-8 bytes, a raw JSON value's
// bytes as received, or a dropped field's JSON encoding. Prefix is the
// value's first bytes (at most MaxString, cut on a rune boundary, invalid
// UTF-8 replaced by U+FFFD); it is empty for dropped fields and binary
// values.
type Truncated struct {
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
	Prefix string `json:"truncated"`
}

// core fields are never dropped to fit MaxRecord (they are bounded by
// MaxString like every string).
var core = map[string]bool{"type": true, "time": true, "seq": true, "prev": true, "session": true,
	"agent": true, "agent_instance": true, "user": true, "server": true}

func truncate[T ~string | ~[]byte](s T, withPrefix bool) Truncated {
	sum := sha256.Sum256([]byte(s))
	t := Truncated{Bytes: len(s), SHA256: hex.EncodeToString(sum[:])}
	if withPrefix {
		n := min(MaxString, len(s))
		for i := 0; i < utf8.UTFMax-1 && n > 0 && n < len(s) && !utf8.RuneStart(s[n]); i++ {
			n--
		}
		t.Prefix = strings.ToValidUTF8(string(s[:n]), "\uFFFD")
	}
	return t
}

// boundKey caps a map key: a long key keeps its prefix and gains the
// whole key's digest and length, so distinct keys stay distinct.
func boundKey(k string) string {
	if len(k) <= MaxString {
		return k
	}
	t := truncate(k, true)
	return t.Prefix + "…[sha256:" + t.SHA256 + " bytes:" + strconv.Itoa(t.Bytes) + "]"
}

// bound returns v with every over-long string, key, number and raw JSON
// value replaced (see Truncated), copying maps and slices only where
// something changed; changed reports whether it did.
func bound(v any) (out any, changed bool) {
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64,
		Truncated, time.Time, time.Duration:
		return v, false
	case string:
		if len(x) <= MaxString {
			return v, false
		}
		return truncate(x, true), true
	case json.Number:
		if len(x) <= MaxString {
			return v, false
		}
		return truncate(x, true), true
	case json.RawMessage:
		if len(x) > MaxString {
			return truncate(x, true), true
		}
		if !json.Valid(x) {
			return string(x), true // recorded as text rather than losing the record
		}
		return v, false
	case []byte:
		if len(x) <= MaxString*3/4 { // base64 in JSON
			return v, false
		}
		return truncate(x, false), true
	case Record:
		return boundMap(map[string]any(x))
	case map[string]any:
		return boundMap(x)
	case map[string]string:
		var changed []kv[string]
		for k, s := range x {
			if nk := boundKey(k); nk != k || len(s) > MaxString {
				if len(s) > MaxString {
					// A string map cannot hold the digest form: keep
					// the prefix and name the digest in the text.
					t := truncate(s, true)
					s = t.Prefix + "…[sha256:" + t.SHA256 + " bytes:" + strconv.Itoa(t.Bytes) + "]"
				}
				changed = append(changed, kv[string]{k, nk, s})
			}
		}
		if changed == nil {
			return v, false
		}
		return replaceKeys(maps.Clone(x), changed), true
	case []any:
		var out []any
		for i, e := range x {
			if ne, ch := bound(e); ch {
				if out == nil {
					out = slices.Clone(x)
				}
				out[i] = ne
			}
		}
		if out == nil {
			return v, false
		}
		return out, true
	case []string:
		if !slices.ContainsFunc(x, func(s string) bool { return len(s) > MaxString }) {
			return v, false
		}
		out := make([]any, len(x))
		for i, s := range x {
			if out[i] = s; len(s) > MaxString {
				out[i] = truncate(s, true)
			}
		}
		return out, true
	}
	// Any other type (structs, pointers, typed slices): encode it once;
	// small encodings cannot hold an over-long string, larger ones are
	// decoded generically and bounded.
	b, err := json.Marshal(v)
	if err != nil || len(b) <= MaxString {
		return v, false // an encoding error surfaces when the record is encoded
	}
	var g any
	if err := json.Unmarshal(b, &g); err != nil {
		return truncate(b, false), true
	}
	out, _ = bound(g)
	return out, true
}

func boundMap(m map[string]any) (map[string]any, bool) {
	var changed []kv[any]
	for k, v := range m {
		nk := boundKey(k)
		nv, ch := bound(v)
		if ch || nk != k {
			changed = append(changed, kv[any]{k, nk, nv})
		}
	}
	if changed == nil {
		return m, false
	}
	return replaceKeys(maps.Clone(m), changed), true
}

// kv is a map entry to replace: the old key, the new one, the new value.
type kv[V any] struct {
	old, new string
	v        V
}

// replaceKeys removes every changed entry's old key from m, then adds the
// new ones, so no value is lost. In two passes: a map may hold a long key
// and, as another key, that key's bounded form (itself long, so bounded
// again); replacing one entry at a time would let the first entry's new
// key overwrite the second's value, then the second's removal delete the
// first's, and which value survived would depend on the map's iteration
// order. A bounded key of valid UTF-8 is longer than MaxString and carries
// the whole key's digest, so it collides with no kept key; one whose
// prefix shrank when invalid UTF-8 was replaced could, and gets a "~"
// appended until it is free rather than overwrite a value.
func replaceKeys[V any](m map[string]V, changed []kv[V]) map[string]V {
	for _, c := range changed {
		delete(m, c.old)
	}
	for _, c := range changed {
		k := c.new
		for _, taken := m[k]; taken; _, taken = m[k] {
			k += "~"
		}
		m[k] = c.v
	}
	return m
}

// render bounds rec in place (top-level values are replaced; nested maps
// and slices are copied on write, never changed under their owner) and
// returns its canonical encoding: keys sorted, as encoding/json renders a
// map, each value encoded once.
func render(rec Record) ([]byte, error) { return appendRecord(nil, rec) }

// maxInlineKeys is how many keys appendRecord sorts without allocating.
const maxInlineKeys = 32

// appendRecord is render appending to dst; on error dst is returned as it
// was.
func appendRecord(dst []byte, rec Record) ([]byte, error) {
	// One pass over the map collects the fields; keys over MaxString
	// (rare) are bounded in the map first and the fields collected again.
	var inline [maxInlineKeys]field
	fields := inline[:0]
	long := false
	for k, v := range rec {
		long = long || len(k) > MaxString
		fields = append(fields, field{k, v})
	}
	if long {
		var changed []kv[any]
		for _, f := range fields {
			if nk := boundKey(f.k); nk != f.k {
				changed = append(changed, kv[any]{f.k, nk, f.v})
			}
		}
		replaceKeys(map[string]any(rec), changed)
		fields = fields[:0]
		for k, v := range rec {
			fields = append(fields, field{k, v})
		}
	}
	slices.SortFunc(fields, func(a, b field) int { return strings.Compare(a.k, b.k) })
	start := len(dst)
	dst = append(dst, '{')
	for i, f := range fields {
		var err error
		if dst, err = appendMember(dst, i, f.k, f.v, func(v any) { rec[f.k] = v }); err != nil {
			return dst[:start], err
		}
	}
	dst = append(dst, '}')
	if len(dst)-start > MaxRecord {
		keys := make([]string, len(fields))
		for i, f := range fields {
			keys[i] = f.k
		}
		return append(dst[:start], shrink(rec, keys)...), nil
	}
	return dst, nil
}

// appendMember appends a record's i-th member, key and value, the value
// bounded first; a value that bounding changed is handed to set, so the
// record holds what was written.
func appendMember(dst []byte, i int, key string, v any, set func(any)) ([]byte, error) {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = appendString(dst, key)
	dst = append(dst, ':')
	v, changed := bound(v)
	if changed {
		set(v)
	}
	dst, err := appendValue(dst, v)
	if err != nil {
		return dst, fmt.Errorf("field %q: %w", key, err)
	}
	return dst, nil
}

// field is one of a record's fields, for rendering them in key order.
type field struct {
	k string
	v any
}

// shrink replaces the largest non-core fields of a record too large for
// MaxRecord by their digests until it fits, and renders it again.
func shrink(rec Record, keys []string) []byte {
	vals := make([][]byte, len(keys))
	total := len("{}") + len(keys) - 1
	for i, k := range keys {
		vals[i], _ = appendValue(nil, rec[k]) // rendered once already: no error
		total += len(vals[i]) + len(appendString(nil, k)) + 1
	}
	order := make([]int, 0, len(keys))
	for i, k := range keys {
		if !core[k] {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return len(vals[b]) - len(vals[a]) })
	// An object's largest members first: the arguments of a call keep
	// their small values (a command beside sixty long texts), where the
	// whole field became one digest (found by a red-team helper).
	for _, i := range order {
		if total <= MaxRecord {
			break
		}
		m, ok := rec[keys[i]].(map[string]any)
		if !ok {
			continue
		}
		if out, saved := shrinkMembers(m, total-MaxRecord); saved > 0 {
			if b, err := appendValue(nil, out); err == nil {
				total -= len(vals[i]) - len(b)
				vals[i] = b
				rec[keys[i]] = out
			}
		}
	}
	for _, i := range order {
		if total <= MaxRecord {
			break
		}
		t := truncate(vals[i], false)
		b, _ := json.Marshal(t)
		if len(b) >= len(vals[i]) {
			break // the rest are smaller than a digest
		}
		total -= len(vals[i]) - len(b)
		vals[i] = b
		rec[keys[i]] = t
	}
	out, _ := appendObject(make([]byte, 0, total), keys, func(b []byte, k string) ([]byte, error) {
		i, _ := slices.BinarySearch(keys, k)
		return append(b, vals[i]...), nil
	})
	return out
}

// shrinkMembers is m with its largest members replaced by their digests
// (Truncated of their JSON, no prefix) until need bytes are saved or no
// member is larger than its digest; saved is how many were. m is not
// changed.
func shrinkMembers(m map[string]any, need int) (out map[string]any, saved int) {
	type member struct {
		k   string
		enc []byte
	}
	ms := make([]member, 0, len(m))
	for k, v := range m {
		enc, err := appendValue(nil, v)
		if err != nil {
			return m, 0
		}
		ms = append(ms, member{k, enc})
	}
	slices.SortFunc(ms, func(a, b member) int {
		if d := len(b.enc) - len(a.enc); d != 0 {
			return d
		}
		return strings.Compare(a.k, b.k)
	})
	out = maps.Clone(m)
	for _, mb := range ms {
		if saved >= need {
			break
		}
		t := truncate(mb.enc, false)
		b, _ := json.Marshal(t)
		if len(b) >= len(mb.enc) {
			break // the rest are smaller than a digest
		}
		out[mb.k] = t
		saved += len(mb.enc) - len(b)
	}
	return out, saved
}

// appendObject appends a JSON object of keys (sorted), each value
// appended by val.
func appendObject(b []byte, keys []string, val func(b []byte, k string) ([]byte, error)) ([]byte, error) {
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		var err error
		if b, err = val(b, k); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendValue appends v's JSON, as encoding/json renders it, taking the
// common scalar types directly.
func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, x), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case float64:
		// encoding/json's form without its reflection: plain decimal
		// within these bounds, its exponent form (from json.Marshal)
		// outside them.
		if a := math.Abs(x); a == 0 || (a >= 1e-6 && a < 1e21) {
			return strconv.AppendFloat(b, x, 'f', -1, 64), nil
		}
	case map[string]any:
		return appendMap(b, x)
	case Record:
		return appendMap(b, x)
	case []any:
		return appendList(b, x, appendValue)
	case []string:
		return appendList(b, x, func(b []byte, s string) ([]byte, error) { return appendString(b, s), nil })
	case json.RawMessage:
		// Valid JSON (bound checked it). json.Marshal would compact it
		// and escape <, >, & and U+2028/9: without any of those bytes it
		// is already what Marshal returns (request ids, most arguments).
		if rawAsIs(x) {
			return append(b, x...), nil
		}
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, enc...), nil
}

// appendList appends x's JSON, each element by each.
func appendList[T any](b []byte, x []T, each func([]byte, T) ([]byte, error)) ([]byte, error) {
	if x == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i, e := range x {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = each(b, e); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// appendMap appends m's JSON as encoding/json renders it: keys sorted.
func appendMap[M ~map[string]any](b []byte, m M) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	var inline [maxInlineKeys]string
	keys := inline[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return appendObject(b, keys, func(b []byte, k string) ([]byte, error) { return appendValue(b, m[k]) })
}

// rawAsIs reports whether json.Marshal would return the valid JSON raw
// unchanged: no whitespace to compact, nothing to HTML-escape, no byte
// outside ASCII (U+2028 and U+2029 are escaped too).
func rawAsIs(raw []byte) bool {
	for _, c := range raw {
		if c <= ' ' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendString appends k as a JSON string, as encoding/json would.
func appendString(b []byte, k string) []byte {
	for i := 0; i < len(k); i++ {
		if !plainJSON[k[i]] {
			q, _ := json.Marshal(k)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"')
}

// plainJSON holds the bytes encoding/json writes as they are inside a
// string: printable ASCII except the quote, the backslash and the HTML
// characters it escapes.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
