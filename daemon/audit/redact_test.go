package audit

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestArguments(t *testing.T) {
	args := map[string]any{
		"repo":     "acme/web",
		"token":    "abc",
		"nested":   map[string]any{"Password": "hunter2", "note": "ghp_abcdefghijklmnopqrstuvwxyz0123"},
		"card":     "4111 1111 1111 1111",
		"notcard":  "1234 5678 9012 3456",
		"jwt":      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
		"body":     strings.Repeat("a", 1000),
		"injected": "prefix-s3cr3t-value-suffix",
		"list":     []any{"sk-0123456789abcdefghijKLMN", 3},
		"prose":    "say hi; password=hunter9 and API_KEY: zz-top-77, then Bearer abc.def.ghi",
		"env":      `DB_PASSWORD=pw-one GITHUB_TOKEN=tok-two secret = "pw-three" Authorization: Basic dXNlcjpw`,
		"words":    "pass the salt, then a token gesture",
	}
	out, _ := json.Marshal(Arguments(args, ArgsRedacted, []string{"s3cr3t-value"}))
	s := string(out)
	for _, leaked := range []string{"abc\"", "hunter2", "ghp_", "4111", "eyJhbGci", "s3cr3t", "sk-0123", "hunter9", "zz-top", "abc.def", "pw-one", "tok-two", "pw-three", "dXNlcjpw"} {
		if strings.Contains(s, leaked) {
			t.Errorf("redacted arguments leak %q: %s", leaked, s)
		}
	}
	for _, kept := range []string{"acme/web", "1234 5678 9012 3456", "truncated 1000 bytes", "3", "say hi; password=[redacted]", "pass the salt, then a token gesture"} {
		if !strings.Contains(s, kept) {
			t.Errorf("redacted arguments lost %q: %s", kept, s)
		}
	}
	full, _ := json.Marshal(Arguments(args, ArgsFull, []string{"s3cr3t-value"}))
	if strings.Contains(string(full), "s3cr3t") || !strings.Contains(string(full), "hunter2") {
		t.Errorf("full mode: %s", full)
	}
	if Arguments(args, ArgsDigest, nil) != nil {
		t.Error("digest mode kept arguments")
	}
}

// TestPrefiltersAgreeWithPatterns: the cheap tests run before the
// redaction patterns never skip a pattern that would have matched,
// including Unicode case folds of the words (the Kelvin sign folds to k,
// the long s to s) and credentials inside prose.
func TestPrefiltersAgreeWithPatterns(t *testing.T) {
	inputs := []string{
		"", "message", "count", "path", "Password", "DB_PASSWD", "x-api-key", "apiKey", "API_KEY", "private_key",
		"Authorization", "auth", "oauth_state", "credentials", "Cookie", "sessionId", "session-id", "bearer",
		"api_\u212aey", "\u017fecret", "pa\u017f\u017f", "to\u212aen", "ſession_id", "\u212a",
		"hello world", "password=hunter2", "use PASSWORD: x", "api_key = 'abc'", "Bearer abcdef", "basic dXNlcjpwYXNz",
		"my \u017fecret=abc123", "Bearer\tabc", "BASIC   zzz", "the token:abcd", "tokens", "no secret here",
		"ghp_abcdefghijklmnopqrstuvwxyz", "github_pat_abcdefghijklmnopqrstuvwx", "sk-abcdefghijklmnopqrstuvwxyz",
		"xoxb-1234567890-abc", "AKIAABCDEFGHIJKLMNOP", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.abcdefghijklmno",
		"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "4111 1111 1111 1111", "4111111111111111",
		"4111-1111-1111-1112", "1234567890123", "  4111111111111111  ", "ghx_abc", "sk-short",
		strings.Repeat("a", 300) + " password=hunter2", strings.Repeat("é", 50) + " token=abcdef",
	}
	for _, s := range inputs {
		if got, want := secretName(s), secretKey.MatchString(s); got != want {
			t.Errorf("secretName(%q) = %v, pattern says %v", s, got, want)
		}
		want := inlineAuth.ReplaceAllString(inlineSecret.ReplaceAllString(s, "$1$2$3[redacted]"), "$1$2[redacted]")
		if got := scrubInline(s); got != want {
			t.Errorf("scrubInline(%q) = %q, patterns give %q", s, got, want)
		}
		tr := strings.TrimSpace(s)
		wantSecret := secretValue.MatchString(tr) || (digits.MatchString(tr) && luhn(tr))
		if got := looksSecret(s, nil); got != wantSecret {
			t.Errorf("looksSecret(%q) = %v, patterns say %v", s, got, wantSecret)
		}
	}
}

