package audit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// DigestPrefix starts every keyed digest a record carries (args_digest,
// prompt_digest).
const DigestPrefix = "hmac-sha256:"

// DigestKeySize is the length of a Digester's key.
const DigestKeySize = 32

// Digester makes the digests records carry of what a caller sent
// (arguments, prompts): HMAC-SHA256 of the value's JSON encoding under a
// key of the install's, kept by the daemon and never recorded. A plain
// hash would undo redaction: whoever reads the log could find a short
// password that redaction hid by hashing guesses. Under the key, equal
// values still have equal digests (the records can be correlated), and
// only the key's holder (root, through the daemon) can tell whether a
// given value is the one recorded. Safe for concurrent use.
type Digester struct {
	key  []byte
	macs sync.Pool // of hash.Hash keyed with the key
	bufs sync.Pool // of *[]byte: encodings, up to maxPooledDigest bytes
}

// maxPooledDigest bounds the encodings a Digester keeps between calls.
const maxPooledDigest = 64 << 10

// NewDigester returns a Digester keyed with key (DigestKeySize bytes).
func NewDigester(key []byte) (*Digester, error) {
	if len(key) != DigestKeySize {
		return nil, fmt.Errorf("audit digest key is %d bytes, want %d", len(key), DigestKeySize)
	}
	k := append([]byte(nil), key...)
	d := &Digester{key: k}
	d.macs.New = func() any { return hmac.New(sha256.New, k) }
	d.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	return d, nil
}

// ForUser returns the digester of one user's records: keyed with a key
// derived from this one and uid (HMAC-SHA256 of a label and the uid).
// One key for every user would let a reader of every user's records (an
// admin_group member) make calls of their own with guessed values and
// find another user's digest among their own; under a key per user,
// digests correlate within one user's records only.
func (d *Digester) ForUser(uid uint32) *Digester {
	m := hmac.New(sha256.New, d.key)
	_, _ = fmt.Fprintf(m, "mcpcage audit digest key of uid %d", uid) // a hash: cannot fail
	u, _ := NewDigester(m.Sum(nil))                                  // DigestKeySize bytes: cannot fail
	return u
}

// NewDigestKey returns a fresh random key.
func NewDigestKey() ([]byte, error) {
	k := make([]byte, DigestKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, errors.New("no randomness for the audit digest key: " + err.Error())
	}
	return k, nil
}

// Digest is the keyed digest of v's JSON encoding (json.Marshal's bytes;
// a json.RawMessage's bytes as Marshal would give them).
func (d *Digester) Digest(v any) string {
	bp := d.bufs.Get().(*[]byte)
	b, err := appendValue((*bp)[:0], v)
	if err != nil {
		b = b[:0] // unencodable: the digest of nothing, as before keys
	}
	out := d.Bytes(b)
	if cap(b) <= maxPooledDigest {
		*bp = b
		d.bufs.Put(bp)
	}
	return out
}

// Bytes is the keyed digest of b as it is (the bytes an agent got).
func (d *Digester) Bytes(b []byte) string {
	m := d.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(b)
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	d.macs.Put(m)
	var out [len(DigestPrefix) + 2*sha256.Size]byte
	copy(out[:], DigestPrefix)
	hex.Encode(out[len(DigestPrefix):], sum[:])
	return string(out[:])
}
