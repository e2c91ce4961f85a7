package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/wire"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestDropLogCountsEveryDropAndLogsFew(t *testing.T) {
	var logs bytes.Buffer
	m := metrics.New()
	dl := &dropLog{log: slog.New(slog.NewTextHandler(&logs, nil)), metric: m.AuditRecordsDropped}
	err := fmt.Errorf("%w: queue full", audit.ErrUnavailable)
	for i := 0; i < 500; i++ {
		dl.drop(audit.Record{"type": "file.open", "session": "s1"}, audit.DropQueueFull, err)
	}
	dl.drop(audit.Record{"type": "consent.grant"}, audit.DropWriteFailed, errors.New("disk full"))
	counts := map[audit.DropReason]float64{audit.DropQueueFull: 500, audit.DropWriteFailed: 1, audit.DropEncodeFailed: 0, audit.DropClosed: 0}
	for reason, want := range counts {
		if got := testutil.ToFloat64(m.AuditRecordsDropped.WithLabelValues(string(reason))); got != want {
			t.Errorf("%s drops counted %v, want %v", reason, got, want)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 || len(lines) > 20 || !strings.Contains(lines[0], "reason=queue_full type=file.open session=s1") ||
		!strings.Contains(logs.String(), "reason=write_failed type=consent.grant") {
		t.Fatalf("%d log lines for 501 drops:\n%.600s", len(lines), logs.String())
	}
}

// TestAuditQueryStreamsLongRecords: records larger than a frame (from
// before records were bounded) reach the client whole.
func TestAuditQueryStreamsLongRecords(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.jsonl")
	big := `{"type":"tool.call","user":"root","tool":"` + strings.Repeat("t", 3*api.MaxFrame) + `"}`
	if err := os.WriteFile(logPath, []byte(`{"type":"session.start","user":"root"}`+"\n"+big+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testDaemon(t, fmt.Sprintf("[daemon]\naudit_log = %q\n", logPath))
	var out bytes.Buffer
	d.auditQuery(context.Background(), nil, api.NewFrameWriter(&out), Peer{UID: 0}, &api.AuditQuery{})
	r := api.NewFrameReader(&out)
	var stdout []byte
	for {
		typ, payload, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if typ == api.FrameStdout {
			stdout = append(stdout, payload...)
		}
	}
	lines := strings.Split(strings.TrimSuffix(string(stdout), "\n"), "\n")
	if len(lines) != 2 || lines[1] != big {
		t.Fatalf("%d lines streamed; the long one intact: %v", len(lines), len(lines) == 2 && lines[1] == big)
	}
}

// TestAuditFollowEndsWhenClientGoes: `mcpcage audit --follow` whose
// client closed its connection stops following at once, though no
// record arrives to fail a write on.
func TestAuditFollowEndsWhenClientGoes(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "audit.jsonl")
	d := testDaemon(t, fmt.Sprintf("[daemon]\naudit_log = %q\n", logPath))
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	daemonEnd, clientEnd := unixConn(t, fds[0]), unixConn(t, fds[1])
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.auditQuery(context.Background(), daemonEnd, api.NewFrameWriter(daemonEnd), Peer{UID: 0}, &api.AuditQuery{Follow: true})
	}()
	r := api.NewFrameReader(clientEnd)
	if typ, _, err := r.Next(); err != nil || typ != api.FrameReply {
		t.Fatalf("first frame %v, %v: want the reply", typ, err)
	}
	testenv.WaitFor(t, "the follower to be registered", 5*time.Second, func() (bool, string) {
		d.auditFollowers.mu.Lock()
		defer d.auditFollowers.mu.Unlock()
		return len(d.auditFollowers.subs) == 1, fmt.Sprintf("%d followers", len(d.auditFollowers.subs))
	})
	if err := clientEnd.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("audit --follow still running 10s after its client went away")
	}
	d.auditFollowers.mu.Lock()
	defer d.auditFollowers.mu.Unlock()
	if n := len(d.auditFollowers.subs); n != 0 {
		t.Fatalf("%d followers left after the client went away", n)
	}
}

// unixConn wraps one end of a socket pair.
func unixConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socketpair")
	c, err := net.FileConn(f) // a duplicate: the pair's own fd goes now
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.UnixConn)
}