// TestScrubArgv: what a server's command lines carry of its secrets is
// not recorded; the heads of secrets it was not given are not tested
// against arguments (whoever chose the arguments would read them out,
// byte by byte: found by a red-team helper), nor are the heads of its own
// in arguments the kernel did not cut.
func TestScrubArgv(t *testing.T) {
	held := []string{"s3cr3t-v4lue-0123456789abcdef", "hunter2hunter2"}
	others := []string{"sk_live_51Hx9QzL2bT7vK4"}
	const cut = 31
	tests := []struct {
		name string
		argv []string
		want []string
	}{
		{"nothing secret", []string{"ls", "-l", "/work"}, []string{"ls", "-l", "/work"}},
		{"a held value inside", []string{"mysql", "-phunter2hunter2", "db"}, []string{"mysql", "[redacted]", "db"}},
		{"cut by the kernel after a held secret's head", []string{"tool", "--some-long-option=s3cr3t-v4lue"}, []string{"tool", "[redacted]"}},
		{"a held secret's head in an argument not cut", []string{"tool", "--key=s3cr3t-v4lue-012"}, []string{"tool", "--key=s3cr3t-v4lue-012"}},
		{"a head too short to tell", []string{"tool", "--some-long-option-name=s3cr3t"}, []string{"tool", "--some-long-option-name=s3cr3t"}},
		{"another secret whole", []string{"x", "sk_live_51Hx9QzL2bT7vK4"}, []string{"x", "[redacted]"}},
		{"another secret's head, cut", []string{"x", "xxxxxxxxxxxxxxxxxxxxxsk_live_51"}, []string{"x", "xxxxxxxxxxxxxxxxxxxxxsk_live_51"}},
		{"another secret's head, not cut", []string{"x", "Qsk_live_5", "Qsk_live_51"}, []string{"x", "Qsk_live_5", "Qsk_live_51"}},
		{"a credential written in", []string{"curl", "-H", "Authorization: Bearer abcdef"}, []string{"curl", "-H", "Authorization: Bearer [redacted]"}},
		{"password=", []string{"app", "--password=letmein"}, []string{"app", "--password=[redacted]"}},
		{"a token by its look", []string{"gh", "ghp_0123456789abcdefghijABCD"}, []string{"gh", "[redacted]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, a := range tt.argv {
				if len(a) > cut {
					t.Fatalf("argument %q is longer than the kernel keeps", a)
				}
			}
			if got := ScrubArgv(tt.argv, cut, held, others); !slices.Equal(got, tt.want) {
				t.Fatalf("ScrubArgv(%q) = %q, want %q", tt.argv, got, tt.want)
			}
		})
	}
}

