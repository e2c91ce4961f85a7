package ask

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// In the 2026-07-28 era the daemon answers a call it must ask about with
// an input_required result, and the client retries the call with the
// user's answer and the result's requestState echoed. The state is the
// daemon's own and sealed (HMAC-SHA256 under a key made at start): the
// client cannot forge it, alter what it binds, use it on another
// session, another request or after it expires, or use it twice.

// StatePrefix starts every requestState mcpcage makes; the caged server's
// own states never pass for one (they would fail the seal).
const StatePrefix = "mcpcage.1."

// State is what a sealed requestState binds.
type State struct {
	Session string `json:"s"`
	User    string `json:"u"`
	Agent   string `json:"a"`
	Server  string `json:"v"`
	Method  string `json:"m"`
	Digest  string `json:"d"` // of the request's target and arguments (see RequestDigest)
	Pin     string `json:"p"` // the definition of the tool the question showed
	Key     string `json:"k"` // the input request's key
	Expires int64  `json:"e"` // unix milliseconds
	Nonce   string `json:"n"`
}

// Sealer seals and opens states, and remembers the ones used.
type Sealer struct {
	key [32]byte

	mu   sync.Mutex
	used map[string]int64 // nonce -> expiry (unix ms), until then
}

// maxUsed bounds the used nonces remembered; past it the oldest expire
// early by refusing new seals until some expire (see Seal).
const maxUsed = 65536

// NewSealer makes a sealer with a fresh random key: states do not outlive
// the daemon.
func NewSealer() *Sealer {
	s := &Sealer{used: map[string]int64{}}
	if _, err := rand.Read(s.key[:]); err != nil {
		panic("ask: no randomness for the requestState key: " + err.Error())
	}
	return s
}

// Seal returns st sealed, with a fresh nonce.
func (s *Sealer) Seal(st State) string {
	var n [12]byte
	_, _ = rand.Read(n[:])
	st.Nonce = base64.RawURLEncoding.EncodeToString(n[:])
	body, _ := json.Marshal(st)
	enc := base64.RawURLEncoding.EncodeToString(body)
	return StatePrefix + enc + "." + base64.RawURLEncoding.EncodeToString(s.mac(enc))
}

func (s *Sealer) mac(enc string) []byte {
	m := hmac.New(sha256.New, s.key[:])
	m.Write([]byte(StatePrefix))
	m.Write([]byte(enc))
	return m.Sum(nil)
}

// Errors of Open, each a reason a retried call is refused.
var (
	ErrForged  = errors.New("the requestState was not made by this mcpcaged (altered, forged, or from before a restart)")
	ErrExpired = errors.New("the question expired before the answer came back")
	ErrReused  = errors.New("the requestState was already used")
)

// Open checks a requestState and returns what it binds; the caller then
// compares every bound field with the retried request, and calls Use.
func (s *Sealer) Open(sealed string, now time.Time) (State, error) {
	rest, ok := strings.CutPrefix(sealed, StatePrefix)
	if !ok {
		return State{}, ErrForged
	}
	enc, tag, ok := strings.Cut(rest, ".")
	if !ok {
		return State{}, ErrForged
	}
	got, err := base64.RawURLEncoding.DecodeString(tag)
	if err != nil || !hmac.Equal(got, s.mac(enc)) {
		return State{}, ErrForged
	}
	body, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return State{}, ErrForged
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil {
		return State{}, ErrForged
	}
	if now.UnixMilli() >= st.Expires {
		return st, ErrExpired
	}
	return st, nil
}

// Use marks the state's nonce used; false when it already was.
func (s *Sealer) Use(st State, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := now.UnixMilli()
	if len(s.used) >= maxUsed {
		for n, exp := range s.used {
			if exp <= ms {
				delete(s.used, n)
			}
		}
	}
	if _, seen := s.used[st.Nonce]; seen {
		return false
	}
	if len(s.used) >= maxUsed {
		return false // full of live nonces: refuse rather than forget one
	}
	s.used[st.Nonce] = st.Expires
	return true
}

// Mismatch names the first field of st that differs from want (the
// retried request as the daemon reads it), "" when all match. Nonce,
// Expires and Key are not compared.
func (st State) Mismatch(want State) string {
	for _, f := range []struct{ name, got, want string }{
		{"session", st.Session, want.Session}, {"user", st.User, want.User}, {"agent", st.Agent, want.Agent},
		{"server", st.Server, want.Server}, {"method", st.Method, want.Method}, {"request", st.Digest, want.Digest},
		{"tool definition", st.Pin, want.Pin},
	} {
		if f.got != f.want {
			return fmt.Sprintf("the requestState was made for another %s", f.name)
		}
	}
	return ""
}

// RequestOfBytes is Request of a request whose arguments were not
// decoded (too many values): their bytes as sent. It never equals a
// Request.
func RequestOfBytes(method, kind, name string, raw []byte) []byte {
	b, _ := json.Marshal(struct {
		M, K, N string
		Raw     []byte
	}{method, kind, name, raw})
	return b
}

// Request is what a state's digest (and an "allow once") binds: the
// method, the target and the arguments as the daemon decided them. The
// caller digests it, keyed: the digest is kept in consents that
// administrators can read, and a plain hash of arguments would let them
// test guesses of what redaction hid.
func Request(method, kind, name string, args map[string]any) []byte {
	b, _ := json.Marshal(struct {
		M, K, N string
		A       map[string]any
	}{method, kind, name, args})
	return b
}

// RequestDigest is a plain digest of Request, for tests and for callers
// with no key.
func RequestDigest(method, kind, name string, args map[string]any) string {
	sum := sha256.Sum256(Request(method, kind, name, args))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
