package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fieldsCases are records in every shape the encoder treats apart:
// plain values, values bounded to MaxString, keys over MaxString, a
// record over MaxRecord, a key given twice, an empty record.
func fieldsCases() []struct {
	name   string
	fields []Field
} {
	long := strings.Repeat("é", MaxString) // 2 bytes a rune: cut on a rune boundary
	big := make([]any, 120)
	for i := range big {
		big[i] = strings.Repeat("x", 900)
	}
	base := []Field{{"type", "tool.call"}, {"session", "s1"}, {"agent", "claude-desktop"}, {"agent_instance", "cd-1"},
		{"user", "alice"}, {"server", "everything"}, {"time", "2026-12-03T10:00:00Z"}}
	with := func(extra ...Field) []Field { return append(append([]Field(nil), base...), extra...) }
	return []struct {
		name   string
		fields []Field
	}{
		{"a call", with(Field{"method", "tools/call"}, Field{"request_id", json.RawMessage(`7`)}, Field{"decision", "allow"},
			Field{"consent", "c1"}, Field{"tool", "echo"}, Field{"args_digest", "abc"},
			Field{"arguments", map[string]any{"message": "hi", "n": float64(3), "list": []any{"a", true, nil}}})},
		{"a result", with(Field{"tool", "echo"}, Field{"request_id", json.RawMessage(`"r-1"`)}, Field{"is_error", false},
			Field{"result_bytes", 1234}, Field{"latency_ms", 0.734}, Field{"count", uint32(7)}, Field{"big", int64(1) << 40})},
		{"values over MaxString", with(Field{"tool", long}, Field{"request_id", json.RawMessage(`"` + strings.Repeat("i", 3000) + `"`)},
			Field{"arguments", map[string]any{"b": long}})},
		{"a key over MaxString", with(Field{strings.Repeat("k", MaxString+10), "v"}, Field{"tool", "echo"})},
		{"over MaxRecord", with(Field{"tool", "echo"}, Field{"arguments", map[string]any{"list": big}}, Field{"other", []any{"y"}})},
		// Bounded once, these would be bounded again on the map path (a
		// bounded key, or a string-only map's bounded value, is itself
		// over MaxString): what is encoded as a map must start from the
		// values as given.
		{"over MaxRecord, with a long nested key", with(Field{"tool", "echo"}, Field{"pad", big},
			Field{"arguments", map[string]any{strings.Repeat("k", MaxString+10): "v"}})},
		{"over MaxRecord, with a long value in a string map", with(Field{"pad", big},
			Field{"env", map[string]string{"a": strings.Repeat("v", 2000)}})},
		{"over MaxRecord, with a long key in a struct", with(Field{"pad", big},
			Field{"s", struct{ M map[string]string }{map[string]string{strings.Repeat("k", MaxString+10): "v"}}})},
		{"a key given twice", with(Field{"tool", "first"}, Field{"decision", "deny"}, Field{"tool", "second"})},
		{"only a type", []Field{{"type", "x"}, {"time", "2026-12-03T10:00:00Z"}}},
		{"unsorted, with a stale chain", append([]Field{{"seq", uint64(99)}, {"prev", "old"}, {"hash", "stale"}}, with(Field{"z", 1}, Field{"a", 2})...)},
	}
}

// writeOne appends e to a fresh log in dir and returns the log's lines
// and what OnRecord saw.
func writeOne(t *testing.T, dir string, e Entry) ([]byte, Record) {
	t.Helper()
	var seen Record
	l := openLog(t, dir, Options{OnRecord: func(e Entry) { seen = e.Record() }})
	if err := l.Append(e); err != nil {
		t.Fatal(err)
	}
	must(t, l.Close())
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return b, seen
}

