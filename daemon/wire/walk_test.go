package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestWalkSyntax runs every reader built on the walk over the same broken
// and valid objects and arrays: each must refuse the same inputs with a
// syntax error (never an ambiguity, which would blame the wrong thing).
func TestWalkSyntax(t *testing.T) {
	for _, tc := range []struct {
		in    string
		valid bool
	}{
		{`{}`, true},
		{` { "a" : 1 , "b" : [ 1 , { } ] , "c" : {"d":"\u00e9"} } `, true},
		{"{\t\"a\"\n:\n1\n}", true},
		{`[]`, true},
		{`[ 1 , "x" , {"a":[]} ]`, true},
		{`{`, false},
		{`{"a"`, false},
		{`{"a":`, false},
		{`{"a": `, false},
		{`{"a":1`, false},
		{`{"a":1,`, false},
		{`{"a":1,}`, false},
		{`{,}`, false},
		{`{,"a":1}`, false},
		{`{a:1}`, false},
		{`{'a':1}`, false},
		{`{1:1}`, false},
		{`{"a" 1}`, false},
		{`{"a"::1}`, false},
		{`{"a":}`, false},
		{`{"a":1 "b":2}`, false},
		{`{"a":1;"b":2}`, false},
		{`{"a":1]`, false},
		{`{"a\q":1}`, false},
		{"{\"a\x01\":1}", false},
		{`[`, false},
		{`[1`, false},
		{`[1,`, false},
		{`[1,]`, false},
		{`[,1]`, false},
		{`[1 2]`, false},
		{`[1}`, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			in := []byte(tc.in)
			check := func(reader string, err error) {
				t.Helper()
				if tc.valid {
					if err != nil {
						t.Errorf("%s: %v", reader, err)
					}
					return
				}
				if !errors.Is(err, ErrSyntax) || errors.Is(err, ErrAmbiguous) {
					t.Errorf("%s: err = %v, want a syntax error", reader, err)
				}
			}
			var m Message
			check("Peek", Peek(in, &m))
			check("Tree", Tree(in, nil))
			_, err := Decode(in)
			check("Decode", err)
			var ok bool
			if strings.HasPrefix(strings.TrimSpace(tc.in), "{") {
				_, err = Object(in, nil)
				check("Object", err)
				_, ok = Members(in)
			} else {
				_, ok = Elements(in)
			}
			if ok != tc.valid {
				t.Errorf("Members/Elements ok = %v", ok)
			}
		})
	}
}

// TestWalkSpans checks that the envelope, Members and Object find the same
// value spans, whitespace and escapes included.
func TestWalkSpans(t *testing.T) {
	for _, in := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[1,{"b":2}]}}`,
		` { "params" : [ ] ,"jsonrpc" : "2.0" , "method":"m\/x" , "id" : "k" } `,
		`{"x\"y":{},"jsonrpc":"2.0","id":null,"result":{"z":"}"}}`,
	} {
		b := []byte(in)
		var m Message
		if err := Peek(b, &m); err != nil {
			t.Fatalf("Peek(%s): %v", in, err)
		}
		e := m.Envelopes[0]
		members, ok := Members(b)
		if !ok {
			t.Fatalf("Members(%s) failed", in)
		}
		strict, err := Object(b, nil)
		if err != nil {
			t.Fatalf("Object(%s): %v", in, err)
		}
		for name, sp := range map[string]Span{"id": e.ID, "params": e.Params, "result": e.Result} {
			if members[name] != sp || strict[name] != sp {
				t.Errorf("%s: %q spans: envelope %v, Members %v, Object %v", in, name, sp, members[name], strict[name])
			}
		}
		if e.Whole != (Span{strings.Index(in, "{"), strings.LastIndex(in, "}") + 1}) {
			t.Errorf("%s: whole = %v", in, e.Whole)
		}
	}
}

// FuzzWalk checks the readers built on the walk against encoding/json:
// none accepts invalid JSON, and each accepts all valid JSON (valid UTF-8,
// within the nesting bound) unless it names an ambiguity.
func FuzzWalk(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}`, `{"\ud800":1}`, `{"a":"\udc00"}`, `{"a":1,"A":2}`,
		`[1,{"a":[]},"\u00e9"]`, `{"a":1,}`, `{a:1}`, `[1 2]`, `{"a":1e400}`, `{}`, `[]`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		valid := json.Valid(b) && utf8.Valid(b)
		agree := func(reader string, err error) {
			if err == nil && !json.Valid(b) {
				t.Fatalf("%s accepted invalid JSON %q", reader, b)
			}
			if err != nil && valid && !errors.Is(err, ErrAmbiguous) && !strings.Contains(err.Error(), "nesting") {
				t.Fatalf("%s rejected valid JSON %q: %v", reader, b, err)
			}
		}
		_, err := Decode(b)
		agree("Decode", err)
		trimmed := strings.TrimSpace(string(b))
		if !strings.HasPrefix(trimmed, "{") {
			return
		}
		_, strictErr := Object(b, nil)
		if _, ok := Members(b); ok && !json.Valid(b) {
			t.Fatalf("Members accepted invalid JSON %q", b)
		} else if !ok && valid && strictErr == nil {
			t.Fatalf("Members refused %q, which Object reads", b)
		}
		if valid {
			agree("Tree", Tree(b, nil))
		}
	})
}
