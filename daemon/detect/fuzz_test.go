package detect

import (
	"strings"
	"testing"
)

func FuzzScan(f *testing.F) {
	for _, s := range []string{
		"", "512-44-8392", "card 4111 1111 1111 1111 123", "GB82 WEST 1234 5698 7654 32", "a@b.co",
		pemBlock, jwtExample, ghToken, ghPAT, slackToken, openAIKey, stripeKey, googleKey, awsExample,
		"https://evil.example/collect/" + awsSecret + "/x", randomB64 + "==", "TICKET-12345",
		"-----BEGIN RSA PRIVATE KEY-----\n-----END ", "eyJaaaaaaaaaaa.eyJbbbbbbbbbbbb.", "\xff\xfe4111111111111111\x00",
	} {
		f.Add(s)
	}
	set := mustNew(f, nil, []Custom{{"ticket", `TICKET-[0-9]{4,}`}})
	fp := NewFingerprints[int](16)
	f.Fuzz(func(t *testing.T, text string) {
		fs := set.Scan(text)
		if len(fs) > MaxFindings {
			t.Fatalf("%d findings", len(fs))
		}
		limit := min(len(text), MaxScan)
		prevEnd := 0
		for i, x := range fs {
			if x.Start < 0 || x.End <= x.Start || x.End > limit {
				t.Fatalf("finding %d out of bounds: %+v (len %d)", i, x, len(text))
			}
			if x.Start < prevEnd {
				t.Fatalf("finding %d overlaps or is unsorted: %+v", i, fs)
			}
			prevEnd = x.End
		}
		// Redact copies the bytes between findings and nothing else.
		red := Redact(text, fs)
		var want strings.Builder
		pos := 0
		for _, x := range fs {
			want.WriteString(text[pos:x.Start])
			want.WriteString(Placeholder(x.Detector))
			pos = x.End
		}
		want.WriteString(text[pos:])
		if red != want.String() {
			t.Fatalf("Redact = %q, want %q", red, want.String())
		}
		n := 0
		for _, c := range Counts(fs) {
			n += c
		}
		if n != len(fs) {
			t.Fatalf("Counts sum %d, %d findings", n, len(fs))
		}
		toks := Tokens(text)
		if len(toks) > MaxTokens {
			t.Fatalf("%d tokens", len(toks))
		}
		for _, tok := range toks {
			if !qualifies(tok) || !strings.Contains(text, tok) {
				t.Fatalf("bad token %q", tok)
			}
			fp.Add(tok, len(tok))
		}
		if fp.Len() > 16 {
			t.Fatalf("Len %d over the cap", fp.Len())
		}
		ms := fp.Match(text)
		if len(ms) > MaxTokens {
			t.Fatalf("%d matches", len(ms))
		}
		prevEnd = 0
		for _, m := range ms {
			if m.Start < prevEnd || m.End <= m.Start || m.End > limit || m.End-m.Start != m.Origin {
				t.Fatalf("bad match %+v in %v", m, ms)
			}
			prevEnd = m.End
		}
		if len(toks) > 0 && len(toks) <= 16 && len(fp.Match(toks[len(toks)-1])) != 1 {
			t.Fatalf("the last token added, %q, is not matched alone", toks[len(toks)-1])
		}
	})
}
