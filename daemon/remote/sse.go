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
	sc     *bufio.Scanner
	limit  int64
	retry  time.Duration // the last retry field, 0 when none
	skipLF bool          // the last line ended with a CR at the end of the data
}

func newSSEReader(r io.Reader, limit int64) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), int(min(limit+16, 1<<31-1)))
	sr := &sseReader{sc: sc, limit: limit}
	sc.Split(sr.split)
	return sr
}

// split splits at CRLF, LF or a lone CR, as the event-stream format has
// it. A CR at the end of what has arrived ends its line at once (the
// event is not held back waiting for the next byte); a LF that follows
// it later is skipped.
func (s *sseReader) split(data []byte, atEOF bool) (int, []byte, error) {
	if s.skipLF && len(data) > 0 {
		s.skipLF = false
		if data[0] == '\n' {
			return 1, nil, nil
		}
	}
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			s.skipLF = !atEOF
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil // a last line without its end
	}
	return 0, nil, nil
}

// errEventTooLarge ends a stream whose event exceeds the limit.
type errEventTooLarge struct{ limit int64 }

func (e errEventTooLarge) Error() string {
	return "an event larger than max_message_bytes (" + strconv.FormatInt(e.limit, 10) + " bytes)"
}

// next returns the next event that carries data; comments and events
// without data only update the id and retry.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	for {
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
		case "event":
			ev.event = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.id = string(value)
			}
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// line reads one line without its end, bounded by the limit.
func (s *sseReader) line() ([]byte, error) {
	if s.sc.Scan() {
		return s.sc.Bytes(), nil
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, errEventTooLarge{s.limit}
		}
		return nil, err
	}
	return nil, io.EOF
}
