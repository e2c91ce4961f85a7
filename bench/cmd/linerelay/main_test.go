package main

import (
	"fmt"
	"os"
	"path/filepath"
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

// durableCheck is the server's side of a groupCommit: at each write it
// checks that everything forwarded so far is already in the log.
type durableCheck struct {
	t    *testing.T
	log  string
	sent []byte
}

func (d *durableCheck) Write(b []byte) (int, error) {
	d.sent = append(d.sent, b...)
	logged, err := os.ReadFile(d.log)
	if err != nil {
		d.t.Fatal(err)
	}
	if !strings.HasPrefix(string(logged), string(d.sent)) {
		d.t.Errorf("forwarded before it was logged: sent %d bytes, the log has %d", len(d.sent), len(logged))
	}
	return len(b), nil
}

func TestGroupCommitForwardsOnlyWhatIsLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out := &durableCheck{t: t, log: path}
	g := newGroupCommit(f, out)
	go g.run()
	var want strings.Builder
	for i := range 500 {
		m := fmt.Sprintf("{\"id\":%d}\n", i)
		want.WriteString(m)
		if _, err := g.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if string(out.sent) != want.String() {
		t.Fatalf("forwarded %d bytes, want the %d written, in order", len(out.sent), want.Len())
	}
}