// TestSecretsInKeysAreRedacted: a key is the caller's text as much as a
// value; a record or a question never carries a secret in one.
func TestSecretsInKeysAreRedacted(t *testing.T) {
	injected := []string{"s3cr3t-value"}
	args := map[string]any{
		"ghp_abcdefghijklmnopqrstuvwxyz0123": 1,
		"x-s3cr3t-value-y":                   "v",
		"password=hunter2":                   true,
		"[redacted key]":                     "a key that reads like a hidden one",
		"nested":                             map[string]any{"sk-0123456789abcdefghijKLMN": "n"},
		"repo":                               "acme/web",
	}
	for _, tc := range []struct {
		mode   string
		leaks  []string
		keeps  []string
		hidden int // keys renamed at the top level
	}{
		{ArgsRedacted, []string{"ghp_", "s3cr3t", "hunter2", "sk-0123"}, []string{`"repo":"acme/web"`, `"[redacted key 2]"`, `"a key that reads like a hidden one"`}, 4},
		// Full mode keeps what looks like a credential (the admin asked
		// for everything) but never a value mcpcage injected.
		{ArgsFull, []string{"s3cr3t"}, []string{"ghp_abcdefghijklmnopqrstuvwxyz0123", "password=hunter2", `"repo":"acme/web"`}, 2},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out := Arguments(args, tc.mode, injected).(map[string]any)
			b, _ := json.Marshal(out)
			for _, l := range tc.leaks {
				if strings.Contains(string(b), l) {
					t.Errorf("leaks %q: %s", l, b)
				}
			}
			for _, k := range tc.keeps {
				if !strings.Contains(string(b), k) {
					t.Errorf("lost %q: %s", k, b)
				}
			}
			if len(out) != len(args) {
				t.Errorf("%d keys, want %d (renamed keys collided): %s", len(out), len(args), b)
			}
			n := 0
			for k := range out {
				if strings.HasPrefix(k, redactedKey) {
					n++
				}
			}
			if n != tc.hidden {
				t.Errorf("%d hidden keys, want %d: %s", n, tc.hidden, b)
			}
			again, _ := json.Marshal(Arguments(args, tc.mode, injected))
			if string(again) != string(b) {
				t.Errorf("names depend on map order:\n%s\n%s", b, again)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args map[string]any
		want bool
	}{
		{"injected secret in a key", map[string]any{"a": map[string]any{"x-s3cr3t-value": 1}}, true},
		{"credential-shaped key", map[string]any{"ghp_abcdefghijklmnopqrstuvwxyz0123": 1}, true},
		{"inline credential in a key", map[string]any{"api_key=zz-top-77": 1}, true},
		{"plain keys", map[string]any{"path": "/tmp", "token_count": 3}, false},
	} {
		if _, changed := ValuesRedacted(tc.args, injected); changed != tc.want {
			t.Errorf("ValuesRedacted(%s) changed = %v, want %v", tc.name, changed, tc.want)
		}
	}
}

func TestScrubText(t *testing.T) {
	secrets := []string{"s3cr3t-value", "abc", "abcSUPERSECRETTOKEN"}
	for _, tc := range []struct{ in, want string }{
		{"plain words", "plain words"},
		{`input request "x-s3cr3t-value-y" asks for "sampling"`, `input request "x-[redacted]-y" asks for "sampling"`},
		{"ghp_abcdefghijklmnopqrstuvwxyz0123", "[redacted]"},
		{"token=hunter22 please", "token=[redacted] please"},
		{"zzabcSUPERSECRETTOKEN", "zz[redacted]"}, // "abc" is a secret too: the longer one goes whole
	} {
		if got := ScrubText(tc.in, secrets); got != tc.want {
			t.Errorf("ScrubText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Arguments with more values than a record keeps are not copied into it
// (the audit writer would encode, sort and cut them for every session's
// wait); small ones are, in every mode that keeps arguments.
func TestArgumentsPastTheValueBound(t *testing.T) {
	wide := map[string]any{}
	for i := range MaxArgumentValues + 1 {
		wide[fmt.Sprintf("k%d", i)] = i
	}
	deep := map[string]any{"rows": func() []any {
		rows := make([]any, 0, MaxArgumentValues)
		for i := range MaxArgumentValues {
			rows = append(rows, map[string]any{"n": i})
		}
		return rows
	}()}
	small := map[string]any{"path": "/tmp/x", "lines": []any{1.0, 2.0}}
	for _, tc := range []struct {
		name string
		args map[string]any
		mode string
		kept bool
	}{
		{"wide, redacted", wide, ArgsRedacted, false},
		{"wide, full", wide, ArgsFull, false},
		{"deep, redacted", deep, ArgsRedacted, false},
		{"small, redacted", small, ArgsRedacted, true},
		{"small, full", small, ArgsFull, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Arguments(tc.args, tc.mode, nil)
			s, isString := got.(string)
			if tc.kept == isString {
				t.Fatalf("Arguments = %.80v, want kept %v", got, tc.kept)
			}
			if !tc.kept && !strings.Contains(s, "args_digest covers them") {
				t.Fatalf("Arguments = %q, want it to say the digest covers them", s)
			}
		})
	}
}
