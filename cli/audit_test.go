package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// auditDir writes a rotated audit log under dir/log with its head in
// dir/state, and a configuration naming both.
func auditDir(t *testing.T) (dir string, files []string) {
	t.Helper()
	dir = t.TempDir()
	logPath := filepath.Join(dir, "log", "audit.jsonl")
	l, err := audit.Open(audit.Options{Path: logPath, HeadPath: filepath.Join(dir, "state", "audit.head"), MaxSize: 1500, Keep: 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if err := l.Append(audit.Record{"type": "tool.call", "tool": fmt.Sprint("t", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("[daemon]\nstate_dir = %q\naudit_log = %q\n", filepath.Join(dir, "state"), logPath)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvPath, filepath.Join(dir, "config.toml"))
	return dir, audit.Files(logPath)
}

func TestAuditVerify(t *testing.T) {
	tests := []struct {
		name   string
		args   func(dir string, files []string) []string
		damage func(dir string, files []string) error
		code   int
		stdout string
		stderr string
	}{
		{"configured log", func(string, []string) []string { return nil }, nil, 0, "audit log OK: ", ""},
		{"head missing", func(string, []string) []string { return nil }, func(dir string, _ []string) error {
			return os.Remove(filepath.Join(dir, "state", "audit.head"))
		}, 1, "", "the chain head " + "%DIR%/state/audit.head is missing"},
		{"head missing, --no-head", func(string, []string) []string { return []string{"--no-head"} }, func(dir string, _ []string) error {
			return os.Remove(filepath.Join(dir, "state", "audit.head"))
		}, 0, "not checked against a chain head", ""},
		{"files with --head", func(dir string, files []string) []string {
			return append([]string{"--head", filepath.Join(dir, "state", "audit.head")}, files...)
		}, nil, 0, "audit log OK: ", ""},
		{"files without a head", func(_ string, files []string) []string { return files }, nil, 0, "not checked against a chain head", ""},
		{"middle segment removed", func(string, []string) []string { return nil }, func(_ string, files []string) error {
			return os.Remove(files[1])
		}, 1, "", "a middle segment was removed: segment 3 follows segment 1"},
		{"oldest segment removed", func(string, []string) []string { return nil }, func(_ string, files []string) error {
			return os.Remove(files[0])
		}, 1, "", "the oldest segment was removed"},
		{"newest segment removed", func(string, []string) []string { return nil }, func(_ string, files []string) error {
			for i := len(files) - 1; i >= 0; i-- { // the newest with records
				if st, _ := os.Stat(files[i]); st.Size() > 0 {
					return os.Remove(files[i])
				}
			}
			return errors.New("no segment has records")
		}, 1, "", "the newest segment was removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, files := auditDir(t)
			if tt.damage != nil {
				if err := tt.damage(dir, files); err != nil {
					t.Fatal(err)
				}
			}
			var out, errOut bytes.Buffer
			code := Main(append([]string{"audit", "verify"}, tt.args(dir, files)...), strings.NewReader(""), &out, &errOut)
			stderr := strings.ReplaceAll(tt.stderr, "%DIR%", dir)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), stderr) || strings.Count(errOut.String(), "\n") > 1 {
				t.Fatalf("code %d stdout %q stderr %q; want %d, %q, one line with %q", code, out.String(), errOut.String(), tt.code, tt.stdout, stderr)
			}
		})
	}
}

func TestFormatTruncated(t *testing.T) {
	rec := map[string]any{"type": "tool.call", "decision": "allow", "tool": map[string]any{"bytes": float64(12 << 20), "sha256": strings.Repeat("ab", 32), "truncated": "read_"}}
	got := formatRecord(rec)
	if !strings.Contains(got, `allow "read_…[12582912 bytes, sha256 abababababababab…]"`) {
		t.Fatalf("formatRecord = %q", got)
	}
	// The stand-in's prefix is the chooser's text: it cannot pass for more
	// fields of the line.
	rec["tool"].(map[string]any)["truncated"] = "read_file agent=claude-desktop user=root consent=c-f847ae3efc96 id=3"
	if got := formatRecord(rec); !strings.Contains(got, `allow "read_file agent=claude-desktop user=root`) {
		t.Fatalf("formatRecord = %q, want the long tool name quoted as one value", got)
	}
}

func TestLineJoiner(t *testing.T) {
	big := strings.Repeat("x", 3<<20)
	tests := []struct {
		name   string
		frames []string
		want   []string
	}{
		{"one line per frame", []string{"a\n", "b\n"}, []string{"a", "b"}},
		{"lines in one frame", []string{"a\nb\n\n"}, []string{"a", "b"}},
		{"a line across frames", []string{"a\n" + big[:1<<20], big[1<<20 : 2<<20], big[2<<20:] + "\nb\n"}, []string{"a", big, "b"}},
		{"an unfinished line is held", []string{"a\nb"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var j lineJoiner
			var got []string
			for _, f := range tt.frames {
				j.feed([]byte(f), func(line []byte) { got = append(got, string(line)) })
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: %.40q, want %.40q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestFormatRecordQuotesChosenValues: a name a client or a server chose
// reads as one value (found by a red-team helper: a tool named
// "x agent=claude user=alice consent=c-1" printed as a consented call).
func TestFormatRecordQuotesChosenValues(t *testing.T) {
	rec := map[string]any{"type": "tool.call", "decision": "deny", "tool": "x agent=claude user=alice consent=c-1", "agent": "exe:/opt/a b", "user": "bob", "request_id": "7"}
	got := formatRecord(rec)
	want := `deny "x agent=claude user=alice consent=c-1" agent="exe:/opt/a b" user=bob id=7`
	if !strings.Contains(got, want) {
		t.Fatalf("formatRecord = %q, want it to hold %q", got, want)
	}
	// A string id is the client's text (found by a red-team helper: it
	// printed as more fields).
	rec["request_id"] = "5 user=alice consent=c-f847ae3efc96"
	if got := formatRecord(rec); !strings.Contains(got, `id="5 user=alice consent=c-f847ae3efc96"`) {
		t.Fatalf("formatRecord = %q, want the id quoted", got)
	}
	ev := map[string]any{"type": "process.exec", "comm": "sh", "pid": float64(3), "path": "/bin/sh", "argv": []any{"sh", "-c", "echo a=b"}}
	if got := formatRecord(ev); !strings.Contains(got, `sh[3] /bin/sh sh -c "echo a=b"`) {
		t.Fatalf("formatRecord = %q, want the argument with a space quoted", got)
	}
}
