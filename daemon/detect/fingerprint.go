package detect

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"
)

// DefaultFingerprints is the capacity NewFingerprints uses when given
// none (max <= 0).
const DefaultFingerprints = 4096

// fingerprint is a token's keyed hash: HMAC-SHA256 truncated to 16 bytes.
type fingerprint [16]byte

// Fingerprints is a bounded set of keyed hashes of tokens, each with the
// origin the caller gave it: the raw tokens are never kept. The key is
// random per instance (crypto/rand), so hashes mean nothing outside it.
// It holds at most its capacity: adding to a full set evicts the token
// added (or re-added) longest ago. Safe for concurrent use.
type Fingerprints[O any] struct {
	key   [32]byte
	max   int
	hmacs sync.Pool // of hash.Hash keyed with key

	mu    sync.RWMutex
	m     map[fingerprint]*list.Element
	order *list.List // of *fpEntry[O], oldest first
}

type fpEntry[O any] struct {
	fp     fingerprint
	origin O
}

// FingerprintMatch is a fingerprinted token found in a text: where
// (text[Start:End]) and the origin it was added with.
type FingerprintMatch[O any] struct {
	Start, End int
	Origin     O
}

// NewFingerprints returns an empty set holding at most max tokens
// (max <= 0: DefaultFingerprints).
func NewFingerprints[O any](max int) *Fingerprints[O] {
	if max <= 0 {
		max = DefaultFingerprints
	}
	f := &Fingerprints[O]{max: max, m: map[fingerprint]*list.Element{}, order: list.New()}
	_, _ = rand.Read(f.key[:]) // never fails (crypto/rand)
	f.hmacs.New = func() any { return hmac.New(sha256.New, f.key[:]) }
	return f
}

func (f *Fingerprints[O]) hash(tok string) fingerprint {
	h := f.hmacs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(tok))
	var sum [sha256.Size]byte
	var fp fingerprint
	copy(fp[:], h.Sum(sum[:0]))
	f.hmacs.Put(h)
	return fp
}

// Add remembers token with origin. Adding a token already there replaces
// its origin with this one and makes it the newest. An empty token, or
// one longer than MaxToken, is ignored. Add takes any string, but Match
// only looks for what Tokens would return, so tokens should come from
// Tokens.
func (f *Fingerprints[O]) Add(token string, origin O) {
	if token == "" || len(token) > MaxToken {
		return
	}
	fp := f.hash(token)
	f.mu.Lock()
	defer f.mu.Unlock()
	if el, ok := f.m[fp]; ok {
		el.Value.(*fpEntry[O]).origin = origin
		f.order.MoveToBack(el)
		return
	}
	for f.order.Len() >= f.max {
		old := f.order.Front()
		delete(f.m, old.Value.(*fpEntry[O]).fp)
		f.order.Remove(old)
	}
	f.m[fp] = f.order.PushBack(&fpEntry[O]{fp: fp, origin: origin})
}

// Len returns the number of tokens held.
func (f *Fingerprints[O]) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.order.Len()
}

func (f *Fingerprints[O]) lookup(fp fingerprint) (O, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	el, ok := f.m[fp]
	if !ok {
		var zero O
		return zero, false
	}
	return el.Value.(*fpEntry[O]).origin, true
}

// Match returns the tokens of text that were added before, with their
// origins and where they occur, sorted by Start and non-overlapping, at
// most MaxTokens, from the first MaxScan bytes of text.
//
// Candidates are the runs Tokens considers, whole; and, for a run holding
// '/', every sequence of consecutive '/'-separated segments (at most
// maxSegments of them per run, otherwise single segments only), so that a
// remembered token is found inside a URL or path
// ("https://x.example/KEY/y"). Only candidates that qualify as tokens
// are hashed (at most maxMatchHashes per call). A token is found only
// byte for byte: a re-encoded (base64, hex, URL-escaped), split or
// case-changed copy is not.
func (f *Fingerprints[O]) Match(text string) []FingerprintMatch[O] {
	out, _ := f.MatchAll(text)
	return out
}

// MatchAll is Match that also reports whether it looked at every
// candidate of text: false when text was longer than MaxScan, or the
// MaxTokens or hash budget ran out first (a remembered token may then
// be in text unseen).
func (f *Fingerprints[O]) MatchAll(text string) (_ []FingerprintMatch[O], complete bool) {
	if f.Len() == 0 {
		return nil, true
	}
	complete = true
	if len(text) > MaxScan {
		text, complete = text[:MaxScan], false
	}
	var out []FingerprintMatch[O]
	hashes := 0
	try := func(s, e int) bool {
		tok := text[s:e]
		if hashes >= maxMatchHashes || !qualifies(tok) {
			return false
		}
		hashes++
		if o, ok := f.lookup(f.hash(tok)); ok {
			out = append(out, FingerprintMatch[O]{Start: s, End: e, Origin: o})
			return true
		}
		return false
	}
	var segs [][2]int
	tokenRuns(text, func(s, e int) bool {
		if len(out) >= MaxTokens || hashes >= maxMatchHashes {
			complete = false
			return false
		}
		if e-s < MinToken || e-s > MaxToken {
			return true
		}
		if try(s, e) || !containsByte(text[s:e], '/') {
			return true
		}
		segs = segs[:0]
		for i := s; i <= e; {
			j := i
			for j < e && text[j] != '/' {
				j++
			}
			segs = append(segs, [2]int{i, j})
			i = j + 1
		}
		width := len(segs) - 1 // the whole run was tried
		if len(segs) > maxSegments {
			width = 1
		}
		for a := 0; a < len(segs) && len(out) < MaxTokens; {
			next := a + 1
			for w := min(width, len(segs)-a); w >= 1; w-- {
				b := a + w - 1
				if segs[b][1]-segs[a][0] < MinToken {
					continue
				}
				if try(segs[a][0], segs[b][1]) {
					next = b + 1
					break
				}
			}
			a = next
		}
		if hashes >= maxMatchHashes || len(out) >= MaxTokens {
			complete = false
		}
		return true
	})
	return out, complete
}
