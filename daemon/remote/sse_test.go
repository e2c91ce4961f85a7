package remote

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seenEvent is an sseEvent as a test compares it.
type seenEvent struct {
	ID    string
	Event string
	Data  string
}

// readAllEvents reads events until the reader's first error.
func readAllEvents(r *sseReader) ([]seenEvent, error) {
	var out []seenEvent
	for {
		ev, err := r.next()
		if err != nil {
			return out, err
		}
		out = append(out, seenEvent{ID: ev.id, Event: ev.event, Data: string(ev.data)})
	}
}

func TestSSEReaderEvents(t *testing.T) {
	big := strings.Repeat("x", 70<<10) // longer than a 64 KiB read buffer
	tests := []struct {
		name      string
		in        string
		limit     int64 // 0: 1 MiB
		want      []seenEvent
		wantErr   error // what follows the last event (io.EOF: the stream's end)
		wantRetry time.Duration
	}{
		{
			name:    "one event",
			in:      "data: {\"a\":1}\n\n",
			want:    []seenEvent{{Data: `{"a":1}`}},
			wantErr: io.EOF,
		},
		{
			name:    "data lines joined with newline",
			in:      "data: first\ndata: second\ndata: third\n\n",
			want:    []seenEvent{{Data: "first\nsecond\nthird"}},
			wantErr: io.EOF,
		},
		{
			name:    "crlf line ends",
			in:      "id: 7\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n",
			want:    []seenEvent{{ID: "7", Event: "message", Data: "a\nb"}},
			wantErr: io.EOF,
		},
		{
			// The HTML standard's line ends are CRLF, LF or a lone CR, and
			// line() says it handles all three.
			name:    "lone cr line ends",
			in:      "id: 8\rdata: a\rdata: b\r\r",
			want:    []seenEvent{{ID: "8", Data: "a\nb"}},
			wantErr: io.EOF,
		},
		{
			name:    "comments ignored",
			in:      ": keep-alive\n\n:another\ndata: x\n: inside an event\ndata: y\n\n",
			want:    []seenEvent{{Data: "x\ny"}},
			wantErr: io.EOF,
		},
		{
			name:      "id and retry",
			in:        "retry: 1500\nid: ev-42\ndata: x\n\n",
			want:      []seenEvent{{ID: "ev-42", Data: "x"}},
			wantErr:   io.EOF,
			wantRetry: 1500 * time.Millisecond,
		},
		{
			name:      "retry that is not a number ignored",
			in:        "retry: 200\n\nretry: soon\ndata: x\n\n",
			want:      []seenEvent{{Data: "x"}},
			wantErr:   io.EOF,
			wantRetry: 200 * time.Millisecond,
		},
		{
			name:    "id holding nul ignored",
			in:      "id: a\x00b\ndata: x\n\n",
			want:    []seenEvent{{Data: "x"}},
			wantErr: io.EOF,
		},
		{
			name:    "event types kept per event",
			in:      "event: ping\ndata: 1\n\ndata: 2\n\nevent: message\ndata: 3\n\n",
			want:    []seenEvent{{Event: "ping", Data: "1"}, {Data: "2"}, {Event: "message", Data: "3"}},
			wantErr: io.EOF,
		},
		{
			name:    "events without data skipped",
			in:      "event: ping\n\n: only a comment\n\nid: 3\n\ndata: x\n\n",
			want:    []seenEvent{{ID: "3", Data: "x"}},
			wantErr: io.EOF,
		},
		{
			name:    "empty data field is an event",
			in:      "id: prime\ndata:\n\n",
			want:    []seenEvent{{ID: "prime", Data: ""}},
			wantErr: io.EOF,
		},
		{
			name:    "field without colon",
			in:      "data\n\n",
			want:    []seenEvent{{Data: ""}},
			wantErr: io.EOF,
		},
		{
			name:    "only one leading space stripped",
			in:      "data:x\n\ndata:  y\n\n",
			want:    []seenEvent{{Data: "x"}, {Data: " y"}},
			wantErr: io.EOF,
		},
		{
			name:    "unknown fields ignored",
			in:      "foo: bar\ndata: x\nbaz\n\n",
			want:    []seenEvent{{Data: "x"}},
			wantErr: io.EOF,
		},
		{
			name:    "event cut by the end of the stream dropped",
			in:      "data: whole\n\ndata: cut\n",
			want:    []seenEvent{{Data: "whole"}},
			wantErr: io.EOF,
		},
		{
			name:    "line cut by the end of the stream dropped",
			in:      "data: whole\n\ndata: cu",
			want:    []seenEvent{{Data: "whole"}},
			wantErr: io.EOF,
		},
		{
			name:    "line longer than the read buffer",
			in:      "data: " + big + "\n\n",
			want:    []seenEvent{{Data: big}},
			wantErr: io.EOF,
		},
		{
			name:    "event over the limit",
			in:      "data: 0123456789\n\n",
			limit:   8,
			wantErr: errEventTooLarge{8},
		},
		{
			name:    "data lines adding up over the limit",
			in:      "data: 12345\ndata: 12345\n\n",
			limit:   8,
			wantErr: errEventTooLarge{8},
		},
		{
			name:    "comment line over the limit and any read buffer",
			in:      ":" + big + "\ndata: x\n\n",
			limit:   8,
			wantErr: errEventTooLarge{8},
		},
		{
			name:    "event at the limit",
			in:      "data: 12345678\n\n",
			limit:   8,
			want:    []seenEvent{{Data: "12345678"}},
			wantErr: io.EOF,
		},
		{
			name:    "an id over 1 KiB is not kept",
			in:      "id: " + strings.Repeat("i", maxToken+1) + "\ndata: x\n\nid: " + strings.Repeat("i", maxToken) + "\ndata: y\n\n",
			want:    []seenEvent{{Data: "x"}, {ID: strings.Repeat("i", maxToken), Data: "y"}},
			wantErr: io.EOF,
		},
	}
	for _, tt := range tests {
		for _, split := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"byte by byte", iotest.OneByteReader},
		} {
			if split.name == "byte by byte" && len(tt.in) > 4<<10 {
				continue // slow, and the whole read already crosses buffers
			}
			t.Run(tt.name+"/"+split.name, func(t *testing.T) {
				limit := tt.limit
				if limit == 0 {
					limit = 1 << 20
				}
				r := newSSEReader(split.wrap(strings.NewReader(tt.in)), limit)
				got, err := readAllEvents(r)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				if tt.wantErr == io.EOF && errors.Is(err, io.ErrUnexpectedEOF) {
					err = io.EOF // a cut line: the stream's end as well
				}
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("error after the events = %v, want %v", err, tt.wantErr)
				}
				if r.retry != tt.wantRetry {
					t.Errorf("retry = %v, want %v", r.retry, tt.wantRetry)
				}
			})
		}
	}
}

