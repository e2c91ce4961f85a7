package wire

import (
	"errors"
	"reflect"
	"testing"
)

func TestObject(t *testing.T) {
	read := []string{"name", "arguments"}
	for _, tc := range []struct {
		in        string
		ambiguous bool
		names     []string
	}{
		{`{"name":"echo","arguments":{}}`, false, []string{"name", "arguments"}},
		{`{"name":"echo","other":1,"Other":2}`, true, nil},
		{`{"name":"echo","name":"x"}`, true, nil},
		{`{"name":"echo","n\u0061me":"x"}`, true, nil},
		{`{"n\u0061me":"x"}`, true, nil},
		{`{"NAME":"x"}`, true, nil},
		{`{"Arguments":{}}`, true, nil},
		{`{"argument\u017f":{}}`, true, nil},  // long s folds to s
		{`{"\u212aey":1,"key":2}`, true, nil}, // Kelvin sign folds to k
		{`{"\ud800":1}`, true, nil},           // unpaired surrogate
		{`{"\ud83d\ude00":1}`, false, []string{"\U0001F600"}},
		{`{"x\u0041":1,"xa":2}`, true, nil},
		{`{}`, false, []string{}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			m, err := Object([]byte(tc.in), read)
			if got := errors.Is(err, ErrAmbiguous); got != tc.ambiguous {
				t.Fatalf("ambiguous = %v (err %v), want %v", got, err, tc.ambiguous)
			}
			if tc.ambiguous {
				return
			}
			var names []string
			for n := range m {
				names = append(names, n)
			}
			if len(names) != len(tc.names) {
				t.Fatalf("names %v, want %v", names, tc.names)
			}
		})
	}
}

func TestTree(t *testing.T) {
	for _, tc := range []struct {
		in        string
		read      []string
		ambiguous bool
	}{
		{`{"a":{"b":[{"c":1},{"c":2}]}}`, nil, false},
		{`{"a":{"b":[{"c":1,"C":2}]}}`, nil, true},
		{`{"a":{"b":[{"c":1,"c":2}]}}`, nil, true},
		{`{"a":{"Path":"/etc"}}`, []string{"path"}, true},
		{`{"a":{"Path":"/etc"}}`, nil, false},
		{`["x","\udc00"]`, nil, true},
		{`"plain"`, nil, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			err := Tree([]byte(tc.in), tc.read)
			if got := errors.Is(err, ErrAmbiguous); got != tc.ambiguous {
				t.Fatalf("ambiguous = %v (err %v), want %v", got, err, tc.ambiguous)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
		err  bool
	}{
		{`{"a":1,"b":[true,null,"x"],"c":2.5}`, map[string]any{"a": int64(1), "b": []any{true, nil, "x"}, "c": 2.5}, false},
		{`9007199254740993`, int64(9007199254740993), false},
		{`1e400`, nil, true},
		{`"a\/\u00e9\ud83d\ude00"`, "a/é\U0001F600", false},
		{`"\ud800"`, nil, true},
		{`{"a":1,"a":2}`, map[string]any{"a": int64(2)}, false}, // last wins; Tree refuses it first
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Decode([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestPeekAmbiguousEnvelope(t *testing.T) {
	for _, tc := range []struct {
		in        string
		ambiguous bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, false},
		{`{"jsonrpc":"2.0","ID":1,"method":"tools/call"}`, true},
		{`{"jsonrpc":"2.0","\u0069d":1,"method":"tools/call"}`, true},
		{`{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call"}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"x"}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","param\u017f":{}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","\ud800":{}}`, true},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","extra":1,"extra":2}`, false}, // read by nobody
		{`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","Id":2,"method":"b"}]`, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var m Message
			if err := Peek([]byte(tc.in), &m); err != nil {
				t.Fatal(err)
			}
			e := m.Envelopes[len(m.Envelopes)-1]
			if got := e.Ambiguous != ""; got != tc.ambiguous {
				t.Fatalf("ambiguous = %v (%q), want %v", got, e.Ambiguous, tc.ambiguous)
			}
			if tc.ambiguous && e.Kind != KindInvalid {
				t.Fatalf("an ambiguous envelope has kind %v", e.Kind)
			}
		})
	}
}
