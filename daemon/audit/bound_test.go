package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestBound(t *testing.T) {
	long := strings.Repeat("a", MaxString+1)
	euro := strings.Repeat("€", 400) // 1200 bytes: 1024 falls inside a rune
	invalid := strings.Repeat("\xff", 2000)
	raw := `{"name":"` + strings.Repeat("c", 2000) + `"}`
	type named struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"short string", "hello", "hello"},
		{"string at the cap", long[:MaxString], long[:MaxString]},
		{"string over the cap", long, Truncated{Bytes: MaxString + 1, SHA256: sha(long), Prefix: long[:MaxString]}},
		{"cut on a rune boundary", euro, Truncated{Bytes: 1200, SHA256: sha(euro), Prefix: strings.Repeat("€", 341)}},
		{"invalid UTF-8", invalid, Truncated{Bytes: 2000, SHA256: sha(invalid), Prefix: "\uFFFD"}},
		{"long number", json.Number(strings.Repeat("9", 2000)), Truncated{Bytes: 2000, SHA256: sha(strings.Repeat("9", 2000)), Prefix: strings.Repeat("9", MaxString)}},
		{"small raw JSON", json.RawMessage(`{"name":"x"}`), json.RawMessage(`{"name":"x"}`)},
		{"raw JSON over the cap", json.RawMessage(raw), Truncated{Bytes: len(raw), SHA256: sha(raw), Prefix: raw[:MaxString]}},
		{"invalid raw JSON", json.RawMessage(`{"a":`), `{"a":`},
		{"long bytes", bytes.Repeat([]byte{1}, 2000), Truncated{Bytes: 2000, SHA256: sha(string(bytes.Repeat([]byte{1}, 2000)))}},
		{"nested", map[string]any{"a": []any{1, map[string]any{"b": long}}, "c": "short"},
			map[string]any{"a": []any{1, map[string]any{"b": Truncated{Bytes: MaxString + 1, SHA256: sha(long), Prefix: long[:MaxString]}}}, "c": "short"}},
		{"long key", map[string]any{long: 1},
			map[string]any{long[:MaxString] + "…[sha256:" + sha(long) + " bytes:1025]": 1}},
		{"string slice", []string{"x", long}, []any{"x", Truncated{Bytes: MaxString + 1, SHA256: sha(long), Prefix: long[:MaxString]}}},
		{"string map", map[string]string{"k": long}, map[string]string{"k": long[:MaxString] + "…[sha256:" + sha(long) + " bytes:1025]"}},
		{"small struct", named{Name: "x", N: 1}, named{Name: "x", N: 1}},
		{"large struct", named{Name: long, N: 1},
			map[string]any{"name": Truncated{Bytes: MaxString + 1, SHA256: sha(long), Prefix: long[:MaxString]}, "n": float64(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := bound(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("bound (-want +got):\n%s", diff)
			}
			if changed == cmp.Equal(tt.in, got) {
				t.Errorf("changed = %v", changed)
			}
			if tr, ok := got.(Truncated); ok && (!utf8.ValidString(tr.Prefix) || len(tr.Prefix) > MaxString) {
				t.Errorf("prefix of %d bytes, valid UTF-8 %v", len(tr.Prefix), utf8.ValidString(tr.Prefix))
			}
		})
	}
}

func TestBoundCopiesOnWrite(t *testing.T) {
	long := strings.Repeat("a", MaxString+1)
	inner := map[string]any{"b": long}
	list := []any{long}
	rec := Record{"type": "x", "args": map[string]any{"inner": inner, "list": list}}
	if _, err := render(rec); err != nil {
		t.Fatal(err)
	}
	if inner["b"] != long || list[0] != long {
		t.Fatal("bounding changed the caller's nested values")
	}
	if _, ok := rec["args"].(map[string]any)["inner"].(map[string]any)["b"].(Truncated); !ok {
		t.Fatalf("the record does not hold the bounded value: %v", rec["args"])
	}
}

