package wire

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

func readAll(t *testing.T, r *Reader) ([]string, error) {
	t.Helper()
	var out []string
	for {
		msg, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(msg))
	}
}

func TestReaderFraming(t *testing.T) {
	big := strings.Repeat("x", 3*DefaultBufferSize)
	tests := []struct {
		name  string
		in    string
		limit int64
		want  []string
		err   error
	}{
		{"single", "{}\n", 0, []string{"{}\n"}, nil},
		{"two", "{\"a\":1}\n{\"b\":2}\n", 0, []string{"{\"a\":1}\n", "{\"b\":2}\n"}, nil},
		{"crlf kept", "{}\r\n[]\r\n", 0, []string{"{}\r\n", "[]\r\n"}, nil},
		{"no final newline", "{}\n{\"x\":1}", 0, []string{"{}\n", "{\"x\":1}"}, nil},
		{"blank lines skipped", "\n\r\n  \t\n{}\n\n", 0, []string{"{}\n"}, nil},
		{"empty stream", "", 0, nil, nil},
		{"invalid utf8 kept as bytes", "\xff\xfe\n", 0, []string{"\xff\xfe\n"}, nil},
		{"huge line under limit", big + "\n", int64(len(big) + 1), []string{big + "\n"}, nil},
		{"huge line over limit", big + "\n{}\n", int64(len(big)), nil, ErrTooLarge},
		{"short line over limit", "123456\n", 4, nil, ErrTooLarge},
		{"exactly at limit", "1234\n", 5, []string{"1234\n"}, nil},
		{"huge line at EOF", big, 0, []string{big}, nil},
	}
	for _, tt := range tests {
		for _, mode := range []string{"whole", "onebyte"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				var src io.Reader = strings.NewReader(tt.in)
				if mode == "onebyte" {
					src = iotest.OneByteReader(src)
				}
				got, err := readAll(t, NewReader(src, tt.limit))
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if tt.err == nil {
					if diff := cmp.Diff(tt.want, got); diff != "" {
						t.Fatalf("messages differ (-want +got):\n%.400s", diff)
					}
				}
			})
		}
	}
}

func TestReaderTooLargeDoesNotBufferAll(t *testing.T) {
	// An endless line must be refused after about the limit, not read whole.
	r := NewReader(io.LimitReader(infiniteX{}, 1<<40), 1<<20)
	_, err := r.Next()
	var tl *TooLargeError
	if !errors.As(err, &tl) {
		t.Fatalf("err = %v, want TooLargeError", err)
	}
	if tl.Seen > 2<<20 {
		t.Fatalf("read %d bytes before refusing a 1 MiB cap", tl.Seen)
	}
}

type infiniteX struct{}

func (infiniteX) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestReaderPropagatesErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader("{}\n{"), iotest.ErrReader(boom)), 0)
	if msg, err := r.Next(); err != nil || string(msg) != "{}\n" {
		t.Fatalf("first = %q, %v", msg, err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestReaderReady(t *testing.T) {
	tests := []struct {
		name  string
		input string
		reads int // Next calls before asking
		want  bool
	}{
		{"nothing read yet", "{\"a\":1}\n", 0, false},
		{"a whole message buffered", "{\"a\":1}\n{\"b\":2}\n", 1, true},
		{"the last one taken", "{\"a\":1}\n{\"b\":2}\n", 2, false},
		{"half a message", "{\"a\":1}\n{\"b\":", 1, false},
		{"blank lines only", "{\"a\":1}\n\n \r\n", 1, false},
		{"blank lines, then a message", "{\"a\":1}\n\n\n{\"b\":2}\n", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.input), 1<<20)
			for range tt.reads {
				if _, err := r.Next(); err != nil {
					t.Fatal(err)
				}
			}
			if got := r.Ready(); got != tt.want {
				t.Fatalf("Ready() = %v, want %v", got, tt.want)
			}
		})
	}
}
