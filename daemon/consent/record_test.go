package consent

import "testing"

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
