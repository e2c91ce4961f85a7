package remote

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	id    string // "" when the event set none
	event string // "" is "message"
	data  []byte
}

// sseReader reads server-sent events (the text/event-stream format of
// the HTML standard) from an HTTP body, bounding each event's size.
type sseReader struct {
	r      *bufio.Reader
	limit  int64
	retry  time.Duration // the last retry field, 0 when none
	skipLF bool          // the last line ended with a CR at the end of the data
	long   []byte        // a line longer than what r buffers, collected
	data   bytes.Buffer  // the data of the event being read
	// big, when set, is called once the event being read holds more
	// than smallAnswer bytes, before it grows further (the session's
	// one big answer at a time, see [Conn.takeBig]); an error ends the
	// stream. release gives it back once the event is handled.
	big     func() error
	release func()
	holding bool
}

func newSSEReader(r io.Reader, limit int64) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, sseBuffer), limit: limit}
}

// sseBuffer is what a stream's reader buffers; a longer line is
// collected in sseReader.long.
const sseBuffer = 32 << 10

// grown is told that the event being read now holds n bytes, of which
// line are its current line: past smallAnswer it waits for the session's
// big answer slot.
func (s *sseReader) grown(n, line int) error {
	if int64(line) > s.limit+16 {
		return errEventTooLarge{s.limit}
	}
	if n <= smallAnswer || s.holding || s.big == nil {
		return nil
	}
	if err := s.big(); err != nil {
		return err
	}
	s.holding = true
	return nil
}

// fits gives the big answer slot back between two lines of an event
// when what the event holds is small again: a long line that adds no
// data (a comment, an id, an unknown field) took it only while it was
// read.
func (s *sseReader) fits() {
	if cap(s.long) > sseBuffer {
		s.long = nil
	}
	if s.holding && s.data.Len() <= smallAnswer {
		s.holding = false
		s.release()
	}
}

// settle is called once the last event returned is handled (relayed or
// dropped): the big answer slot is given back and a large event's
// buffers are let go.
func (s *sseReader) settle() {
	if cap(s.long) > sseBuffer {
		s.long = nil
	}
	if s.data.Cap() > 2*smallAnswer {
		s.data = bytes.Buffer{}
	}
	s.data.Reset()
	if s.holding {
		s.holding = false
		s.release()
	}
}

// errEventTooLarge ends a stream whose event exceeds the limit.
type errEventTooLarge struct{ limit int64 }

func (e errEventTooLarge) Error() string {
	return "an event larger than max_message_bytes (" + strconv.FormatInt(e.limit, 10) + " bytes)"
}

// next returns the next event that carries data; comments and events
// without data only update the id and retry.
func (s *sseReader) next() (sseEvent, error) {
	s.settle()
	var ev sseEvent
	data := &s.data
	hasData := false
	for {
		s.fits()
		line, err := s.line()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 { // dispatch
			if hasData {
				ev.data = data.Bytes()
				return ev, nil
			}
			ev.event = ""
			continue
		}
		if line[0] == ':' {
			continue // comment (keep-alive)
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
			if int64(data.Len()) > s.limit {
				return sseEvent{}, errEventTooLarge{s.limit}
			}
			if err := s.grown(data.Len(), 0); err != nil {
				return sseEvent{}, err
			}
		case "event":
			ev.event = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 && len(value) <= maxToken {
				ev.id = string(value)
			}
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// line reads one line without its end (CRLF, LF or a lone CR), bounded
// by the limit. A CR at the end of what has arrived ends its line at
// once (the event is not held back waiting for the next byte); a LF that
// follows it later is skipped. The line is valid until the next read.
func (s *sseReader) line() ([]byte, error) {
	s.long = s.long[:0]
	for {
		if _, err := s.r.Peek(1); err != nil {
			if len(s.long) > 0 && errors.Is(err, io.EOF) {
				return s.long, nil // a last line without its end
			}
			return nil, err
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		if s.skipLF {
			s.skipLF = false
			if buf[0] == '\n' {
				_, _ = s.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			if err := s.grown(s.data.Len()+len(s.long)+len(buf), len(s.long)+len(buf)); err != nil {
				return nil, err
			}
			s.long = append(s.long, buf...)
			_, _ = s.r.Discard(len(buf))
			continue
		}
		n := i + 1
		if buf[i] == '\r' {
			switch {
			case i+1 == len(buf):
				s.skipLF = true
			case buf[i+1] == '\n':
				n++
			}
		}
		if err := s.grown(s.data.Len()+len(s.long)+i, len(s.long)+i); err != nil {
			return nil, err
		}
		line := buf[:i]
		if len(s.long) > 0 {
			s.long = append(s.long, line...)
			line = s.long
		}
		_, _ = s.r.Discard(n)
		return line, nil
	}
}
