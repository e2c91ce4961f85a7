package detect

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const (
	randomB64 = "q8Vz3LkP0xW7mR2tN9bJ4sY6hF1cD5gA+/eUiOoK" // 40 random base64 characters
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	gitSHA    = "e83c5163316f89bfbde7d9ab23ca2e25604af290"
)

func TestTokens(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"random base64", "token: " + randomB64 + "\n", []string{randomB64, randomB64[:33]}}, // and its first '/'-segment
		{"english", "the quick brown fox jumps over the lazy dog", nil},
		{"repeated char", "aaaaaaaaaaaaaaaaaaaaaaaaa", nil},
		{"repeated pair", strings.Repeat("a1", 20), nil},
		{"short", "k8Vz3LkP0xW7mR2tN9b", nil}, // 19
		{"git sha", "commit " + gitSHA, []string{gitSHA}},
		{"uuid", "id=3f2b9c4e-8a1d-4f6b-b7e2-9c0d5a1e6f3b", []string{"3f2b9c4e-8a1d-4f6b-b7e2-9c0d5a1e6f3b"}},
		{"aws example key", "AKIAIOSFODNN7EXAMPLE", []string{"AKIAIOSFODNN7EXAMPLE"}},
		{"aws secret with slashes", "secret=" + awsSecret, []string{awsSecret}},
		{"base64 padding kept", "data " + randomB64[:38] + "==,", []string{randomB64[:38] + "==", randomB64[:33]}},
		{"key=value split", "api_key=" + randomB64, []string{randomB64, randomB64[:33]}},
		{"colon splits", "user:" + randomB64, []string{randomB64, randomB64[:33]}},
		{"jwt is one token", "Bearer " + jwtExample, []string{jwtExample}},
		{"trailing dot dropped", "see " + randomB64 + ".", []string{randomB64, randomB64[:33]}},
		{"segment of a url", "https://api.example.com/v1/files/" + randomB64[:20] + "Zq9/raw",
			[]string{"//api.example.com/v1/files/" + randomB64[:20] + "Zq9/raw", randomB64[:20] + "Zq9"}},
		{"path", "/usr/local/lib/python3.11/site-packages/numpy/core/include", nil},
		{"camel case identifier", "getUserAccountInformationFromDatabase", nil},
		{"upper snake constant", "MAX_BUFFER_SIZE_DEFAULT_VALUE", nil},
		{"hostname", "subdomain.example-company.com", nil},
		{"long number", "12345678901234567890123", nil},
		{"timestamp", "2024-05-01T12:34:56.789Z", nil},
		{"duplicates once", randomB64 + " " + randomB64, []string{randomB64, randomB64[:33]}},
		{"non-ascii splits", "é" + randomB64 + "é", []string{randomB64, randomB64[:33]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Tokens(tt.text); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Tokens(%q)\n got %q\nwant %q", tt.text, got, tt.want)
			}
		})
	}
}

func TestTokensBound(t *testing.T) {
	var b strings.Builder
	for i := 0; i < MaxTokens+100; i++ {
		fmt.Fprintf(&b, "%s%04d ", randomB64[:30], i)
	}
	if n := len(Tokens(b.String())); n != MaxTokens {
		t.Fatalf("%d tokens, want %d", n, MaxTokens)
	}
	if got := Tokens(strings.Repeat("x", MaxToken) + "Y1" + randomB64); got != nil {
		t.Fatalf("a run longer than MaxToken gave %q", got)
	}
}

