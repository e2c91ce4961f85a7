package api

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// FrameType tags a frame.
type FrameType byte

const (
	FrameRequest  FrameType = 'Q'
	FrameReply    FrameType = 'A'
	FrameStdin    FrameType = 'I'
	FrameStdinEOF FrameType = 'i'
	FrameStdout   FrameType = 'O'
	FrameStderr   FrameType = 'E'
	FrameExit     FrameType = 'X'
	// FrameFilesWanted (daemon to shim): the session is admitted, send
	// the client's files now. FrameFiles (shim to daemon) carries them
	// (SCM_RIGHTS), with no payload. The daemon takes files only then.
	FrameFilesWanted FrameType = 'W'
	FrameFiles       FrameType = 'F'
)

// MaxFrame is the largest frame payload. Streams are split into frames of
// at most this size.
const MaxFrame = 1 << 20

// ErrFrameTooLarge is returned for a frame above MaxFrame.
var ErrFrameTooLarge = errors.New("api: frame larger than 1 MiB")

// FrameReader reads frames.
type FrameReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewFrameReader wraps r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next frame. The payload is valid until the next call.
func (f *FrameReader) Next() (FrameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, ErrFrameTooLarge
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, n)
	}
	f.buf = f.buf[:n]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return FrameType(hdr[0]), f.buf, nil
}

// AppendFrame appends one frame of type t to b (payload at most MaxFrame).
func AppendFrame(b []byte, t FrameType, payload []byte) []byte {
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	return append(append(b, hdr[:]...), payload...)
}

// FrameWriter writes frames; it is safe for concurrent use.
type FrameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte // one frame, header and payload: one write(2), one wake-up of the reader
}

// NewFrameWriter wraps w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// Write sends payload as one or more frames of type t (payloads above
// MaxFrame are split). An empty payload sends one empty frame.
func (f *FrameWriter) Write(t FrameType, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		n := min(len(payload), MaxFrame)
		f.buf = AppendFrame(f.buf[:0], t, payload[:n])
		if _, err := f.w.Write(f.buf); err != nil {
			return fmt.Errorf("write frame: %w", err)
		}
		payload = payload[n:]
		if len(payload) == 0 {
			return nil
		}
	}
}

// StreamWriter adapts a FrameWriter to io.Writer for one frame type.
type StreamWriter struct {
	F    *FrameWriter
	Type FrameType
}

func (s StreamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.F.Write(s.Type, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
