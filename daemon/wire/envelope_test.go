package wire

import (
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPeek(t *testing.T) {
	type want struct {
		kind   Kind
		method string
		id     string
		params string
	}
	tests := []struct {
		name  string
		in    string
		batch bool
		want  []want
		err   bool
	}{
		{"request", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`, false, []want{{KindRequest, "tools/list", "1", "{}"}}, false},
		{"request crlf", "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"}\r\n", false, []want{{KindRequest, "ping", `"a"`, ""}}, false},
		{"big id kept raw", `{"jsonrpc":"2.0","id":9007199254740993,"method":"x"}`, false, []want{{KindRequest, "x", "9007199254740993", ""}}, false},
		{"members in any order", `{"method":"m","params":[1,{"a":[]}],"id":-3.5e2,"jsonrpc":"2.0"}`, false, []want{{KindRequest, "m", "-3.5e2", `[1,{"a":[]}]`}}, false},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, false, []want{{KindNotification, "notifications/initialized", "", ""}}, false},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\/call"}`, false, []want{{KindRequest, "tools/call", "1", ""}}, false},
		{"response", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`, false, []want{{KindResponse, "", "1", ""}}, false},
		{"error response null id", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`, false, []want{{KindResponse, "", "null", ""}}, false},
		{"nested method key ignored", `{"jsonrpc":"2.0","id":2,"result":{"method":"evil","id":9}}`, false, []want{{KindResponse, "", "2", ""}}, false},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"x"}`, false, []want{{KindInvalid, "", "1", ""}}, false},
		{"missing version", `{"id":1,"method":"x"}`, false, []want{{KindInvalid, "", "1", ""}}, false},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"x"}`, false, []want{{KindInvalid, "", "{}", ""}}, false},
		{"numeric method", `{"jsonrpc":"2.0","id":1,"method":5}`, false, []want{{KindInvalid, "", "1", ""}}, false},
		{"scalar params", `{"jsonrpc":"2.0","id":1,"method":"x","params":3}`, false, []want{{KindInvalid, "", "1", "3"}}, false},
		{"result and error", `{"jsonrpc":"2.0","id":1,"result":1,"error":{}}`, false, []want{{KindInvalid, "", "1", ""}}, false},
		{"response without id", `{"jsonrpc":"2.0","result":1}`, false, []want{{KindInvalid, "", "", ""}}, false},
		{"not object", `42`, false, []want{{KindInvalid, "", "", ""}}, false},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}, 7]`, true,
			[]want{{KindRequest, "a", "1", ""}, {KindNotification, "b", "", ""}, {KindInvalid, "", "", ""}}, false},
		{"empty batch", `[]`, true, nil, false},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"x"`, false, nil, true},
		{"trailing garbage", `{"jsonrpc":"2.0","id":1,"method":"x"} x`, false, nil, true},
		{"two values", `{} {}`, false, nil, true},
		{"bad escape", `{"a":"\q"}`, false, nil, true},
		{"control char", "{\"a\":\"\x01\"}", false, nil, true},
		{"invalid utf8", "{\"a\":\"\xff\"}", false, nil, true},
		{"bad number", `{"a":01}`, false, nil, true},
		{"bad literal", `{"a":tru}`, false, nil, true},
		{"empty", "  \r\n", false, nil, true},
		{"unclosed nested", `{"a":[1,{"b":2]}`, false, nil, true},
		{"deep nesting", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), false, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := Peek([]byte(tt.in), &m)
			if tt.err {
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("err = %v, want a syntax error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if m.Batch != tt.batch {
				t.Fatalf("batch = %v, want %v", m.Batch, tt.batch)
			}
			if len(m.Envelopes) != len(tt.want) {
				t.Fatalf("%d envelopes, want %d", len(m.Envelopes), len(tt.want))
			}
			for i, w := range tt.want {
				e := m.Envelopes[i]
				got := want{e.Kind, e.Method, string(e.ID.Of([]byte(tt.in))), string(e.Params.Of([]byte(tt.in)))}
				if got != w {
					t.Errorf("envelope %d = %+v, want %+v (problem %q)", i, got, w, e.Problem)
				}
				if (e.Kind == KindInvalid) != (e.Problem != "") {
					t.Errorf("envelope %d: kind %v with problem %q", i, e.Kind, e.Problem)
				}
			}
		})
	}
}

