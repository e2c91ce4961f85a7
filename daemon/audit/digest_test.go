package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// TestDigester: a digest is HMAC-SHA256 of json.Marshal's bytes under the
// install's key, the same for equal values (canonical key order), and
// another under another key: whoever reads the log without the key
// cannot test guesses of a redacted value against it.
func TestDigester(t *testing.T) {
	keyA := bytes.Repeat([]byte{0xa5}, DigestKeySize)
	keyB := bytes.Repeat([]byte{0x5a}, DigestKeySize)
	a, err := NewDigester(keyA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDigester(keyB)
	if err != nil {
		t.Fatal(err)
	}
	plain := func(v any) string {
		enc, _ := json.Marshal(v)
		sum := sha256.Sum256(enc)
		return hex.EncodeToString(sum[:])
	}
	keyed := func(key []byte, v any) string {
		enc, _ := json.Marshal(v)
		m := hmac.New(sha256.New, key)
		m.Write(enc)
		return DigestPrefix + hex.EncodeToString(m.Sum(nil))
	}
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"short password", map[string]any{"password": "hunter2"}},
		{"nested, escapes Marshal makes", map[string]any{"b": []any{1.5, "x\u2028<&>"}, "a": nil}},
		{"raw bytes as sent", json.RawMessage(`{"z":1,"a":"<b>"}`)},
		{"nothing", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := a.Digest(tc.v)
			if want := keyed(keyA, tc.v); got != want {
				t.Errorf("Digest = %s, want HMAC of Marshal's bytes %s", got, want)
			}
			if strings.Contains(got, plain(tc.v)) {
				t.Errorf("Digest %s holds the plain SHA-256 of the value", got)
			}
			if b.Digest(tc.v) == got {
				t.Errorf("two keys gave the same digest %s", got)
			}
			if again := a.Digest(tc.v); again != got {
				t.Errorf("the same value gave %s, then %s", got, again)
			}
		})
	}
	if x, y := a.Digest(map[string]any{"b": 1, "a": 2}), a.Digest(map[string]any{"a": 2, "b": 1}); x != y {
		t.Errorf("digest depends on map order: %s, %s", x, y)
	}
	// Each user's digester: another key for another user, the same for
	// the same uid (it is derived, not random).
	v := map[string]any{"password": "hunter2"}
	if a.ForUser(1000).Digest(v) == a.ForUser(1001).Digest(v) || a.ForUser(1000).Digest(v) == a.Digest(v) {
		t.Error("two users' digests of one value are equal")
	}
	first, second := a.ForUser(1000), a.ForUser(1000)
	if first.Digest(v) != second.Digest(v) {
		t.Error("a user's digester changed")
	}
	if _, err := NewDigester(keyA[:16]); err == nil {
		t.Error("a 16-byte key was taken")
	}
}
