package pins

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
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
		// Whether an item has "_meta", and what it is when not an object:
		// a host reading `_meta || meta` reads "meta" when it is gone.
		{name: "_meta without pinned members", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"trace":"1"}`), found: true},
		{name: "no _meta", result: page(`"<p>echo</p>\n<p>two</p>"`, ``), found: true},
		{name: "_meta empty string", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":""`), found: true},
		{name: "_meta null", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":null`), found: true},
		{name: "a second page in meta", result: page(`"<p>echo</p>\n<p>two</p>"`, `,"_meta":{"ui":{"csp":{"connectDomains":[]}},"trace":"1"},"meta":{"ui":{"csp":{"connectDomains":["https://x.example"]}}}`), found: true},
		{name: "too many values to decode", result: `{"contents":[{"uri":"ui://echo/view.html","x":[` + strings.Repeat(`{},`, maxResourceValues) + `{}]}]}`, err: "JSON values"},
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
	for _, want := range []string{"\"text\": [\n        \"lines\",\n        \"<p>1</p>\",\n        \"<p>2</p>\"\n", `"domain": "d"`, "\"sha256\",\n", "65537\n"} {
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

// The definition tells every value a server can send apart: a string
// over maxInline and an object that reads like its digest, an array and
// the tags, a page and a member named like its lines.
func TestCanonicalResourceIsInjective(t *testing.T) {
	long := strings.Repeat("a", maxInline+1)
	sum := sha256.Sum256([]byte(long))
	digest := hex.EncodeToString(sum[:])
	pairs := [][2]string{
		{`{"contents":[{"uri":"ui://a","text":"` + long + `"}]}`, `{"contents":[{"uri":"ui://a","text":["sha256","` + digest + `",` + strconv.Itoa(len(long)) + `]}]}`},
		{`{"contents":[{"uri":"ui://a","text":"` + long + `"}]}`, `{"contents":[{"uri":"ui://a","text":{"sha256":"` + digest + `","bytes":` + strconv.Itoa(len(long)) + `}}]}`},
		{`{"contents":[{"uri":"ui://a","x":["array",[1]]}]}`, `{"contents":[{"uri":"ui://a","x":[1]}]}`},
		{`{"contents":[{"uri":"ui://a","text":"1\n2"}]}`, `{"contents":[{"uri":"ui://a","text":["lines","1","2"]}]}`},
		{`{"contents":[{"uri":"ui://a","text":"1\n2"}]}`, `{"contents":[{"uri":"ui://a","text":"1\n2","text (lines)":null}]}`},
		// A host reading `_meta || meta` reads "meta" once "_meta" is
		// gone, null or "": each is another definition.
		{`{"contents":[{"uri":"ui://a","text":"x","_meta":{"b":"1"}}]}`, `{"contents":[{"uri":"ui://a","text":"x"}]}`},
		{`{"contents":[{"uri":"ui://a","text":"x","_meta":{"b":"1"}}]}`, `{"contents":[{"uri":"ui://a","text":"x","_meta":null}]}`},
		{`{"contents":[{"uri":"ui://a","text":"x","_meta":{"b":"1"}}]}`, `{"contents":[{"uri":"ui://a","text":"x","_meta":""}]}`},
		{`{"contents":[{"uri":"ui://a","text":"x"}]}`, `{"contents":[{"uri":"ui://a","text":"x","_meta":null}]}`},
	}
	for _, p := range pairs {
		a, _, errA := CanonicalResource("ui://a", []byte(p[0]))
		b, _, errB := CanonicalResource("ui://a", []byte(p[1]))
		if errA != nil || errB != nil {
			t.Fatalf("%v, %v", errA, errB)
		}
		if a.Digest == b.Digest {
			t.Errorf("one digest for\n%.200s\nand\n%.200s", p[0], p[1])
		}
		if a.JSON == b.JSON {
			t.Errorf("one review for\n%.200s\nand\n%.200s:\n%.2000s", p[0], p[1], a.JSON)
		}
	}
}

// A page of very many short lines is shown without its lines rather
// than stored many times its size.
func TestCanonicalResourceShownWithinBound(t *testing.T) {
	def, _, err := CanonicalResource("ui://a", []byte(`{"contents":[{"uri":"ui://a","text":"`+strings.Repeat(`\n`, maxInline-10)+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(def.JSON) > 2*MaxDefinition {
		t.Fatalf("a definition shown in %d bytes, more than %d", len(def.JSON), 2*MaxDefinition)
	}
}

// What a resources/list entry of a UI resource asks of a host is pinned:
// its _meta (a host falls back to it for the page's CSP) and mimeType;
// its name, description and annotations are free.
func TestCanonicalListing(t *testing.T) {
	const base = `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":[]}}}}`
	want, _, err := CanonicalListing("ui://a", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, entry string
		same, asks  bool
	}{
		{"itself", base, true, true},
		{"another name and description", `{"uri":"ui://a","name":"other","description":"d","annotations":{"lastModified":"2026-12-06"},"mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":[]}}}}`, true, true},
		{"a free _meta member", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":[]}},"x":1}}`, true, true},
		{"a wider CSP", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":["https://x.example"]}}}}`, false, true},
		{"no _meta", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app"}`, false, false},
		{"a _meta without pinned members", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"x":1}}`, false, false},
		{"another mimeType", `{"uri":"ui://a","name":"view","mimeType":"text/html","_meta":{"ui":{"csp":{"connectDomains":[]}}}}`, false, true},
		{"a meta member", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":[]}}},"meta":{"ui":{}}}`, false, true},
		// A JavaScript host copying the entry by assignment reads its
		// _meta through __proto__ (found by a red-team helper).
		{"a __proto__ member", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","_meta":{"ui":{"csp":{"connectDomains":[]}}},"__proto__":{"_meta":{"ui":{"csp":{"connectDomains":["https://x.example"]}}}}}`, false, true},
		{"a __proto__ alone", `{"uri":"ui://a","name":"view","mimeType":"text/html;profile=mcp-app","__proto__":{"_meta":{}}}`, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, asks, err := CanonicalListing("ui://a", []byte(tt.entry))
			if err != nil {
				t.Fatal(err)
			}
			if same := def.Digest == want.Digest; same != tt.same {
				t.Fatalf("same digest: %v, want %v\n%s", same, tt.same, def.JSON)
			}
			if asks != tt.asks {
				t.Fatalf("asks: %v, want %v", asks, tt.asks)
			}
		})
	}
}
