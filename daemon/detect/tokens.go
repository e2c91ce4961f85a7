package detect

import "math"

// Bounds and thresholds of Tokens.
const (
	// MinToken and MaxToken bound a token's length in bytes.
	MinToken = 20
	MaxToken = 4096
	// MaxTokens is the most tokens Tokens returns for one text (the
	// first ones), and the most matches Fingerprints.Match returns.
	MaxTokens = 256
	// MinEntropy is the least Shannon entropy of a token, in bits per
	// byte (over its byte distribution).
	MinEntropy = 3.5
	// maxWordy is the largest share of a token's bytes that may sit in
	// runs of 5 or more lower-case letters (words: paths, identifiers).
	maxWordy = 0.4
	// maxSegments bounds the '/'-separated segments of a run that Match
	// combines (a run with more is matched whole and by single segment).
	maxSegments = 16
	// maxMatchHashes bounds the candidates one Match call hashes.
	maxMatchHashes = 4096
)

// isTokenByte: the bytes of a token run, [A-Za-z0-9+/_.-]. '.' only
// counts between two other token bytes, '=' only as up to two bytes of
// trailing padding.
func isTokenByte(b byte) bool {
	return isAlnum(b) || b == '+' || b == '/' || b == '_' || b == '-' || b == '.'
}

// tokenRuns calls fn with each run of token bytes of t (maximal, with
// leading and trailing dots trimmed and padding '=' added), until fn
// returns false.
func tokenRuns(t string, fn func(s, e int) bool) {
	for i := 0; i < len(t); {
		if !isTokenByte(t[i]) {
			i++
			continue
		}
		s := i
		e := span(t, i, isTokenByte)
		i = e
		for s < e && t[s] == '.' {
			s++
		}
		trimmed := false
		for e > s && t[e-1] == '.' {
			e--
			trimmed = true
		}
		if !trimmed {
			k := 0
			for k < 2 && e+k < len(t) && t[e+k] == '=' {
				k++
			}
			if k > 0 && (e+k == len(t) || (!isTokenByte(t[e+k]) && t[e+k] != '=')) {
				e += k
				i = e
			}
		}
		if e > s && !fn(s, e) {
			return
		}
	}
}

// qualifies reports whether tok is worth fingerprinting: MinToken to
// MaxToken bytes, at least two of lower-case letters, capitals and digits,
// entropy at least MinEntropy, and less than maxWordy of it in runs of 5+
// lower-case letters.
func qualifies(tok string) bool {
	n := len(tok)
	if n < MinToken || n > MaxToken {
		return false
	}
	var hist [128]uint16
	var lower, upper, digit bool
	wordy, run := 0, 0
	for i := 0; i < n; i++ {
		b := tok[i]
		if b >= 128 {
			return false
		}
		hist[b]++
		switch {
		case isLower(b):
			lower = true
			run++
			continue
		case isUpper(b):
			upper = true
		case isDigit(b):
			digit = true
		}
		if run >= 5 {
			wordy += run
		}
		run = 0
	}
	if run >= 5 {
		wordy += run
	}
	classes := 0
	for _, ok := range []bool{lower, upper, digit} {
		if ok {
			classes++
		}
	}
	if classes < 2 || float64(wordy) >= maxWordy*float64(n) {
		return false
	}
	return entropy(&hist, n) >= MinEntropy
}

// entropy is the Shannon entropy in bits per byte of n bytes with
// histogram h.
func entropy(h *[128]uint16, n int) float64 {
	fn := float64(n)
	sum := 0.0
	for _, c := range h {
		if c > 0 {
			fc := float64(c)
			sum += fc * math.Log2(fc)
		}
	}
	return math.Log2(fn) - sum/fn
}

// Tokens returns the high-entropy substrings of text worth fingerprinting,
// in order of appearance, each once, at most MaxTokens, from the first
// MaxScan bytes of text.
//
// A token is a maximal run of [A-Za-z0-9+/_.-] (with leading and trailing
// dots dropped, and up to two '=' of base64 padding at its end: "a=b" is
// two runs) that qualifies: MinToken (20) to MaxToken (4096) bytes; at
// least two of the classes lower-case letters, capitals and digits;
// Shannon entropy at least MinEntropy (3.5) bits per byte; and less than
// 40% of it in runs of five or more lower-case letters (which rejects
// file paths, URLs made of words and camelCase identifiers). When a run
// holds '/' its '/'-separated segments that qualify on their own are
// tokens too, so that a token inside a path or URL is remembered alone.
//
// So: random API keys and passwords of 20+ characters, base64 blobs up to
// 4 KiB, JWTs (one token: '.' joins), a 40-hex git SHA and most random
// UUIDs are tokens; English text, a run of one repeated character, plain
// numbers, hostnames, paths and identifiers made of words are not. ':',
// '=', '%', '@', quotes and spaces split runs, so "user:password" gives
// two runs and URL-encoded values are split at each escape.
func Tokens(text string) []string {
	if len(text) > MaxScan {
		text = text[:MaxScan]
	}
	var out []string
	var seen map[string]bool
	emit := func(tok string) bool {
		if seen == nil {
			seen = map[string]bool{}
		}
		if !seen[tok] {
			seen[tok] = true
			out = append(out, tok)
		}
		return len(out) < MaxTokens
	}
	tokenRuns(text, func(s, e int) bool {
		run := text[s:e]
		if len(run) < MinToken || len(run) > MaxToken {
			return true
		}
		if qualifies(run) && !emit(run) {
			return false
		}
		if !containsByte(run, '/') {
			return true
		}
		for i := 0; i < len(run); {
			j := i
			for j < len(run) && run[j] != '/' {
				j++
			}
			seg := run[i:j]
			if len(seg) >= MinToken && seg != run && seg[0] != '.' && seg[len(seg)-1] != '.' && qualifies(seg) && !emit(seg) {
				return false
			}
			i = j + 1
		}
		return true
	})
	return out
}

func containsByte(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}
