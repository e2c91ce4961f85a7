package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Argument modes ([daemon] audit_arguments).
const (
	ArgsDigest   = "digest"   // only the arguments' keyed digest (Digester)
	ArgsRedacted = "redacted" // secrets replaced, long strings truncated
	ArgsFull     = "full"
)

// maxRedactedString is the longest string kept in redacted arguments
// (tighter than MaxString, which bounds every record).
const maxRedactedString = 256

var (
	secretKey = regexp.MustCompile(`(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|auth|credential|cookie|session[_-]?id|bearer)`)
	// Values that look like credentials whatever their key.
	secretValue = regexp.MustCompile(`^(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|sk-[A-Za-z0-9_-]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*)$`)
	digits      = regexp.MustCompile(`^[0-9][0-9 -]{11,22}[0-9]$`)
	// A credential written into prose: "password=hunter2", "DB_PASSWORD: x",
	// "api_key = 'x'", and "Bearer x" or "Basic x".
	inlineSecret = regexp.MustCompile(`(?i)(pass(?:word|wd|phrase)?|secret|token|api[_-]?key)(\s*[=:]\s*)(["']?)([^\s,;&"']{3,})`)
	inlineAuth   = regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{3,})`)
)

// scrubInline replaces the values of credentials written into a string:
// "password=hunter2" becomes "password=[redacted]", and so do
// "GITHUB_TOKEN: x", "secret = 'x'" and "Bearer x". It errs toward
// redacting: a false positive costs a word of prose, a miss costs a
// credential.
func scrubInline(s string) string {
	if mayHold(s, inlineSecretWords) {
		s = inlineSecret.ReplaceAllString(s, "$1$2$3[redacted]")
	}
	if mayHold(s, inlineAuthWords) {
		s = inlineAuth.ReplaceAllString(s, "$1$2[redacted]")
	}
	return s
}

// The words without which the case-insensitive patterns above cannot
// match (each alternative contains one of its pattern's words).
var (
	secretKeyWords    = []string{"pass", "secret", "token", "api", "key", "auth", "credential", "cookie", "session", "bearer"}
	inlineSecretWords = []string{"pass", "secret", "token", "api"}
	inlineAuthWords   = []string{"bearer", "basic"}
)

// mayHold is the cheap test run before a case-insensitive pattern whose
// every match contains one of words (lower-case ASCII): false only when
// s, pure ASCII, contains none of them in any case, so the pattern
// cannot match. A string with other bytes may hold a word in a Unicode
// fold of its letters (the Kelvin sign for k, the long s for s), which
// only the pattern knows: mayHold reports true for it.
func mayHold(s string, words []string) bool {
	var low [256]byte
	if len(s) > len(low) {
		return true // long values: the pattern's own scan is as cheap
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return true
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	for _, w := range words {
		if bytes.Contains(low[:len(s)], []byte(w)) {
			return true
		}
	}
	return false
}

// secretName reports whether a map key names a secret (secretKey).
func secretName(k string) bool {
	return mayHold(k, secretKeyWords) && secretKey.MatchString(k)
}

// Arguments renders call arguments for the audit per mode; secrets holds
// values injected into servers, which never appear.
func Arguments(args map[string]any, mode string, secrets []string) any {
	if mode == ArgsDigest {
		return nil
	}
	if n := countValues(args, MaxArgumentValues); n > MaxArgumentValues {
		// Copied, encoded, sorted and then cut to the record's 64 KiB
		// on the audit writer, which every session waits for: 4 million
		// keys in one denied call held every other user's records for
		// 11 s (found by a red-team helper). The digest beside them
		// covers them.
		return fmt.Sprintf("[not kept: more than %d values; args_digest covers them]", MaxArgumentValues)
	}
	switch mode {
	case ArgsFull:
		return scrubInjected(args, secrets)
	}
	return redact(args, secrets)
}

func redact(v any, secrets []string) any {
	switch x := v.(type) {
	case map[string]any:
		keys := newKeyNames(x, func(k string) bool { return looksSecret(k, secrets) || scrubInline(k) != k })
		out := make(map[string]any, len(x))
		for k, val := range x {
			if secretName(k) {
				out[keys.of(k)] = "[redacted]"
				continue
			}
			out[keys.of(k)] = redact(val, secrets)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = redact(val, secrets)
		}
		return out
	case string:
		if looksSecret(x, secrets) {
			return "[redacted]"
		}
		x = scrubInline(x)
		if len(x) > maxRedactedString {
			n := maxRedactedString
			for n > maxRedactedString-utf8.UTFMax && !utf8.RuneStart(x[n]) {
				n-- // cut on a rune boundary
			}
			return x[:n] + "…[truncated " + itoa(len(x)) + " bytes]"
		}
		return x
	}
	return v
}

// LooksLikeCredential reports whether an environment variable or argument
// named key with value v looks like it holds a credential: a key the
// redaction hides (TOKEN, API_KEY, PASSWORD, ...) with a value, or a value
// that carries one whatever its key (ValueLooksLikeCredential).
func LooksLikeCredential(key, v string) bool {
	return v != "" && secretName(key) || ValueLooksLikeCredential(v)
}

// ValueLooksLikeCredential reports whether a value carries a credential
// whatever it is named: a known token format (ghp_..., sk-..., a JWT, a
// private key), an HTTP header holding one (Notion's
// OPENAPI_MCP_HEADERS='{"Authorization": "Bearer ntn_..."}'), or a
// connection string with a password (postgres://user:pass@host/db,
// "host=h user=u password=p").
func ValueLooksLikeCredential(v string) bool {
	if looksSecret(v, nil) || credentialInText.MatchString(v) {
		return true
	}
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == ';' || r == '"' || r == '\'' }) {
		if !strings.Contains(f, "://") {
			continue
		}
		if u, err := url.Parse(f); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				return true
			}
		}
	}
	return false
}

// credentialInText: an Authorization header or bearer token, or a
// password given as key=value, anywhere in a value.
var credentialInText = regexp.MustCompile(`(?i)(\bauthorization\b["']?\s*[:=]|\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}|\b(password|passwd|pwd)\s*=\s*[^\s;&'"]+)`)

func looksSecret(s string, secrets []string) bool {
	t := strings.TrimSpace(s)
	if mayBeCredential(t) && secretValue.MatchString(t) {
		return true
	}
	if len(t) >= 13 && len(t) <= 24 && '0' <= t[0] && t[0] <= '9' && digits.MatchString(t) && luhn(t) {
		return true // a card number
	}
	return holdsAny(s, secrets)
}

// credentialPrefixes start every match of secretValue.
var credentialPrefixes = []string{"gh", "github_pat_", "sk-", "xox", "AKIA", "eyJ", "-----BEGIN "}

// mayBeCredential is the cheap test run before secretValue: false when t
// starts with none of the prefixes every match starts with.
func mayBeCredential(t string) bool {
	for _, p := range credentialPrefixes {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return false
}

func luhn(s string) bool {
	sum, n, double := 0, 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c == ' ' || c == '-' {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
		n++
	}
	return n >= 13 && n <= 19 && sum%10 == 0
}

func scrubInjected(v any, secrets []string) any {
	switch x := v.(type) {
	case map[string]any:
		keys := newKeyNames(x, func(k string) bool { return holdsAny(k, secrets) })
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[keys.of(k)] = scrubInjected(val, secrets)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = scrubInjected(val, secrets)
		}
		return out
	case string:
		if holdsAny(x, secrets) {
			return "[redacted]"
		}
	}
	return v
}

// ScrubText is a free text a peer chose (a server's name for an input it
// asks for, a reason that quotes it) as a record or a log line may carry
// it: each secret in it, and each credential written into it, replaced.
func ScrubText(s string, secrets []string) string {
	if t := strings.TrimSpace(s); mayBeCredential(t) && secretValue.MatchString(t) {
		return "[redacted]"
	}
	if holdsAny(s, secrets) {
		// The longest first: one that holds another must not be left in
		// part (found by a review helper).
		long := slices.Clone(secrets)
		slices.SortFunc(long, func(a, b string) int { return len(b) - len(a) })
		for _, sec := range long {
			if sec != "" {
				s = strings.ReplaceAll(s, sec, "[redacted]")
			}
		}
	}
	return scrubInline(s)
}

// holdsAny reports whether s contains one of secrets.
func holdsAny(s string, secrets []string) bool {
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// keyNames renames the keys of one object that a record must not carry
// as they are: a key is as much the caller's text as a value, and an
// agent (or a server's prompt steering it) can put a token in either.
// Hidden keys become "[redacted key]", "[redacted key 2]", ... in the
// order of the hidden keys themselves, so two of them never collide and
// the names depend on nothing but the object; a key that already reads
// like one of those names is renamed too, so a record never shows two
// keys of one name.
type keyNames map[string]string

func newKeyNames(obj map[string]any, hide func(string) bool) keyNames {
	var hidden []string
	for k := range obj {
		if hide(k) || strings.HasPrefix(k, redactedKey) {
			hidden = append(hidden, k)
		}
	}
	if hidden == nil {
		return nil
	}
	slices.Sort(hidden)
	names := make(keyNames, len(hidden))
	for i, k := range hidden {
		if i == 0 {
			names[k] = redactedKey + "]"
		} else {
			names[k] = redactedKey + " " + itoa(i+1) + "]"
		}
	}
	return names
}

// redactedKey starts the name a hidden key is given.
const redactedKey = "[redacted key"

// of is the name key is recorded under.
func (n keyNames) of(k string) string {
	if r, ok := n[k]; ok {
		return r
	}
	return k
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// ValuesRedacted is args with only the values that are secrets replaced:
// those holding a secret mcpcage injects into servers, and those that
// look like a credential or a card number. Unlike the audit's
// "redacted" mode no value is hidden for its name, and none is cut: a
// person approving a request must see every value it carries.
// changed reports whether anything was replaced, or whether a key is a
// secret in the same sense (keys are never renamed: such arguments are
// not to be shown at all).
func ValuesRedacted(args map[string]any, secrets []string) (_ any, changed bool) {
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(x))
			for k, val := range x {
				if looksSecret(k, secrets) || scrubInline(k) != k {
					changed = true // a name can carry a secret as well as a value
				}
				out[k] = walk(val)
			}
			return out
		case []any:
			out := make([]any, len(x))
			for i, val := range x {
				out[i] = walk(val)
			}
			return out
		case string:
			if looksSecret(x, secrets) {
				changed = true
				return "[redacted: a secret]"
			}
			if y := scrubInline(x); y != x { // "password=..." inside a longer text
				changed = true
				return y
			}
		}
		return v
	}
	return walk(args), changed
}

// minSecretPrefix is the shortest head of a held secret that ScrubArgv
// takes for the secret when a cut argument ends with it.
const minSecretPrefix = 8

// ScrubArgv is argv (the kernel's copy of a program's first arguments,
// each cut at cut bytes when longer; 0: never cut) as a record may carry
// it: an argument that holds one of the secrets, or looks like a
// credential, is "[redacted]", and credentials written into one
// ("--password=x", "Bearer x") are scrubbed. A server passes what it was
// given on the command lines it runs (mysql -pSECRET, curl -H
// "Authorization: Bearer $T").
//
// held are the values the program was given itself: an argument the
// kernel cut (exactly cut bytes long) that ends with the first bytes of
// one of them (minSecretPrefix or more) is taken for it. Only those: the
// test answers, of an argument whoever runs the program chooses, whether
// it ends with the head of a secret, one byte at a time; tried against
// secrets the program was not given, it read the administrator's secrets
// out of the audit log to any user who could add a server (found by a
// red-team helper). Of others only a whole value is redacted, which
// tells nothing to someone who does not know it already.
func ScrubArgv(argv []string, cut int, held, others []string) []string {
	var out []string
	for i, a := range argv {
		s := a
		if looksSecret(a, held) || looksSecret(a, others) || (cut > 0 && len(a) == cut && endsWithSecretHead(a, held)) {
			s = "[redacted]"
		} else {
			s = scrubInline(a)
		}
		if s != a && out == nil {
			out = append(make([]string, 0, len(argv)), argv[:i]...)
		}
		if out != nil {
			out = append(out, s)
		}
	}
	if out == nil {
		return argv
	}
	return out
}

// endsWithSecretHead reports whether a ends with the first bytes (at
// least minSecretPrefix of them) of one of secrets.
func endsWithSecretHead(a string, secrets []string) bool {
	for _, sec := range secrets {
		for k := min(len(sec), len(a)); k >= minSecretPrefix; k-- {
			if strings.HasSuffix(a, sec[:k]) {
				return true
			}
		}
	}
	return false
}

// MaxArgumentValues is the most values (members and elements, at any
// depth) of arguments a record keeps; past it only their digest.
const MaxArgumentValues = 4096

// countValues counts v's values, members and elements at any depth, up
// to just past limit.
func countValues(v any, limit int) int {
	n := 0
	var walk func(v any) bool
	walk = func(v any) bool {
		n++
		if n > limit {
			return false
		}
		switch x := v.(type) {
		case map[string]any:
			for _, e := range x {
				if !walk(e) {
					return false
				}
			}
		case []any:
			for _, e := range x {
				if !walk(e) {
					return false
				}
			}
		}
		return true
	}
	walk(v)
	return n
}
