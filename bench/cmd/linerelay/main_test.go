package main

import (
	"strings"
	"testing"
)

// writes records each write it is given.
type writes []string

func (w *writes) Write(b []byte) (int, error) {
	*w = append(*w, string(b))
	return len(b), nil
}

func TestCopyLinesOneWritePerMessage(t *testing.T) {
	long := strings.Repeat("x", 200<<10) + "\n" // past the reader's buffer
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"messages", "{\"a\":1}\n{\"b\":2}\n", []string{"{\"a\":1}\n", "{\"b\":2}\n"}},
		{"a message longer than the buffer", long + "z\n", []string{long, "z\n"}},
		{"an unterminated tail", "a\nb", []string{"a\n", "b"}},
		{"nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w writes
			if err := copyLines(&w, strings.NewReader(tt.in)); err == nil || err.Error() != "EOF" {
				t.Fatalf("copyLines ended with %v, want EOF", err)
			}
			if len(w) != len(tt.want) {
				t.Fatalf("%d writes, want %d", len(w), len(tt.want))
			}
			for i := range w {
				if w[i] != tt.want[i] {
					t.Errorf("write %d: %d bytes %.20q, want %d bytes %.20q", i, len(w[i]), w[i], len(tt.want[i]), tt.want[i])
				}
			}
		})
	}
}