// TestHugeValuesAreBounded writes what once made a 152 MB line: a 12 MB
// tool name, a large client claim and many long fields.
func TestHugeValuesAreBounded(t *testing.T) {
	dir := t.TempDir()
	var seen Record
	l := openLog(t, dir, Options{OnRecord: func(e Entry) { seen = e.Record() }})
	tool := strings.Repeat("t", 12<<20)
	claims := `{"name":"` + strings.Repeat("n", 3<<20) + `"}`
	rec := Record{"type": "tool.call", "session": "s1", "agent": strings.Repeat("g", 5000), "tool": tool,
		"client_info": json.RawMessage(claims), "arguments": map[string]any{"list": make([]any, 0)}}
	for i := 0; i < 200; i++ {
		rec["arguments"].(map[string]any)["list"] = append(rec["arguments"].(map[string]any)["list"].([]any), strings.Repeat("x", 900))
	}
	if err := l.Append(rec); err != nil {
		t.Fatal(err)
	}
	must(t, l.Close())
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	line := lines[len(lines)-1]
	if len(line) > MaxRecord+1024 {
		t.Fatalf("the record takes %d bytes, over the %d budget", len(line), MaxRecord)
	}
	if r, err := verifyDir(dir); err != nil || r.Records != 2 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"tool":        map[string]any{"bytes": float64(len(tool)), "sha256": sha(tool), "truncated": tool[:MaxString]},
		"client_info": map[string]any{"bytes": float64(len(claims)), "sha256": sha(claims), "truncated": claims[:MaxString]},
		"agent":       map[string]any{"bytes": float64(5000), "sha256": sha(strings.Repeat("g", 5000)), "truncated": strings.Repeat("g", MaxString)},
		"session":     "s1",
		"type":        "tool.call",
	}
	for k, w := range want {
		if diff := cmp.Diff(w, got[k]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", k, diff)
		}
	}
	// 200 strings of 900 bytes fit no budget: the member became a digest
	// of its encoding, with no prefix.
	args, _ := got["arguments"].(map[string]any)["list"].(map[string]any)
	if args["truncated"] != "" || args["sha256"] == nil || args["bytes"].(float64) < 180000 {
		t.Errorf("arguments = %.200v", got["arguments"])
	}
	if seen["hash"] != got["hash"] || seen["tool"].(Truncated).Bytes != len(tool) {
		t.Errorf("OnRecord saw a record other than the one written: hash %v", seen["hash"])
	}
}

// TestRenderAgreesWithEncodingJSON: within the bounds, the canonical form
// is exactly encoding/json's rendering of the record.
func TestRenderAgreesWithEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
	}{
		{"scalars", Record{"s": "x", "b": true, "n": nil, "i": -3, "i32": int32(7), "i64": int64(-1 << 40), "u32": uint32(9), "u64": uint64(1 << 63), "f": 1.5e-7}},
		{"escapes", Record{"html": "<a href='x'>&</a>", "ctl": "a\tb\nc\x00", "quote": `"\`, "line sep": "a\u2028b\u2029", "utf8": "é€😀", "bad utf8": "a\xffb"}},
		{"keys", Record{"<k>": 1, "é": 2, "a\"b": 3, "": 4}},
		{"nested", Record{"m": map[string]any{"z": 1, "a": []any{"x", 2.5, nil}}, "raw": json.RawMessage(`{ "a" : [1, 2] }`), "ss": []string{"a", "b"}}},
		{"every byte, more keys than are sorted inline", everyByte()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(map[string]any(tt.rec))
			if err != nil {
				t.Fatal(err)
			}
			got, err := render(tt.rec)
			if err != nil || string(got) != string(want) {
				t.Fatalf("render = %s, %v\nencoding/json = %s", got, err, want)
			}
		})
	}
}

// everyByte is a record with one key and one value per byte value.
func everyByte() Record {
	rec := Record{}
	for c := range 256 {
		rec["k"+string(rune(c))+string([]byte{byte(c)})] = "v" + string([]byte{byte(c)})
	}
	return rec
}

func FuzzRender(f *testing.F) {
	for _, s := range []string{"", "a", "<&>", "\x00\x1f", "\u2028", "\xff\xfe", "é", `\"`} {
		f.Add(s, s+"k")
	}
	f.Fuzz(func(t *testing.T, v, k string) {
		rec := Record{k: v, "type": v}
		want, err := json.Marshal(map[string]any(rec))
		if err != nil {
			return // nothing to compare with
		}
		got, err := render(rec)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) <= MaxString && len(k) <= MaxString && string(got) != string(want) {
			t.Fatalf("render = %s\nencoding/json = %s", got, want)
		}
		if !json.Valid(got) || len(got) > MaxRecord+2*MaxString {
			t.Fatalf("render gave %d bytes, valid JSON %v", len(got), json.Valid(got))
		}
	})
}