func TestFingerprints(t *testing.T) {
	f := NewFingerprints[string](0)
	if f.Len() != 0 || f.Match("anything "+randomB64) != nil {
		t.Fatal("a new set is not empty")
	}
	for _, tok := range Tokens("result: " + randomB64 + " and sha " + gitSHA) {
		f.Add(tok, "result#1")
	}
	f.Add(awsSecret, "result#2")
	f.Add("", "ignored")
	if f.Len() != 4 { // randomB64, its first '/'-segment, gitSHA, awsSecret
		t.Fatalf("Len = %d, want 4", f.Len())
	}
	type m = FingerprintMatch[string]
	tests := []struct {
		name string
		text string
		want []m
	}{
		{"verbatim", randomB64, []m{{0, 40, "result#1"}}},
		{"in an argument", `send "` + randomB64 + `" to x`, []m{{6, 46, "result#1"}}},
		{"two", gitSHA + " " + awsSecret, []m{{0, 40, "result#1"}, {41, 81, "result#2"}}},
		{"query parameter", "https://evil.example/c?k=" + awsSecret + "&x=1", []m{{25, 65, "result#2"}}},
		{"url path", "https://evil.example/collect/" + awsSecret + "/x", []m{{29, 69, "result#2"}}},
		{"prefix", "https://evil.example/" + randomB64[:30] + "/y", nil}, // a prefix is not the token
		{"stored segment", "https://evil.example/" + randomB64[:38] + "/y", []m{{21, 54, "result#1"}}},
		{"case changed", strings.ToUpper(gitSHA), nil},
		{"glued", "x" + randomB64, nil},
		{"other token", "zz8Vz3LkP0xW7mR2tN9bJ4sY6hF1cD5gA+/eUiOo", nil},
		{"nothing", "hello world", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.Match(tt.text); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Match(%q) = %v, want %v", tt.text, got, tt.want)
			}
		})
	}
	t.Run("token in a stored url", func(t *testing.T) {
		g := NewFingerprints[int](10)
		for _, tok := range Tokens("https://api.example.com/v1/files/" + randomB64[:20] + "Zq9/raw") {
			g.Add(tok, 7)
		}
		want := []m{{4, 27, ""}}
		got := g.Match("id: " + randomB64[:20] + "Zq9")
		if len(got) != 1 || got[0].Start != want[0].Start || got[0].End != want[0].End || got[0].Origin != 7 {
			t.Fatalf("Match = %v", got)
		}
	})
}

func TestFingerprintsEviction(t *testing.T) {
	toks := make([]string, 4)
	for i := range toks {
		toks[i] = fmt.Sprintf("%s%02d", randomB64[:30], i)
	}
	f := NewFingerprints[int](3)
	for i, tok := range toks[:3] {
		f.Add(tok, i)
	}
	f.Add(toks[0], 10) // re-added: newest, new origin
	f.Add(toks[3], 3)  // evicts toks[1], the oldest
	if f.Len() != 3 {
		t.Fatalf("Len = %d, want 3", f.Len())
	}
	want := map[string]int{toks[0]: 10, toks[2]: 2, toks[3]: 3}
	for _, tok := range toks {
		ms := f.Match(tok)
		o, ok := want[tok]
		switch {
		case ok && (len(ms) != 1 || ms[0].Origin != o):
			t.Errorf("%s: Match = %v, want origin %d", tok, ms, o)
		case !ok && len(ms) != 0:
			t.Errorf("%s: evicted, but Match = %v", tok, ms)
		}
	}
}

func TestFingerprintsKeyed(t *testing.T) {
	a, b := NewFingerprints[int](1), NewFingerprints[int](1)
	if a.hash(randomB64) == b.hash(randomB64) {
		t.Fatal("two sets hash alike: the key is not random")
	}
	if h1, h2 := a.hash(randomB64), a.hash(randomB64); h1 != h2 {
		t.Fatal("hash is not deterministic")
	}
}

func TestFingerprintsConcurrent(t *testing.T) {
	f := NewFingerprints[int](64)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				tok := fmt.Sprintf("%s%03d", randomB64[:30], (g*200+i)%300)
				f.Add(tok, i)
				f.Match("x " + tok)
				f.Len()
			}
		}()
	}
	wg.Wait()
	if f.Len() > 64 {
		t.Fatalf("Len = %d over the cap", f.Len())
	}
}
