package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLines(t *testing.T) {
	big := strings.Repeat("x", 200<<10) // past bufio's buffer
	edge := strings.Repeat("y", 64<<10-1)
	tests := []struct {
		name string
		in   string
		want []string
		last string // lastLine's answer
	}{
		{"empty", "", nil, ""},
		{"blank lines", "\n\n  \n", nil, ""},
		{"one line, no newline", "a", []string{"a"}, "a"},
		{"CRLF and blanks", "a\r\n\r\nb\n\n", []string{"a", "b"}, "b"},
		{"long lines", "a\n" + big + "\n" + edge + "\nb\n", []string{"a", big, edge, "b"}, "b"},
		{"long last line", "a\n" + big + "\n\n", []string{"a", big}, big},
		{"long only line", big, []string{big}, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := Lines(strings.NewReader(tt.in), func(_ int, line []byte) error {
				got = append(got, string(line))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lines (-want +got):\n%.300s", diff)
			}
			path := filepath.Join(t.TempDir(), "f")
			must(t, os.WriteFile(path, []byte(tt.in), 0o600))
			last, err := lastLine(path)
			if err != nil || string(last) != tt.last {
				t.Errorf("lastLine = %.40q, %v; want %.40q", last, err, tt.last)
			}
			first, err := firstLine(path)
			if wantFirst := append(tt.want, "")[0]; err != nil || string(first) != wantFirst {
				t.Errorf("firstLine = %.40q, %v; want %.40q", first, err, wantFirst)
			}
		})
	}
}

// TestHugeRecordFromBeforeBounds: a log holding a record larger than the
// old 64 MiB scanner limit verifies, resumes and is appended to.
func TestHugeRecordFromBeforeBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 65 MiB record")
	}
	dir := t.TempDir()
	canon, err := json.Marshal(map[string]any{"type": "tool.call", "seq": 1, "prev": "", "tool": strings.Repeat("t", 65<<20)})
	if err != nil {
		t.Fatal(err)
	}
	line := append([]byte(`{"hash":"`+hashOf(canon)+`",`), canon[1:]...)
	if err := os.WriteFile(filepath.Join(dir, "audit.jsonl"), append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its chain head, as the daemon that wrote it kept it (without one the
	// restart would say that the end cannot be checked: TestRestartAfterDamage).
	head, _ := json.Marshal(Head{Seq: 1, Hash: hashOf(canon), File: filepath.Join(dir, "audit.jsonl")})
	must(t, os.WriteFile(filepath.Join(dir, "audit.head"), head, 0o600))
	l := openLog(t, dir, Options{})
	writeN(t, l, 2)
	must(t, l.Close())
	// The huge file rotated away at the first write: the new file opens
	// segment 1 after it.
	r, err := verifyDir(dir)
	if err != nil || r.Records != 4 || r.FirstSegment != 0 || r.LastSegment != 1 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}