// TestFieldsEncodeAsTheirRecord: Fields and the Record of the same
// fields give the same line (so the same hash and chain), and are left
// holding the same record, whichever way the encoder took (bounded, key
// bounded, shrunk). Both are encoded by logs at the same point of the
// same chain; then the Fields are written through a real log, whose
// chain verifies and whose OnRecord sees what was written.
func TestFieldsEncodeAsTheirRecord(t *testing.T) {
	for _, tc := range fieldsCases() {
		t.Run(tc.name, func(t *testing.T) {
			rec := Record{}
			f, again := NewFields(len(tc.fields)), NewFields(0)
			for _, fd := range tc.fields {
				rec[fd.Key] = fd.Value
				f.Add(fd.Key, fd.Value)
				again.Add(fd.Key, fd.Value)
			}
			lR := &Log{seq: 41, prev: strings.Repeat("ab", 32)}
			lF := &Log{seq: 41, prev: strings.Repeat("ab", 32)}
			lineR, errR := lR.encode(rec)
			lineF, errF := lF.encode(f)
			if errR != nil || errF != nil {
				t.Fatalf("encode: record %v, fields %v", errR, errF)
			}
			if !bytes.Equal(lineR, lineF) {
				t.Fatalf("the lines differ:\nrecord: %.400s\nfields: %.400s", lineR, lineF)
			}
			if len(lineF) > MaxRecord+1024 {
				t.Errorf("a line of %d bytes, over the budget", len(lineF))
			}
			if lR.prev != lF.prev || lR.seq != lF.seq {
				t.Errorf("the chains differ: %d %s, %d %s", lR.seq, lR.prev, lF.seq, lF.prev)
			}
			jr, _ := json.Marshal(rec)
			jf, _ := json.Marshal(f.Record())
			if diff := cmp.Diff(string(jr), string(jf)); diff != "" {
				t.Errorf("left holding different records (-record +fields):\n%s", diff)
			}

			dir := t.TempDir()
			lines, seen := writeOne(t, dir, again)
			if r, err := verifyDir(dir); err != nil || r.Records != 2 {
				t.Fatalf("verify = %+v, %v", r, err)
			}
			var written map[string]any
			must(t, json.Unmarshal(finalLine(lines), &written))
			js, _ := json.Marshal(seen)
			jw, _ := json.Marshal(written)
			if diff := cmp.Diff(string(jw), string(js)); diff != "" {
				t.Errorf("OnRecord saw a record other than the one written (-written +seen):\n%s", diff)
			}
		})
	}
}

// TestFieldsWrittenTwice: Fields written once and then again (a commit
// that failed and is retried, or a caller's mistake) are written the
// second time as new: the first write's seq, prev and hash give way.
func TestFieldsWrittenTwice(t *testing.T) {
	f := NewFields(4)
	for _, fd := range fieldsCases()[0].fields {
		f.Add(fd.Key, fd.Value)
	}
	first, _ := writeOne(t, t.TempDir(), f)
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	must(t, l.Append(Record{"type": "other", "time": "2026-12-03T09:00:00Z"}))
	must(t, l.Append(f))
	must(t, l.Close())
	if r, err := verifyDir(dir); err != nil || r.Records != 3 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var a, c map[string]any
	must(t, json.Unmarshal(finalLine(first), &a))
	must(t, json.Unmarshal(finalLine(b), &c))
	if a["seq"] == c["seq"] || a["hash"] == c["hash"] || c["seq"] != float64(3) {
		t.Fatalf("the second write kept the first's chain: first %v/%v, second %v/%v", a["seq"], a["hash"], c["seq"], c["hash"])
	}
}

// TestFieldsUnencodable: a value JSON cannot hold fails Fields as it
// fails a Record: the caller is told which field, nothing is written.
func TestFieldsUnencodable(t *testing.T) {
	var dropped []DropReason
	dir := t.TempDir()
	l := openLog(t, dir, Options{OnDrop: func(_ Record, reason DropReason, _ error) { dropped = append(dropped, reason) }})
	f := NewFields(2)
	f.Add("type", "x")
	f.Add("bad", make(chan int))
	err := l.Append(f)
	if err == nil || !strings.Contains(err.Error(), `field "bad"`) {
		t.Fatalf("Append = %v, want an error naming the field", err)
	}
	must(t, l.Append(Record{"type": "after"}))
	must(t, l.Close())
	if r, err := verifyDir(dir); err != nil || r.Records != 2 {
		t.Fatalf("verify = %+v, %v (the failed record must leave no trace)", r, err)
	}
	if len(dropped) != 1 || dropped[0] != DropEncodeFailed {
		t.Fatalf("drops = %v, want one %s", dropped, DropEncodeFailed)
	}
}

// TestEntryType: both kinds of entry name their type.
func TestEntryType(t *testing.T) {
	f := NewFields(1)
	f.Add("type", "tool.result")
	for _, tc := range []struct {
		e    Entry
		want string
	}{
		{Record{"type": "tool.call"}, "tool.call"},
		{Record{}, ""},
		{f, "tool.result"},
		{NewFields(0), ""},
	} {
		if got := tc.e.Type(); got != tc.want {
			t.Errorf("%T Type() = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func finalLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}