// appendValue's fast paths must render exactly what encoding/json does,
// or a record's bytes would depend on which path took it.
func TestAppendValueMatchesJSON(t *testing.T) {
	values := []any{
		0.0, 1.5, -2.25, 1e-6, 9.99e-7, 1e20, 1e21, 123456789.125, 0.1 + 0.2, math.Copysign(0, -1),
		json.RawMessage(`7`), json.RawMessage(`-12`), json.RawMessage(`"abc-1"`),
		json.RawMessage(`{"a":[1,2,{"b":null}]}`), json.RawMessage(`{ "a" : 1 }`),
		json.RawMessage(`"<script>&"`), json.RawMessage(`"\u2028 é"`), json.RawMessage("\"\u2028\""),
		json.RawMessage(`[true,false]`), json.RawMessage("{\n\"k\":\t1}"),
		map[string]any{"z": 1.0, "a": "x<y", "m": map[string]any{"é": []any{true, nil, "\u2028"}}, "<&>": json.RawMessage(`{ "b" : 2 }`)},
		map[string]any(nil), map[string]any{}, Record{"type": "t", "n": int64(-3)}, []any(nil), []any{}, []any{1.5, []string{"a", "\x00"}},
		[]string(nil), []string{}, []string{"b", "a"}, map[string]any{"\xff": "\xfe"},
	}
	for _, v := range values {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%v): %v", v, err)
		}
		got, err := appendValue(nil, v)
		if err != nil {
			t.Fatalf("appendValue(%v): %v", v, err)
		}
		if string(got) != string(want) {
			t.Errorf("appendValue(%#v) = %s, json.Marshal = %s", v, got, want)
		}
	}
	for _, v := range []any{math.NaN(), math.Inf(1), math.Inf(-1), map[string]any{"a": math.NaN()}, []any{math.Inf(1)}} {
		if _, err := appendValue(nil, v); err == nil {
			t.Errorf("appendValue(%v): no error; JSON has no such number", v)
		}
	}
}

// TestBoundKeepsEveryValueOfLongKeys: a map holding a long key and, as
// another key, that key's bounded form keeps both values, whatever order
// the map is walked in (it was lost in most runs when entries were
// replaced one at a time), at the top level of a record, in nested maps
// and in string maps; and a long key is bounded once, its digest and
// length those of the key as given.
func TestBoundKeepsEveryValueOfLongKeys(t *testing.T) {
	long := strings.Repeat("k", 2000)
	twin := boundKey(long) // itself over MaxString: bounded again
	bad := strings.Repeat("\xff", 2000)
	short := boundKey(bad) // invalid UTF-8 collapses: a short bounded key
	if len(twin) <= MaxString || len(short) > MaxString {
		t.Fatalf("premise: bounded lengths %d and %d", len(twin), len(short))
	}
	wantOnce := func(t *testing.T, b []byte, vals ...string) {
		t.Helper()
		for _, v := range vals {
			if strings.Count(string(b), v) != 1 {
				t.Fatalf("value %q %d times in %.300s…", v, strings.Count(string(b), v), b)
			}
		}
	}
	tests := []struct {
		name string
		rec  func() Record
		vals []string
	}{
		{"top level", func() Record { return Record{long: "value-of-long", twin: "value-of-twin"} }, []string{"value-of-long", "value-of-twin"}},
		{"nested map", func() Record {
			return Record{"arguments": map[string]any{long: "value-of-long", twin: "value-of-twin"}}
		}, []string{"value-of-long", "value-of-twin"}},
		{"string map", func() Record {
			return Record{"env": map[string]string{long: "value-of-long", twin: "value-of-twin"}}
		}, []string{"value-of-long", "value-of-twin"}},
		{"a short bounded key beside a kept key equal to it", func() Record {
			return Record{"m": map[string]any{bad: "value-of-bad", short: "value-of-short"}}
		}, []string{"value-of-bad", "value-of-short"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 { // map order differs from run to run
				b, err := render(tt.rec())
				if err != nil {
					t.Fatal(err)
				}
				wantOnce(t, b, tt.vals...)
			}
		})
	}
	b, err := render(Record{"a": 1, long: 1})
	if err != nil || !strings.Contains(string(b), "bytes:2000]") || strings.Contains(string(b), "bytes:1") {
		t.Fatalf("a 2000-byte key is not bounded once: %s, %v", b, err)
	}
}

// TestOversizedArgumentsKeepTheirSmallValues: a record over MaxRecord
// loses its arguments' largest members, not all of them: the decisive
// short value stays (before, sixty 3 KB texts took the command with
// them: found by a red-team helper).
func TestOversizedArgumentsKeepTheirSmallValues(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n, size  int  // members of size bytes beside the command
		wantKept bool // the command kept
	}{
		{"sixty long texts", 60, 3000, true},
		{"a few long texts", 5, 30000, true},
		{"nothing to shrink", 3, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]any{"command": "/bin/true"}
			for i := 0; i < tc.n; i++ {
				args[fmt.Sprintf("text%02d", i)] = strings.Repeat(string(rune('a'+i%26)), tc.size)
			}
			line, err := render(Record{"type": "tool.call", "session": "s", "arguments": args})
			if err != nil {
				t.Fatal(err)
			}
			if len(line) > MaxRecord {
				t.Fatalf("%d bytes, over %d", len(line), MaxRecord)
			}
			var got map[string]any
			must(t, json.Unmarshal(line, &got))
			a, _ := got["arguments"].(map[string]any)
			if (a["command"] == "/bin/true") != tc.wantKept || len(a) != tc.n+1 {
				t.Errorf("arguments %.300v: want the command kept and every member named", a)
			}
		})
	}
}