// An event is dispatched at its blank line, whatever the line ends: a
// stream that then waits (a standalone stream, a long call) must not hold
// the event back until the server sends more.
func TestSSEReaderDispatchesWithoutWaiting(t *testing.T) {
	for _, end := range []struct{ name, eol string }{{"lf", "\n"}, {"crlf", "\r\n"}, {"lone cr", "\r"}} {
		t.Run(end.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			t.Cleanup(func() { _ = pw.Close() })
			go func() {
				_, _ = io.WriteString(pw, "id: 1"+end.eol+"data: x"+end.eol+end.eol)
				// and then the server waits, the stream open
			}()
			got := make(chan seenEvent, 1)
			go func() {
				ev, err := newSSEReader(pr, 1<<20).next()
				if err == nil {
					got <- seenEvent{ID: ev.id, Event: ev.event, Data: string(ev.data)}
				}
				close(got)
			}()
			select {
			case ev, ok := <-got:
				if want := (seenEvent{ID: "1", Data: "x"}); !ok || ev != want {
					t.Fatalf("event = %+v (%v), want %+v", ev, ok, want)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the event was not dispatched while the stream stayed open after its blank line")
			}
		})
	}
}

func TestEventTooLargeNamesTheSetting(t *testing.T) {
	got := errEventTooLarge{4096}.Error()
	want := "an event larger than max_message_bytes (4096 bytes)"
	if got != want {
		t.Fatalf("message = %q, want %q", got, want)
	}
}

// A long line that adds no data to the event (a comment here) holds the
// session's big answer slot only while it is read: the event after it,
// or a stream that then waits, does not keep it from the session's
// other answers.
func TestSSEReaderGivesTheSlotBackAfterALongLine(t *testing.T) {
	r := newSSEReader(strings.NewReader(": "+strings.Repeat("c", 2*smallAnswer)+"\nid: 1\ndata: x\n\n"), 1<<20)
	taken, held := 0, 0
	r.big = func() error { taken++; held++; return nil }
	r.release = func() { held-- }
	ev, err := r.next()
	if err != nil || string(ev.data) != "x" {
		t.Fatalf("next = %+v, %v", ev, err)
	}
	if taken != 1 || held != 0 {
		t.Fatalf("the slot was taken %d times and is held %d times once the event is read; want taken once, given back", taken, held)
	}
}
