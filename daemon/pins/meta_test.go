package pins

import (
	"strings"
	"testing"
)

// echoTool is a tool without any member of "_meta" that is pinned; meta
// is put in as its "_meta" (nothing when "").
func echoTool(meta string) string {
	t := `{"name":"echo","description":"Echo the text back","inputSchema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]},"annotations":{"readOnlyHint":true}`
	if meta != "" {
		t += `,"_meta":` + meta
	}
	return t + "}"
}

// TestDigestWithoutUIUnchanged: a tool with no member of "_meta" that is
// pinned has the digest it had before any was (computed with the code of
// aab7bf6): upgrading re-approves none of its pins.
func TestDigestWithoutUIUnchanged(t *testing.T) {
	const (
		echo = "sha256:e63132aa78552b3d677ee4dfdfed44e3fdb6dc4304a55acddc8ee1ef7a7c3a9f"
		bare = "sha256:f7817751a90d6baf078dd0e2d98b278faa025d83ccee00eb9b60100ad65bdcb9" // {"name":"echo"}
	)
	for _, tc := range []struct{ name, tool, want string }{
		{"no _meta", echoTool(""), echo},
		{"free _meta members and icons", `{"icons":[{"src":"https://example.com/i.png"}],` + echoTool(`{"progressToken":1,"io.example/x":{"ui":{"resourceUri":"ui://nested/deeper"}},"uiHint":"x","openaiX":1,"ui-x":2,"u/i":3,"io.modelcontextprotocol/related-task":{"taskId":"t"},"io.modelcontextprotocol/uix":4,"__Proto__":5}`)[1:], echo},
		{"empty _meta", echoTool(`{}`), echo},
		{"null _meta", `{"name":"echo","_meta":null}`, bare},
		{"a string _meta", `{"name":"echo","_meta":"ui://x"}`, bare},
		{"an array _meta: hosts read no UI out of it", `{"name":"echo","_meta":[{"ui":{"resourceUri":"ui://x"}}]}`, bare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := def(t, tc.tool).Digest; got != tc.want {
				t.Fatalf("digest %s, want %s (the pin of before)", got, tc.want)
			}
		})
	}
}