// TestFailureLogLogsSpellsNotEachFailure: a log that fails at every
// retry gets a line when it starts failing, one a minute while it fails,
// and one when it writes again; spells that come and go faster than that
// are counted and summed up once the minute is over; a failing rotation
// has its own line, once a minute.
func TestFailureLogLogsSpellsNotEachFailure(t *testing.T) {
	type event int
	const (
		fail event = iota
		recover
		rotateFail
	)
	type step struct {
		at time.Duration // since the start
		ev event
	}
	every := func(from, to, each time.Duration, evs ...event) []step {
		var s []step
		for at := from; at < to; at += each {
			for i, ev := range evs {
				s = append(s, step{at + time.Duration(i)*100*time.Millisecond, ev})
			}
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []string // each line's level and what it must hold
	}{
		{"a full disk for 150 s, retried every second", cat(every(0, 150*time.Second, time.Second, fail), []step{{150 * time.Second, recover}}),
			[]string{"ERROR failures=1 ", "ERROR failures=60 unlogged_since_last_line=59", "ERROR failures=120 unlogged_since_last_line=60",
				"WARN failed_for=2m30s failures=150 unlogged_since_last_line=30"}},
		{"one failure, then writes", []step{{0, fail}, {2 * time.Second, recover}, {3 * time.Second, recover}},
			[]string{"ERROR failures=1 ", "WARN failed_for=2s failures=1 "}},
		{"short spells within a minute of the last line are summed up", []step{{0, fail}, {time.Second, recover},
			{10 * time.Second, fail}, {11 * time.Second, recover}, {20 * time.Second, fail}, {21 * time.Second, recover}},
			[]string{"ERROR failures=1 ", "WARN failed_for=1s ", "ERROR failing_now=false unlogged_since_last_line=4"}},
		{"a disk that fills and frees every half second for 3 minutes", every(0, 3*time.Minute, 500*time.Millisecond, fail, recover),
			// Churn: a spell's line and its end's each minute (the timer
			// finds one going on), then the rest summed up.
			[]string{"ERROR failures=1 ", "WARN failed_for=100ms ", "ERROR failures=1 unlogged_since_last_line=239", "WARN failed_for=100ms ",
				"ERROR failures=1 unlogged_since_last_line=239", "WARN failed_for=100ms ", "ERROR failing_now=false unlogged_since_last_line=238"}},
		{"a rotation failing at every commit for 3 minutes", every(0, 3*time.Minute, 500*time.Millisecond, rotateFail),
			[]string{"ERROR failed_rotations=1 ", "ERROR failed_rotations=119 ", "ERROR failed_rotations=120 ", "ERROR failed_rotations=120 "}},
		{"one failure soon after the last line, then nothing: said a minute after that line", []step{{0, fail}, {time.Second, recover}, {10 * time.Second, fail}},
			[]string{"ERROR failures=1 ", "WARN failed_for=1s ", "ERROR failures=1 unlogged_since_last_line=1"}},
		{"a long outage soon after the last line: its lines name it, and its end", cat([]step{{0, fail}, {time.Second, recover}},
			every(2*time.Second, 200*time.Second, time.Second, fail), []step{{200 * time.Second, recover}}),
			[]string{"ERROR failures=1 ", "WARN failed_for=1s ", "ERROR failures=59 unlogged_since_last_line=59",
				"ERROR failures=119 unlogged_since_last_line=60", "ERROR failures=179 unlogged_since_last_line=60", "WARN failed_for=3m18s failures=198 "}},
		{"a rotation failure soon after the last one, then rotations work", []step{{0, rotateFail}, {10 * time.Second, rotateFail}},
			[]string{"ERROR failed_rotations=1 ", "ERROR failed_rotations=1 "}},
		{"writes that never failed", []step{{0, recover}, {time.Second, recover}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
			var now time.Time
			type timer struct {
				due time.Time
				f   func()
			}
			var timers []timer
			fl := &failureLog{log: slog.New(slog.NewTextHandler(&logs, nil)), path: "/a/audit.jsonl", now: func() time.Time { return now },
				after: func(d time.Duration, f func()) { timers = append(timers, timer{now.Add(d), f}) }}
			fire := func(until time.Time) {
				for len(timers) > 0 && !timers[0].due.After(until) {
					tm := timers[0]
					timers = timers[1:]
					now = tm.due
					tm.f()
				}
			}
			for _, s := range tc.steps {
				fire(start.Add(s.at))
				now = start.Add(s.at)
				switch s.ev {
				case fail:
					fl.failed(fmt.Errorf("%w: write: no space left on device", audit.ErrUnavailable))
				case rotateFail:
					fl.failed(fmt.Errorf("%w: rename: operation not permitted", audit.ErrRotate))
				default:
					fl.recovered()
				}
			}
			fire(now.Add(time.Hour))
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if logs.Len() == 0 {
				lines = nil
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tc.want), logs.String())
			}
			for i, w := range tc.want {
				level, rest, _ := strings.Cut(w, " ")
				if !strings.Contains(lines[i], "level="+level) {
					t.Errorf("line %d: want level %s: %s", i, level, lines[i])
				}
				for _, f := range strings.Fields(rest) {
					if !strings.Contains(lines[i]+" ", " "+f+" ") {
						t.Errorf("line %d: want %s: %s", i, f, lines[i])
					}
				}
			}
		})
	}
}

