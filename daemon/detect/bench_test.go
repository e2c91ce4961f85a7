package detect

import (
	"fmt"
	"strings"
	"testing"
)

// benchText is a ~4 KiB JSON-ish tool result: issues of a repository,
// with numbers, dates, URLs, hashes and prose. With findings, a few of
// its values are sensitive.
func benchText(findings bool) string {
	var b strings.Builder
	b.WriteString(`{"total_count":1283,"incomplete_results":false,"items":[`)
	for i := 0; b.Len() < 3800; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"url":"https://api.github.com/repos/acme/widgets/issues/%d","id":%d,"node_id":"I_kwDOABCD%05dzM","number":%d,`+
			`"title":"Crash when opening config file #%d (v2.%d.%d)","user":{"login":"dev%d","id":%d},`+
			`"labels":["bug","needs-triage"],"state":"open","comments":%d,"created_at":"2024-0%d-1%dT08:%02d:00Z",`+
			`"head_sha":"%040x","body":"Steps: run widgets --config ~/.config/widgets.toml; expected it to load, got exit status %d after %d ms."}`,
			4100+i, 190000000+i*7919, i*37, 4100+i, i, i%9, i%7, i, 5000+i, i%13, 1+i%9, i%10, i%60, uint64(i+1)*0x9e3779b97f4a7c15, i%3, 120+i)
	}
	if findings {
		b.WriteString(`,{"body":"customer 512-44-8392 paid with 4111 1111 1111 1111, reach her at jane.doe@example.com; key AKIAIOSFODNN7EXAMPLE"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func BenchmarkScan(b *testing.B) {
	set := mustNew(b, nil, nil)
	for _, bc := range []struct {
		name     string
		findings bool
		want     int
	}{{"clean", false, 0}, {"findings", true, 4}} {
		text := benchText(bc.findings)
		if n := len(set.Scan(text)); n != bc.want {
			b.Fatalf("%s: %d findings, want %d: %v", bc.name, n, bc.want, values(text, set.Scan(text)))
		}
		b.Run(fmt.Sprintf("%s-%dB", bc.name, len(text)), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				set.Scan(text)
			}
		})
	}
}

func BenchmarkTokens(b *testing.B) {
	text := benchText(false)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		Tokens(text)
	}
}

func BenchmarkMatch(b *testing.B) {
	text := benchText(false)
	f := NewFingerprints[int](4096)
	for i, tok := range Tokens(text) {
		f.Add(tok, i)
	}
	for i := 0; i < 1000; i++ {
		f.Add(fmt.Sprintf("%s%04d", randomB64[:30], i), i)
	}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		f.Match(text)
	}
}