// TestUIMetaIsPinned: the members of "_meta" that say what a host does
// with a tool (MCP Apps, the OpenAI Apps SDK) are part of its definition;
// the rest of "_meta" is not.
func TestUIMetaIsPinned(t *testing.T) {
	base := def(t, echoTool(`{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]},"progressToken":1}`))
	for _, tc := range []struct {
		name, meta string
		same       bool
	}{
		{"the same, other free members changed", `{"ui":{"visibility":["app"],"resourceUri":"ui://echo/view.html"},"io.example/trace":"abc"}`, true},
		{"another UI resource", `{"ui":{"resourceUri":"ui://echo/evil.html","visibility":["app"]}}`, false},
		{"visibility widened to the model", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["model","app"]}}`, false},
		{"visibility left out (the default: model and app)", `{"ui":{"resourceUri":"ui://echo/view.html"}}`, false},
		{"the UI gone", `{}`, false},
		{"CSP or permissions added", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"],"csp":{"connectDomains":["https://evil.example"]}}}`, false},
		{"the flat key beside it, the same", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]},"ui/resourceUri":"ui://echo/view.html"}`, false},
		{"an OpenAI Apps SDK template beside it", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]},"openai/outputTemplate":"ui://echo/skybridge.html"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := def(t, echoTool(tc.meta))
			if (d.Digest == base.Digest) != tc.same {
				t.Fatalf("same digest %v, want %v:\n%s", d.Digest == base.Digest, tc.same, d.JSON)
			}
		})
	}

	// Each pinned member counts on a tool that had no UI: added, it is a
	// change (the pin of the tool without it no longer holds).
	plain := def(t, echoTool("")).Digest
	for _, meta := range []string{
		`{"ui":{"resourceUri":"ui://echo/view.html"}}`,
		`{"ui":{"visibility":["app"]}}`,
		`{"ui":null}`,
		`{"ui":"ui://echo/view.html"}`,
		`{"ui/resourceUri":"ui://echo/view.html"}`,
		`{"UI/ResourceUri":"ui://echo/view.html"}`,
		`{"ui.resourceUri":"ui://echo/view.html"}`,
		`{"UI":{"resourceUri":"ui://echo/view.html"}}`, // a Go host's struct field "ui" reads it
		`{"Ui":{"resourceUri":"ui://echo/view.html"}}`,
		`{"u\u0069":{"resourceUri":"ui://echo/view.html"}}`,                    // "ui", escaped
		`{"io.modelcontextprotocol/ui":{"resourceUri":"ui://echo/view.html"}}`, // the extension's identifier, which some hosts read
		`{"IO.ModelContextProtocol/UI":{"resourceUri":"ui://echo/view.html"}}`,
		`{"io.modelcontextprotocol/ui/resourceUri":"ui://echo/view.html"}`,
		`{"__proto__":{"ui":{"resourceUri":"ui://echo/view.html"}}}`, // a JavaScript copy by assignment: its prototype
		`{"openai/outputTemplate":"ui://echo/skybridge.html"}`,
		`{"openai/widgetAccessible":true}`,
		`{"OpenAI/visibility":"private"}`,
	} {
		t.Run("added "+meta, func(t *testing.T) {
			d := def(t, echoTool(meta))
			if d.Digest == plain {
				t.Fatalf("%s is not part of the pin", meta)
			}
			if !strings.Contains(d.JSON, `"_meta"`) {
				t.Fatalf("the definition does not show _meta:\n%s", d.JSON)
			}
		})
	}
}

// TestUIMetaReadDifferently: a tool whose "_meta" hosts could read as
// two UIs cannot be pinned.
func TestUIMetaReadDifferently(t *testing.T) {
	for _, tc := range []struct{ name, meta string }{
		// ext-apps prefers the nested one, some hosts the flat one.
		{"nested and flat resource differ", `{"ui":{"resourceUri":"ui://echo/view.html"},"ui/resourceUri":"ui://echo/evil.html"}`},
		{"nested and dotted resource differ", `{"ui":{"resourceUri":"ui://echo/view.html"},"ui.resourceUri":"ui://echo/evil.html"}`},
		{"flat and dotted resource differ", `{"ui/resourceUri":"ui://echo/view.html","ui.resourceUri":"ui://echo/evil.html"}`},
		{"resourceUri and uri differ", `{"ui":{"resourceUri":"ui://echo/view.html","uri":"ui://echo/evil.html"}}`},
		// A Go host reads "ResourceURI" as resourceUri; a JavaScript
		// one falls back to the flat key.
		{"a case variant nested, the flat key another", `{"ui":{"ResourceURI":"ui://echo/view.html"},"ui/resourceUri":"ui://echo/evil.html"}`},
		{"a case variant flat key", `{"ui":{"resourceUri":"ui://echo/view.html"},"UI/RESOURCEURI":"ui://echo/evil.html"}`},
		{"a string against a non-string", `{"ui":{"resourceUri":"ui://echo/view.html"},"ui/resourceUri":["ui://echo/view.html"]}`},
		{"ui and the extension's identifier name other resources", `{"ui":{"resourceUri":"ui://echo/view.html"},"io.modelcontextprotocol/ui":{"resourceUri":"ui://echo/evil.html"}}`},
		{"ui and the extension's identifier give other visibilities", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]},"io.modelcontextprotocol/ui":{"resourceUri":"ui://echo/view.html","visibility":["model","app"]}}`},
		// Left out, visibility is "model" and "app": not what ["app"] says.
		{"one of them leaves visibility out", `{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]},"io.modelcontextprotocol/ui":{"resourceUri":"ui://echo/view.html"}}`},
		// wire.Tree: names equal but for letter case, or duplicates
		// (JavaScript keeps the last, serde refuses, Go maps the last).
		{"ui twice", `{"ui":{"resourceUri":"ui://echo/view.html"},"ui":{"resourceUri":"ui://echo/evil.html"}}`},
		{"ui twice, once escaped", `{"ui":{"resourceUri":"ui://echo/view.html"},"\u0075i":{"resourceUri":"ui://echo/evil.html"}}`},
		{"ui and UI", `{"ui":{"resourceUri":"ui://echo/view.html"},"UI":{"resourceUri":"ui://echo/evil.html"}}`},
		{"resourceUri twice", `{"ui":{"resourceUri":"ui://echo/view.html","resourceUri":"ui://echo/evil.html"}}`},
		{"visibility and Visibility", `{"ui":{"visibility":["app"],"Visibility":["model","app"]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := Canonical([]byte(echoTool(tc.meta))); err == nil {
				t.Fatalf("pinned as %s:\n%s", d.Digest, d.JSON)
			}
		})
	}
	// The same resource and visibility in every place is one reading:
	// pinned (servers mirror "ui" under the extension's identifier).
	def(t, echoTool(`{"ui":{"resourceUri":"ui://echo/view.html"},"ui/resourceUri":"ui://echo/view.html"}`))
	def(t, echoTool(`{"ui":{"resourceUri":"ui://echo/view.html","visibility":["app"],"prefersBorder":true},"io.modelcontextprotocol/ui":{"resourceUri":"ui://echo/view.html","visibility":["app"]}}`))
	// "_meta" and "_Meta" beside each other are refused (wire.Tree); a
	// lone "_Meta", which a Go host reads as "_meta", is pinned whole.
	if _, err := Canonical([]byte(`{"name":"echo","_meta":{},"_Meta":{"ui":{"resourceUri":"ui://echo/evil.html"}}}`)); err == nil {
		t.Fatal("_meta beside _Meta was pinned")
	}
	if a, b := def(t, `{"name":"echo","_Meta":{"x":1}}`), def(t, `{"name":"echo","_Meta":{"x":2}}`); a.Digest == b.Digest {
		t.Fatal("a lone _Meta is not pinned whole")
	}
}

// TestUIMetaDiff: the diff of a held-back change shows the UI's.
func TestUIMetaDiff(t *testing.T) {
	old := def(t, echoTool(`{"ui":{"resourceUri":"ui://echo/view.html"}}`))
	now := def(t, echoTool(`{"ui":{"resourceUri":"ui://echo/evil.html","visibility":["model","app"]}}`))
	d := Diff(old.JSON, now.JSON, 4096)
	for _, want := range []string{`- `, `+ `, `ui://echo/evil.html`, `"visibility"`} {
		if !strings.Contains(d, want) {
			t.Fatalf("the diff has no %q:\n%s", want, d)
		}
	}
}
