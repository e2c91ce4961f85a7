package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned by [Reader.Next] when a message exceeds the cap.
var ErrTooLarge = errors.New("message too large")

// TooLargeError tells how far a message got before it was cut off.
type TooLargeError struct {
	Limit int64 // the cap in bytes
	Seen  int64 // bytes read of the message when it was refused
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("message exceeds max_message_bytes (%d bytes; read %d without reaching its end)", e.Limit, e.Seen)
}

func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Reader splits a stream into newline-terminated messages.
type Reader struct {
	br    *bufio.Reader
	limit int64
	buf   []byte
}

// DefaultBufferSize is the read buffer of a [Reader]; messages shorter than
// this are returned without copying.
const DefaultBufferSize = 64 << 10

// NewReader returns a Reader that refuses messages longer than limit bytes
// (including the line terminator). limit <= 0 means no limit.
func NewReader(r io.Reader, limit int64) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, DefaultBufferSize), limit: limit}
}

// Next returns the next message with its terminator, exactly as read. Blank
// lines are skipped. The returned slice is valid until the next call. At the
// end of the stream Next returns io.EOF; a final message without a newline
// is returned first with a nil error.
func (r *Reader) Next() ([]byte, error) {
	for {
		line, err := r.line()
		if len(line) > 0 && !isBlank(line) {
			return line, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Ready reports whether Next will return a message without reading: a
// whole non-blank line is buffered already.
func (r *Reader) Ready() bool {
	b, _ := r.br.Peek(r.br.Buffered()) // never reads
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		if !isBlank(b[:i+1]) {
			return true
		}
		b = b[i+1:]
	}
}

func (r *Reader) line() ([]byte, error) {
	chunk, err := r.br.ReadSlice('\n')
	if err == nil || (err == io.EOF && len(chunk) > 0) {
		if r.limit > 0 && int64(len(chunk)) > r.limit {
			return nil, &TooLargeError{Limit: r.limit, Seen: int64(len(chunk))}
		}
		return chunk, nil
	}
	if err != bufio.ErrBufferFull {
		return nil, err
	}
	// Long message: accumulate, checking the cap as we go.
	r.buf = append(r.buf[:0], chunk...)
	for {
		if r.limit > 0 && int64(len(r.buf)) > r.limit {
			seen := int64(len(r.buf))
			r.buf = shrink(r.buf)
			return nil, &TooLargeError{Limit: r.limit, Seen: seen}
		}
		chunk, err = r.br.ReadSlice('\n')
		r.buf = append(r.buf, chunk...)
		switch err {
		case nil:
			if r.limit > 0 && int64(len(r.buf)) > r.limit {
				seen := int64(len(r.buf))
				r.buf = shrink(r.buf)
				return nil, &TooLargeError{Limit: r.limit, Seen: seen}
			}
			return r.buf, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return r.buf, nil
		default:
			return nil, err
		}
	}
}

// shrink drops a huge buffer so one oversized message does not pin memory.
func shrink(b []byte) []byte {
	if cap(b) > 4*DefaultBufferSize {
		return nil
	}
	return b[:0]
}

func isBlank(b []byte) bool {
	return len(bytes.TrimLeft(b, " \t\r\n")) == 0
}
