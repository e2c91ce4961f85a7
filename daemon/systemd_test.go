package daemon

import "testing"

// TestJournalValue: what a client, a server or a file name chose is one
// value in the journal's message text, whatever it holds (found by a
// red-team helper: a tool name "x user=root" added a field, a newline a
// line, and escape sequences reached the reader's terminal).
func TestJournalValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"read_file", "read_file"},
		{"/work/.ssh/id_ed25519", "/work/.ssh/id_ed25519"},
		{"", `""`},
		{"x user=root consent=c-1", `"x user=root consent=c-1"`},
		{"a=b", `"a=b"`},
		{"line\nsession=forged", `"line\nsession=forged"`},
		{"\x1b]8;;http://evil\x07click\x1b]8;;\x07", `"\x1b]8;;http://evil\aclick\x1b]8;;\a"`},
		{"say \"hi\"", `"say \"hi\""`},
		{"tool\u202egnp.exe", `"tool\u202egnp.exe"`},
		{"bad\xffutf8", `"bad\xffutf8"`},
		{"café", "café"},
	}
	for _, tt := range tests {
		if got := journalValue(tt.in); got != tt.want {
			t.Errorf("journalValue(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
