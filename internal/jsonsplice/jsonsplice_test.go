package jsonsplice

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestMembers(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string]string // member -> its value's bytes; nil: refused
	}{
		{"flat", `{"a":1,"b":"x"}`, map[string]string{"a": "1", "b": `"x"`}},
		{"spacing kept out of spans", " {\n  \"a\" :  [1, 2] ,\n\t\"b\":{\"c\" : null}\r\n} \n", map[string]string{"a": "[1, 2]", "b": `{"c" : null}`}},
		{"empty", `{}`, map[string]string{}},
		{"nested objects are one value", `{"mcpServers":{"x":{"command":"y","env":{"K":"v"}}}}`, map[string]string{"mcpServers": `{"x":{"command":"y","env":{"K":"v"}}}`}},
		{"numbers end where they end", `{"a":-1.5e3,"b":0}`, map[string]string{"a": "-1.5e3", "b": "0"}},
		{"escaped name decoded", `{"mcp\u0053ervers":{},"a\"b":1,"c\\u0041":2}`, map[string]string{"mcpServers": "{}", `a"b`: "1", `c\u0041`: "2"}},
		{"surrogate pair in a name", `{"\ud83d\ude00":true}`, map[string]string{"\U0001F600": "true"}},
		{"unpaired surrogate in a value is the value's business", `{"a":"\ud800"}`, map[string]string{"a": `"\ud800"`}},
		{"duplicate: last wins", `{"a":1,"a":2}`, map[string]string{"a": "2"}},
		{"strings holding brackets", `{"a":"}{][,:","b":"\"}"}`, map[string]string{"a": `"}{][,:"`, "b": `"\"}"`}},
		{"unpaired high surrogate name", `{"\ud800":1}`, nil},
		{"unpaired low surrogate name", `{"\udc00":1}`, nil},
		{"high surrogate then a letter", `{"\ud800x":1}`, nil},
		{"high surrogate then another high", `{"\ud800\ud800":1}`, nil},
		{"invalid UTF-8", "{\"a\xff\":1}", nil},
		{"line comment", "{\n // servers\n \"a\": 1\n}", nil},
		{"block comment", `{"a": /* x */ 1}`, nil},
		{"trailing comma", `{"a":1,}`, nil},
		{"leading comma", `{,"a":1}`, nil},
		{"missing colon", `{"a" 1}`, nil},
		{"missing value", `{"a":}`, nil},
		{"unquoted name", `{a:1}`, nil},
		{"truncated", `{"a":{"b":1}`, nil},
		{"array", `[1,2]`, nil},
		{"string", `"x"`, nil},
		{"empty document", ``, nil},
		{"two values", `{} {}`, nil},
		{"garbage after", `{"a":1} x`, nil},
		{"invalid nested value", `{"a":[1,]}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := Members([]byte(tc.in))
			if ok != (tc.want != nil) {
				t.Fatalf("Members(%q) ok = %v, want %v", tc.in, ok, tc.want != nil)
			}
			got := map[string]string{}
			for name, sp := range m {
				got[name] = string(sp.Of([]byte(tc.in)))
			}
			if ok {
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("spans (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestSplice(t *testing.T) {
	doc := "{\n  \"a\": [1, 2],\n  \"b\": 3\n}"
	at := func(sub string) Span {
		i := strings.Index(doc, sub)
		return Span{i, i + len(sub)}
	}
	for _, tc := range []struct {
		sp   Span
		repl string
		want string
	}{
		{at("[1, 2]"), `{"x":1}`, "{\n  \"a\": {\"x\":1},\n  \"b\": 3\n}"},
		{at("3"), "[\n    4\n  ]", "{\n  \"a\": [1, 2],\n  \"b\": [\n    4\n  ]\n}"},
		{at(doc), "{}", "{}"},
		{Span{len(doc), len(doc)}, "\n", doc + "\n"},
	} {
		in := []byte(doc)
		got := Splice(in, tc.sp, []byte(tc.repl))
		if string(got) != tc.want {
			t.Errorf("Splice(%v, %q) = %q, want %q", tc.sp, tc.repl, got, tc.want)
		}
		if string(in) != doc {
			t.Fatal("Splice changed its input")
		}
	}
}

// FuzzMembers checks Members against encoding/json: it accepts exactly the
// valid UTF-8 JSON objects (less those with unpaired surrogate names), and
// its spans hold the bytes encoding/json reads for each member.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`, ` {"mcpServers" : {"x": {"command": "y"}} } `,
		`{"\ud800":1}`, `{"\ud83d\ude00":1}`, `{"a":1,"a":2}`, `{"a\\u0041":1}`, `{"a":1,}`, `{a:1}`, `[]`, `{}`, "{\"\xff\":1}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := Members(b)
		var want map[string]json.RawMessage
		valid := utf8.Valid(b) && json.Unmarshal(b, &want) == nil && want != nil
		if ok && !valid {
			t.Fatalf("Members accepted %q", b)
		}
		if !ok {
			if valid && !strings.Contains(string(b), `\u`) {
				t.Fatalf("Members refused %q", b) // only surrogate escapes may explain it
			}
			return
		}
		if len(m) != len(want) {
			t.Fatalf("%q: %d members, encoding/json reads %d", b, len(m), len(want))
		}
		for name, raw := range want {
			if got := m[name].Of(b); string(got) != string(raw) {
				t.Fatalf("%q: member %q spans %q, encoding/json reads %q", b, name, got, raw)
			}
		}
	})
}
