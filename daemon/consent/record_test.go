package consent

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		kind          Kind
		pattern, name string
		want          bool
	}{
		{KindResource, "*", "file:///etc/hostname", true},
		{KindResource, "*", "", true},
		{KindResource, "**", "repo://acme/web/README.md", true},
		{KindResource, "file:///work/*", "file:///work/a/b.txt", true},
		{KindResource, "file:///work/*", "file:///work", false},
		{KindResource, "file:///work/*", "file:///etc/passwd", false},
		{KindResource, "file:///work/*", "file:///work/../etc/passwd", false}, // not in normal form: a server may serve file:///etc/passwd
		{KindResource, "file:///work/*", "file:///work/%2E%2e/etc/passwd", false},
		{KindResource, "*", "file:///work/../etc/passwd", false},
		{KindResource, "file:///work/*", "file:///work/a..b?x=../y", true},
		{KindResource, "repo://acme/*/README.md", "repo://acme/web/README.md", true},
		{KindResource, "repo://acme/*/README.md", "repo://acme/a/b/README.md", true},
		{KindResource, "repo://acme/*/README.md", "repo://acme/web/LICENSE", false},
		{KindResource, "repo://acme/web", "repo://acme/web", true},
		{KindResource, "repo://acme/web", "repo://acme/web/x", false},
		{KindResource, "repo://?cme/*", "repo://acme/x", true},
		{KindResource, "repo://[a-c]cme/*", "repo://bcme/x", true},
		{KindResource, "repo://[^a]cme/*", "repo://acme/x", false},
		{KindResource, `repo://a\*`, "repo://a*", true},
		{KindResource, `repo://a\*`, "repo://ab", false},
		{KindResource, "*.md", "notes/ü/x.md", true},
		{KindResource, "notes/?/x.md", "notes/ü/x.md", true},
		{KindResource, "[", "[", false}, // malformed: matches nothing
		// A wildcard never reaches from the path into the host, nor
		// slips user info in front of it (matched as text it did).
		{KindResource, "https://docs.example.com*", "https://docs.example.com/guide", true},
		{KindResource, "https://docs.example.com*", "https://docs.example.com", true},
		{KindResource, "https://docs.example.com*", "https://docs.example.com?q=1", true},
		{KindResource, "https://docs.example.com*", "https://docs.example.com.evil.example/", false},
		{KindResource, "https://docs.example.com*", "https://docs.example.com@evil.example/", false},
		{KindResource, "https://docs.example.com*", "https://docs.example.com:8443/", false},
		{KindResource, "https://docs.example.com/*", "https://docs.example.com@evil.example/", false},
		{KindResource, "https://*.example.com/*", "https://a.b.example.com/x", true},
		{KindResource, "https://*.example.com/*", "https://evil.example@x.example.com/", false},
		{KindResource, "https://*.example.com/*", "https://evil.example/.example.com/", false},
		{KindResource, "https://*.example.com/*", "https://evil.example?.example.com/", false},
		{KindResource, "https://*.example.com/*", "https://evil.example#.example.com/", false},
		{KindResource, "https://*.example.com*", "https://x.example.com.evil.example/", false},
		{KindResource, "https://*.example.com*", "https://x.example.com/a", true},
		{KindResource, "https://user@docs.example.com/*", "https://user@docs.example.com/a", true}, // '@' written in the pattern
		{KindResource, "https://*", "https://anyone@anywhere.example:1/x", true},
		{KindResource, "https://*/*", "https://anywhere.example/x", true},
		{KindResource, "http://localhost:*/*", "http://localhost:8080/mcp", true},
		{KindResource, "http://localhost:*/*", "http://localhost:8080@evil.example/mcp", false},
		{KindResource, "http://localhost:*/*", "http://localhost/mcp", true}, // no port written: the default
		{KindResource, "http://localhost:*", "http://localhost:8080/mcp", true},
		{KindResource, "http://localhost:*", "http://localhost:3000", true},
		{KindResource, "http://localhost:*", "http://localhost", true},
		{KindResource, "http://localhost:*", "http://localhost.evil.example/", false},
		{KindResource, "https://docs.example.com:*", "https://docs.example.com:8443/x", true},
		{KindResource, "https://*/docs/*", "https:///docs/evil.example/secret", false}, // not in normal form (uri.Check): host "docs" to the SDKs
		{KindResource, "http*://docs.example.com/*", "https://docs.example.com/a", true},
		{KindResource, "http*://docs.example.com/*", "https://evil.example/x://docs.example.com/a", false},
		{KindResource, "https://docs.example.com\\?*", "https://docs.example.com?q", true},
		{KindResource, "file://*", "file:///etc/hostname", true},
		{KindResource, "https://docs.example.com/*", "https:docs.example.com/a", false}, // no "//": not read as this URI
		{KindTool, "list_*", "list_repos", true},
		{KindTool, "list_*", "xlist_repos", false},
		{KindTool, "*", "ns/tool", false}, // tool names keep path.Match
		{KindPrompt, "sum*", "summarize", true},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+" "+tt.pattern+" "+tt.name, func(t *testing.T) {
			if got := Match(tt.kind, tt.pattern, tt.name); got != tt.want {
				t.Fatalf("Match(%s, %q, %q) = %v, want %v", tt.kind, tt.pattern, tt.name, got, tt.want)
			}
		})
	}
}

func TestValidPattern(t *testing.T) {
	for p, want := range map[string]bool{"*": true, "file:///work/*": true, "[a-z]*": true, "": false, "[": false, `a\`: false, "[]": false} {
		if got := ValidPattern(p); got != want {
			t.Errorf("ValidPattern(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestResourceGrantCoversEveryURI(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	grant(t, s, Record{Resources: []string{"*"}})
	for _, uri := range []string{"file:///etc/hostname", "repo://acme/web/README.md", "ui://widget"} {
		q := Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindResource, Name: uri}
		if d := e.Decide(q); !d.Allow {
			t.Errorf("--resource '*' does not allow %s: %s", uri, d.Reason)
		}
	}
}

// TestExactResourcePatternsMatchTheirURI: an answer "allow this" makes a
// consent for exactly the URI asked about, its glob characters escaped;
// read as a URI, such a pattern still matches that URI.
func TestExactResourcePatternsMatchTheirURI(t *testing.T) {
	escape := func(s string) string {
		var b []byte
		for i := 0; i < len(s); i++ {
			if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
				b = append(b, '\\')
			}
			b = append(b, s[i])
		}
		return string(b)
	}
	for _, u := range []string{
		"https://docs.example.com", "https://docs.example.com/a?b=[1]#x", "https://u@h.example:8443/p*q",
		"demo://resource/dynamic/text/1", "file:///etc/hostname", "mem:x?y", "ui://widget",
	} {
		p := escape(u)
		if !Match(KindResource, p, u) {
			t.Errorf("the exact pattern %q does not match %q", p, u)
		}
	}
}
