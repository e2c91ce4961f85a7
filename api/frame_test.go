package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewFrameWriter(&buf)
	big := bytes.Repeat([]byte("a"), MaxFrame+10)
	tests := []struct {
		typ     FrameType
		payload []byte
	}{{FrameRequest, []byte(`{"op":"run"}`)}, {FrameStdinEOF, nil}, {FrameStdout, big}}
	for _, tt := range tests {
		if err := w.Write(tt.typ, tt.payload); err != nil {
			t.Fatal(err)
		}
	}
	r := NewFrameReader(&buf)
	expect := []struct {
		typ FrameType
		n   int
	}{{FrameRequest, 12}, {FrameStdinEOF, 0}, {FrameStdout, MaxFrame}, {FrameStdout, 10}}
	for i, e := range expect {
		typ, p, err := r.Next()
		if err != nil || typ != e.typ || len(p) != e.n {
			t.Fatalf("frame %d = %q len %d err %v, want %q len %d", i, typ, len(p), err, e.typ, e.n)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
}

func TestFrameReaderRejectsBadInput(t *testing.T) {
	var hdr [5]byte
	hdr[0] = byte(FrameStdin)
	binary.BigEndian.PutUint32(hdr[1:], MaxFrame+1)
	if _, _, err := NewFrameReader(bytes.NewReader(hdr[:])).Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	binary.BigEndian.PutUint32(hdr[1:], 10)
	if _, _, err := NewFrameReader(bytes.NewReader(append(hdr[:], "abc"...))).Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
}

func TestDialExplainsMissingDaemon(t *testing.T) {
	_, err := Dial(t.TempDir() + "/none.sock")
	if !errors.Is(err, ErrDaemonUnreachable) || !bytes.Contains([]byte(err.Error()), []byte("systemctl start mcpcaged")) {
		t.Fatalf("err = %v", err)
	}
}
