package remote

import (
	"bufio"
	"bytes"
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
	br    *bufio.Reader
	limit int64
	retry time.Duration // the last retry field, 0 when none
}

func newSSEReader(r io.Reader, limit int64) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 64<<10), limit: limit}
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

// line reads one line without its end (LF, CRLF or CR), bounded by the
// limit.
func (s *sseReader) line() ([]byte, error) {
	var out []byte
	for {
		frag, err := s.br.ReadSlice('\n')
		out = append(out, frag...)
		if int64(len(out)) > s.limit+16 {
			return nil, errEventTooLarge{s.limit}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(out) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		out = bytes.TrimSuffix(out, []byte("\n"))
		out = bytes.TrimSuffix(out, []byte("\r"))
		return out, nil
	}
}
