package pins

import (
	"strings"
	"testing"
)

func TestIsUIResource(t *testing.T) {
	for uri, want := range map[string]bool{
		"ui://echo/view.html": true,
		"UI://echo/view.html": true, // a scheme is case-insensitive
		"Ui://x":              true,
		"ui:/x":               false,
		"file:///ui://x":      false,
		" ui://x":             false,
		"ui:":                 false,
		"":                    false,
	} {
		if got := IsUIResource(uri); got != want {
			t.Errorf("IsUIResource(%q) = %v, want %v", uri, got, want)
		}
	}
}

func TestCanonicalResource(t *testing.T) {
	const uri = "ui://echo/view.html"
	page := func(text, meta string) string {
		return `{"contents":[{"uri":"ui://echo/view.html","mimeType":"text/html;profile=mcp-app","text":` + text + meta + `}]}`
	}
	base := page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"ui":{"csp":{"connectDomains":[]}},"trace":"1"}`)
	long := strings.Repeat("a", maxInline+1)
	tests := []struct {
		name   string
		result string
		same   bool   // the same digest as base
		found  bool   // contents found
		err    string // refused with this in the error
	}{
		{name: "itself", result: base, same: true, found: true},
		{name: "members in another order, other spacing", result: `{ "contents" : [ {"_meta":{"trace":"1","ui":{"csp":{"connectDomains":[]}}},"text":"<p>echo</p>\n<p>two</p>","mimeType":"text/html;profile=mcp-app","uri":"ui://echo/view.html"} ] }`, same: true, found: true},
		{name: "another free _meta member", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"ui":{"csp":{"connectDomains":[]}},"trace":"2"}`), same: true, found: true},
		{name: "the result's own _meta", result: strings.Replace(base, `{"contents"`, `{"_meta":{"x":1},"contents"`, 1), same: true, found: true},
		{name: "another page", result: page(`"<p>echo</p>\n<script>x()</script>"`, `,"_meta":{"ui":{"csp":{"connectDomains":[]}},"trace":"1"}`), found: true},
		{name: "a wider CSP", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"ui":{"csp":{"connectDomains":["https://x.example"]}},"trace":"1"}`), found: true},
		{name: "the ui member in other letters", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"UI":{"csp":{"connectDomains":[]}},"trace":"1"}`), found: true},
		{name: "another member of the item", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"srcdoc":"x","_meta":{"ui":{"csp":{"connectDomains":[]}},"trace":"1"}`), found: true},
		{name: "text and Text", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"Text":"x"`), err: "letter case"},
		{name: "a second content", result: strings.Replace(base, `}]}`, `},{"uri":"ui://echo/other.html","text":"x"}]}`, 1), found: true},
		{name: "a long page, hashed", result: page(`"`+long+`"`, ``), found: true},
		{name: "no contents (input_required)", result: `{"resultType":"input_required","inputRequests":{}}`, found: false},
		{name: "contents in other letters only", result: strings.Replace(base, `"contents"`, `"Contents"`, 1), err: "hosts read differently"},
		{name: "contents twice, in other letters", result: strings.Replace(base, `{"contents"`, `{"Contents":[],"contents"`, 1), err: "resource"},
		{name: "contents not an array", result: `{"contents":{"text":"x"}}`, found: true, err: "not an array"},
		{name: "a content not an object", result: `{"contents":["x"]}`, found: true, err: "not an object"},
		{name: "an unpaired surrogate", result: page(`"\ud800"`, ``), err: "resource"},
	}
	want, found, err := CanonicalResource(uri, []byte(base))
	if err != nil || !found {
		t.Fatalf("base: %v, found %v", err, found)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, found, err := CanonicalResource(uri, []byte(tt.result))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.found {
				t.Fatalf("found = %v, want %v", found, tt.found)
			}
			if !found {
				return
			}
			if same := def.Digest == want.Digest; same != tt.same {
				t.Fatalf("same digest as the base: %v, want %v\nbase:\n%s\nthis:\n%s", same, tt.same, want.JSON, def.JSON)
			}
		})
	}
}

// The definition names the URI that was read: the same contents read
// under another URI are another definition.
func TestCanonicalResourceNamesItsURI(t *testing.T) {
	result := []byte(`{"contents":[{"uri":"ui://a","text":"x"}]}`)
	a, _, errA := CanonicalResource("ui://a", result)
	b, _, errB := CanonicalResource("ui://b", result)
	if errA != nil || errB != nil || a.Digest == b.Digest {
		t.Fatalf("digests %s and %s (%v, %v): want two", a.Digest, b.Digest, errA, errB)
	}
}

// What a review sees: a page line by line, a long string as its digest
// and length, the free _meta left out.
func TestCanonicalResourceShowsLines(t *testing.T) {
	long := strings.Repeat("b", maxInline+1)
	def, _, err := CanonicalResource("ui://a", []byte(`{"contents":[{"uri":"ui://a","text":"<p>1</p>\n<p>2</p>","_meta":{"trace":"t","ui":{"domain":"d"}}},{"uri":"ui://a","blob":"`+long+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"text (lines)": [`, `"<p>1</p>",`, `"<p>2</p>"`, `"domain": "d"`, `"bytes": 65537`, `"sha256": "`} {
		if !strings.Contains(def.JSON, want) {
			t.Errorf("the definition lacks %s:\n%s", want, def.JSON)
		}
	}
	for _, unwanted := range []string{"trace", long} {
		if strings.Contains(def.JSON, unwanted) {
			t.Errorf("the definition holds %.20q:\n%.2000s", unwanted, def.JSON)
		}
	}
}