// TestFollowersSeeCallRecordsAsWritten: the records of a call, built as
// audit.Fields rather than maps, reach `mcpcage audit --follow` as the
// very lines the log wrote (before, records encoded again: another key
// order, which no hash matched), and the per-type metric counts them.
func TestFollowersSeeCallRecordsAsWritten(t *testing.T) {
	d := testDaemon(t, "[servers.everything]\ncommand = [\"x\"]\n")
	cfg, m, dir := d.conf(), d.metrics, t.TempDir()
	logPath := filepath.Join(dir, "audit.jsonl")
	al, err := audit.Open(audit.Options{Path: logPath, HeadPath: filepath.Join(dir, "audit.head"), Sync: audit.SyncBatch,
		OnLine: d.auditFollowers.publish,
		OnRecord: func(e audit.Entry) {
			m.AuditRecords.WithLabelValues(e.Type()).Inc()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = al.Close() }()
	d.audit = al
	follow := d.auditFollowers.add()
	defer d.auditFollowers.remove(follow)
	var runs flow.Runs
	s := &session{digests: testDigests, id: "s1", server: "everything", agent: "a", user: "root", log: slog.New(slog.DiscardHandler), run: runs.Attach(0, "root", 1, 1)}
	p := &sessionPolicy{d: d, s: s, srv: cfg.Servers["everything"], observe: true, calls: map[string]callStart{}, defs: map[string]string{}}
	req := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","token":"t"}}}`)
	resp := []byte(`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Echo: hi"}],"isError":false}}`)
	var mreq, mresp wire.Message
	if wire.Peek(req, &mreq) != nil || wire.Peek(resp, &mresp) != nil {
		t.Fatal("peek")
	}
	if v := p.FromClient(&mreq.Envelopes[0], req); v.Hold == nil || <-v.Hold != nil {
		t.Fatal("the call was not recorded")
	}
	p.FromServer(&mresp.Envelopes[0], resp, "tools/call")
	p.afterServerMessage()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) < 2 {
		t.Fatalf("%d lines in the log, want the call's two records", len(lines))
	}
	for i, want := range []api.RecordType{api.RecordToolCall, api.RecordToolResult} {
		line := lines[len(lines)-2+i]
		var got []byte
		for got == nil || bytes.Contains(got, []byte(`"type":"audit.segment"`)) {
			select {
			case got = <-follow.lines:
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s record reached the follower", want)
			}
		}
		if !bytes.Equal(got, line) {
			t.Errorf("%s: the follower saw other than the line written:\n%s\n%s", want, line, got)
		}
		var w map[string]any
		if err := json.Unmarshal(line, &w); err != nil {
			t.Fatal(err)
		}
		if w["type"] != string(want) || w["hash"] == nil || w["seq"] == nil {
			t.Errorf("line %d is %v, want a chained %s", i, w, want)
		}
		if n := testutil.ToFloat64(m.AuditRecords.WithLabelValues(string(want))); n != 1 {
			t.Errorf("%s records counted %v times, want 1", want, n)
		}
	}
}

// TestFollowerMissesAreCounted: a follower that reads more slowly than
// the log is written misses lines, and is told how many before its next
// line (before, they vanished without a word).
func TestFollowerMissesAreCounted(t *testing.T) {
	var f followers
	fl := f.add()
	defer f.remove(fl)
	for i := 0; i < followBuffer+5; i++ {
		f.publish([]byte(fmt.Sprintf(`{"seq":%d}`, i+1)))
	}
	if n := fl.missed.Load(); n != 5 {
		t.Fatalf("missed %d lines, want 5", n)
	}
	var m map[string]any
	if err := json.Unmarshal(missedLine(5), &m); err != nil || m["type"] != string(api.RecordFollowMissed) || m["missed"] != float64(5) {
		t.Fatalf("missed line %s (%v)", missedLine(5), err)
	}
	if _, ok := m["hash"]; ok {
		t.Fatal("the missed line reads as a record of the log")
	}
}
