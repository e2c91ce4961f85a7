package wire

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
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

// StrictMember reads one member as Object would with it among the read
// names, and agrees with Member on everything it accepts.
func TestStrictMember(t *testing.T) {
	for _, tc := range []struct {
		doc       string
		found     bool
		ambiguous bool
	}{
		{`{"taskId":"T1"}`, true, false},
		{`{"other":1,"taskId":"T1","Other":2}`, true, false}, // names it does not read are not compared
		{`{"taskid2":1,"taskId":"T1"}`, true, false},
		{`{"nested":{"TASKID":"T2"},"taskId":"T1"}`, true, false},
		{`{}`, false, false},
		{`{"other":1}`, false, false},
		{`{"taskId":"T1","TASKID":"T2"}`, false, true},
		{`{"TaskId":"T2","taskId":"T1"}`, false, true},
		{`{"TASKID":"T2"}`, false, true},
		{`{"ta\u017fkId":"T2"}`, false, true}, // long s folds to s
		{`{"taskId":"T1","taskId":"T2"}`, false, true},
		{`{"task\u0049d":"T2"}`, false, true},
		{`{"taskId":"T1","task\u0049d":"T2"}`, false, true},
		{`{"t\ud800":1,"taskId":"T1"}`, false, true}, // unpaired surrogate
	} {
		t.Run(tc.doc, func(t *testing.T) {
			sp, found, err := StrictMember([]byte(tc.doc), "taskId")
			if errors.Is(err, ErrAmbiguous) != tc.ambiguous || found != tc.found || (err != nil && !tc.ambiguous) {
				t.Fatalf("StrictMember = %v, %v, %v; want found %v, ambiguous %v", sp, found, err, tc.found, tc.ambiguous)
			}
			if want, ok := Member([]byte(tc.doc), "taskId"); found && (!ok || sp != want) {
				t.Fatalf("StrictMember = %v, Member = %v %v", sp, want, ok)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `"taskId"`, `{"taskId":}`, `{"taskId":1} x`} {
		if _, _, err := StrictMember([]byte(bad), "taskId"); err == nil || errors.Is(err, ErrAmbiguous) {
			t.Errorf("StrictMember(%q) = %v, want a syntax error", bad, err)
		}
	}
	doc := []byte(`{"_meta":{"progressToken":1},"taskId":"T1"}`)
	if n := testing.AllocsPerRun(100, func() { _, _, _ = StrictMember(doc, "taskId") }); n != 0 {
		t.Errorf("StrictMember allocated %v times", n)
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

// Objects with many members use the fold map: collisions are still found,
// wherever they are, and the check stays linear in the member count.
func TestObjectManyMembers(t *testing.T) {
	build := func(n int, extra string) []byte {
		b := []byte("{")
		for i := range n {
			b = fmt.Appendf(b, `"key%d":%d,`, i, i)
		}
		return append(b, extra+"}"...)
	}
	for _, tc := range []struct {
		name      string
		extra     string
		ambiguous bool
	}{
		{"distinct", `"last":1`, false},
		{"duplicate", `"key7":1`, true},
		{"case", `"KEY70":1`, true},
		{"Kelvin sign", `"\u212aey9":1`, true},
		{"read name in another case", `"Path":1`, true},
		{"read name", `"path":1`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := []string{"path", "a", "b", "c", "d", "e", "f", "g", "h", "i"} // more than smallSet: the read map too
			_, err := Object(build(100, tc.extra), read)
			if errors.Is(err, ErrAmbiguous) != tc.ambiguous {
				t.Fatalf("Object: err = %v, want ambiguous %v", err, tc.ambiguous)
			}
			err = Tree(build(100, tc.extra), read)
			if errors.Is(err, ErrAmbiguous) != tc.ambiguous {
				t.Fatalf("Tree: err = %v, want ambiguous %v", err, tc.ambiguous)
			}
		})
	}
}

func TestFoldKey(t *testing.T) {
	for _, pair := range [][2]string{{"Kelvin", "\u212aelvin"}, {"params", "param\u017f"}, {"ID", "id"}, {"\u00df", "\u1e9e"}} {
		if foldKey(pair[0]) != foldKey(pair[1]) || !strings.EqualFold(pair[0], pair[1]) {
			t.Errorf("%q and %q: fold keys %q %q", pair[0], pair[1], foldKey(pair[0]), foldKey(pair[1]))
		}
	}
	if foldKey("path") == foldKey("paths") {
		t.Error("different names share a key")
	}
}

func TestPeekCarriageReturn(t *testing.T) {
	for _, tc := range []struct {
		in        string
		ambiguous bool
	}{
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r\n", false},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r", false},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n", false},
		{"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":\r{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"secret\"}}\r}\n", true},
		{"{\"jsonrpc\":\"2.0\",\r\"id\":1,\"method\":\"ping\"}\n", true},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r\r\n", true},
	} {
		var m Message
		err := Peek([]byte(tc.in), &m)
		if errors.Is(err, ErrAmbiguous) != tc.ambiguous {
			t.Errorf("%q: err = %v, want ambiguous %v", tc.in, err, tc.ambiguous)
		}
	}
}

func TestPlainID(t *testing.T) {
	for id, want := range map[string]bool{`1`: true, `0`: true, `-7`: true, `9007199254740991`: true, `-9007199254740991`: true,
		`"x"`: true, `"9007199254740993"`: true, `"1e0"`: true, `null`: true,
		`1e0`: false, `1.0`: false, `-0`: false, `10E-1`: false, `1.5`: false,
		// a double holds these no more: 2^53+1 reads as 2^53
		`9007199254740992`: false, `9007199254740993`: false, `-9007199254740993`: false, `99999999999999999999`: false} {
		if got := PlainID([]byte(id)); got != want {
			t.Errorf("PlainID(%s) = %v, want %v", id, got, want)
		}
	}
}

// TestDecodableAgreesWithUnquote: the allocation-free check accepts
// exactly the string literals unquote accepts.
func TestDecodableAgreesWithUnquote(t *testing.T) {
	for _, lit := range []string{`""`, `"plain"`, `"a\nb"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud83d"`, `"x\udc00y"`,
		`"\\ud83d"`, `"é"`, `"`, `x`, `"\"`} {
		_, want := unquote([]byte(lit))
		if got := decodable([]byte(lit)); got != want {
			t.Errorf("decodable(%s) = %v, unquote accepts it: %v", lit, got, want)
		}
	}
}

// TestTreeValuesAndMemberBound: TreeValues counts what Decode would build,
// and the strict walks refuse an object of more than MaxObjectMembers
// members (whose names they would keep), at any depth.
func TestTreeValuesAndMemberBound(t *testing.T) {
	members := func(n int) string {
		b := []byte("{")
		for i := range n {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `"k%d":0`, i)
		}
		return string(append(b, '}'))
	}
	for _, tc := range []struct {
		name   string
		doc    string
		values int
		tooBig bool
	}{
		{"scalar", `1`, 1, false},
		{"empty object", `{}`, 1, false},
		{"object", `{"a":1,"b":"x"}`, 3, false},
		{"array", `[1,[2,3],{"c":null}]`, 7, false},
		{"at the member bound", members(MaxObjectMembers), MaxObjectMembers + 1, false},
		{"past the member bound", members(MaxObjectMembers + 1), 0, true},
		{"past the member bound, nested", `{"a":[` + members(MaxObjectMembers+1) + `]}`, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := TreeValues([]byte(tc.doc), nil)
			if tc.tooBig {
				if !errors.Is(err, ErrTooManyMembers) {
					t.Fatalf("TreeValues: %v, want ErrTooManyMembers", err)
				}
				if _, err := Object([]byte(tc.doc), []string{"a"}); tc.doc[1] == '"' && tc.doc[2] == 'k' && !errors.Is(err, ErrTooManyMembers) {
					t.Fatalf("Object: %v, want ErrTooManyMembers", err)
				}
				return
			}
			if err != nil || n != tc.values {
				t.Fatalf("TreeValues = %d, %v; want %d", n, err, tc.values)
			}
		})
	}
}