func TestIDKey(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{`1`, `1`, true},
		{`1`, `1.0`, true},
		{`1`, `"1"`, false},
		{`"a"`, `"\u0061"`, true},
		{`9007199254740993`, `9007199254740992`, false},
		{`1e2`, `100`, false},
		{`-5`, `-5.00`, true},
		{`0`, `0.0`, true},
		{`12`, `"12"`, false},
		{`120`, `12`, false},
	}
	for _, tt := range tests {
		if got := IDKey([]byte(tt.a)) == IDKey([]byte(tt.b)); got != tt.same {
			t.Errorf("IDKey(%s)==IDKey(%s) = %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
	if IDKey([]byte("null")) != "" || IDKey(nil) != "" {
		t.Error("null and absent ids must have no key")
	}
}

func TestErrorResponseIsValid(t *testing.T) {
	for _, id := range []string{"", "7", `"x\"y"`, "9007199254740993"} {
		b := ErrorResponse([]byte(id), CodeParseError, "bad \"input\"\n", map[string]int{"n": 1})
		var m Message
		if err := Peek(b, &m); err != nil || m.Envelopes[0].Kind != KindResponse {
			t.Fatalf("ErrorResponse(%q) = %s: %v %+v", id, b, err, m)
		}
		if !json.Valid(b) || b[len(b)-1] != '\n' {
			t.Fatalf("not one JSON line: %q", b)
		}
	}
}

// FuzzPeek checks that Peek never panics and agrees with encoding/json on
// what is valid JSON (Peek is stricter only about invalid UTF-8).
func FuzzPeek(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":"b","result":{}}]`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`,
		`{"a":[1,2,{"b":null,"c":[true,false]}],"d":"\u00e9\n"}`,
		`[]`, `{}`, `"x"`, `-0.5e-3`, `{"a":01}`, `[1,]`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		err := Peek(b, &m)
		valid := json.Valid(b)
		if err == nil && !valid {
			t.Fatalf("Peek accepted invalid JSON %q", b)
		}
		if err != nil && valid && utf8.Valid(b) && !strings.Contains(err.Error(), "nesting") && !errors.Is(err, ErrAmbiguous) {
			t.Fatalf("Peek rejected valid JSON %q: %v", b, err)
		}
		if err == nil {
			for _, e := range m.Envelopes {
				for _, sp := range []Span{e.ID, e.Params, e.Result, e.Error} {
					if !sp.Empty() && !json.Valid(sp.Of(b)) {
						t.Fatalf("span %v of %q is not a JSON value", sp, b)
					}
				}
			}
		}
	})
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("{}\n\r\n[]"), int64(0))
	f.Add([]byte("aaaa\nbb\n"), int64(3))
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		r := NewReader(strings.NewReader(string(b)), limit)
		var total int
		for {
			msg, err := r.Next()
			if err != nil {
				if limit <= 0 && !errors.Is(err, io.EOF) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if limit > 0 && int64(len(msg)) > limit {
				t.Fatalf("message of %d bytes passed a %d limit", len(msg), limit)
			}
			if isBlank(msg) {
				t.Fatalf("blank message returned")
			}
			total += len(msg)
		}
		if total > len(b) {
			t.Fatalf("returned more bytes than read")
		}
	})
}

func TestMembersElementsSplice(t *testing.T) {
	obj := []byte(` {"tools":[{"name":"a"}, {"name":"b"}] , "nextCursor":"c\u0031","x":{"tools":1}}`)
	m, ok := Members(obj)
	if !ok || string(m["tools"].Of(obj)) != `[{"name":"a"}, {"name":"b"}]` || string(m["nextCursor"].Of(obj)) != `"c\u0031"` || len(m) != 3 {
		t.Fatalf("Members = %v %v", m, ok)
	}
	els, ok := Elements(m["tools"].Of(obj))
	if !ok || len(els) != 2 {
		t.Fatalf("Elements = %v %v", els, ok)
	}
	got := Splice(obj, m["tools"], []byte(`[{"name":"b"}]`))
	if string(got) != ` {"tools":[{"name":"b"}] , "nextCursor":"c\u0031","x":{"tools":1}}` {
		t.Fatalf("Splice = %s", got)
	}
	for _, bad := range []string{`[]`, `{"a":}`, `{"a":1`, `{"a":1} x`} {
		if _, ok := Members([]byte(bad)); ok {
			t.Errorf("Members(%s) ok", bad)
		}
	}
}

// TestMemberAgreesWithMembers: Member finds what Members keys, for the
// same documents (duplicates, escaped names, nesting, invalid JSON).
func TestMemberAgreesWithMembers(t *testing.T) {
	for _, tc := range []struct {
		doc, name string
	}{
		{`{"isError":true,"content":[]}`, "isError"},
		{` { "content" : [ {"isError":true} ] , "isError" : false } `, "isError"},
		{`{"content":[],"nested":{"isError":true}}`, "isError"},
		{`{"isError":true,"isError":false}`, "isError"},
		{`{"isError":false,"isError":true}`, "isError"},
		{`{"is\u0045rror":true}`, "isError"},
		{`{"isError":true,"is\u0045rror":false}`, "isError"},
		{`{"is\ud800rror":true}`, "isError"},
		{`{}`, "isError"},
		{`{"isError":true`, "isError"},
		{`{"isError":true} x`, "isError"},
		{`[{"isError":true}]`, "isError"},
		{`{"isError":}`, "isError"},
		{`{"a":1,"b":[1,2,{"c":"d"}]}`, "b"},
		{``, "a"},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			m, okAll := Members([]byte(tc.doc))
			want, wantOK := m[tc.name]
			wantOK = okAll && wantOK
			got, ok := Member([]byte(tc.doc), tc.name)
			if ok != wantOK || (ok && got != want) {
				t.Fatalf("Member = %v %v, Members gives %v %v", got, ok, want, wantOK)
			}
		})
	}
}

// TestPeekBoundsBatches: a batch of more than MaxBatchElements elements
// is refused before an envelope is made for each (found by a red-team
// helper: 16 MiB of numbers took 5.8 GiB and kept 1.1 GiB).
func TestPeekBoundsBatches(t *testing.T) {
	batch := func(n int) []byte {
		return []byte("[" + strings.TrimSuffix(strings.Repeat(`{"jsonrpc":"2.0","method":"m"},`, n), ",") + "]")
	}
	var m Message
	if err := Peek(batch(MaxBatchElements), &m); err != nil || len(m.Envelopes) != MaxBatchElements {
		t.Fatalf("a batch at the bound: %v, %d envelopes", err, len(m.Envelopes))
	}
	if err := Peek(batch(MaxBatchElements+1), &m); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("a batch past the bound: %v, want ErrBatchTooLarge", err)
	}
	var before, after runtime.MemStats
	huge := []byte("[" + strings.Repeat("1,", 4<<20) + "1]")
	runtime.ReadMemStats(&before)
	err := Peek(huge, &Message{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBatchTooLarge) || after.TotalAlloc-before.TotalAlloc > 1<<20 {
		t.Fatalf("a batch of 4 million numbers: %v, %d bytes allocated", err, after.TotalAlloc-before.TotalAlloc)
	}
}
