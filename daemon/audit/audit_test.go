package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func openLog(t *testing.T, dir string, o Options) *Log {
	t.Helper()
	o.Path = filepath.Join(dir, "audit.jsonl")
	o.HeadPath = filepath.Join(dir, "audit.head")
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// must fails the test on err: a setup or tampering step that did not
// happen would let a test pass without testing anything.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := l.Append(Record{"type": "tool.call", "tool": fmt.Sprintf("t%d", i), "user": "alice"}); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyDir(dir string) (Report, error) {
	h, err := ReadHead(filepath.Join(dir, "audit.head"))
	hp := &h
	if err != nil {
		hp = nil
	}
	return Verify(Files(filepath.Join(dir, "audit.jsonl")), hp)
}

// records counts the records of the given type across the log's files.
func records(t *testing.T, dir, typ string) int {
	t.Helper()
	n := 0
	for _, path := range Files(filepath.Join(dir, "audit.jsonl")) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n += bytes.Count(b, []byte(`"type":"`+typ+`"`))
	}
	return n
}

func TestChainAcrossRestartAndRotation(t *testing.T) {
	tests := []struct {
		name         string
		keep         []int // Keep for each of the three runs
		wantFirstSeq bool  // records were rotated away
	}{
		{"all kept", []int{50, 50, 50}, false},
		{"oldest rotated away", []int{3, 3, 3}, true},
		{"keep raised", []int{2, 10, 10}, true},
		{"keep lowered", []int{10, 10, 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, keep := range tt.keep {
				l := openLog(t, dir, Options{MaxSize: 2000, Keep: keep})
				writeN(t, l, 30) // the chain resumes across restarts
				must(t, l.Close())
			}
			files := Files(filepath.Join(dir, "audit.jsonl"))
			if last := tt.keep[len(tt.keep)-1]; len(files) < 3 || len(files) > last+1 {
				t.Fatalf("expected rotation keeping %d files, have %v", last, files)
			}
			r, err := verifyDir(dir)
			if err != nil || r.LastSeq != uint64(r.Records)+r.FirstSeq-1 || (r.FirstSeq > 1) != tt.wantFirstSeq {
				t.Fatalf("verify = %+v, %v", r, err)
			}
			if r.LastSegment-r.FirstSegment+1 != uint64(len(files)) || records(t, dir, SegmentType) != len(files) {
				t.Fatalf("%d files but segments %d to %d, %d headers", len(files), r.FirstSegment, r.LastSegment, records(t, dir, SegmentType))
			}
		})
	}
}

func TestGroupCommitUnderConcurrency(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeN(t, l, 50)
		}()
	}
	wg.Wait()
	must(t, l.Close())
	if r, err := verifyDir(dir); err != nil || records(t, dir, "tool.call") != 800 || r.Records != 801 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}

// tamper applies f to the lines of the log's files.
func tamper(t *testing.T, dir string, f func(file int, lines [][]byte) [][]byte) {
	t.Helper()
	for i, path := range Files(filepath.Join(dir, "audit.jsonl")) {
		b, _ := os.ReadFile(path)
		lines := bytes.SplitAfter(b, []byte("\n"))
		if len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		must(t, os.WriteFile(path, bytes.Join(f(i, lines), nil), 0o600))
	}
}

// renumber closes the gap left by removing files[i], so that the file
// names do not give the removal away.
func renumber(t *testing.T, files []string, i int) {
	t.Helper()
	for j := i + 1; j < len(files)-1; j++ {
		must(t, os.Rename(files[j], files[j-1]))
	}
}

// newest is the newest file with records (rotation may just have left
// an empty one after it).
func newest(dir string) string {
	files := Files(filepath.Join(dir, "audit.jsonl"))
	for i := len(files) - 1; i > 0; i-- {
		if st, err := os.Stat(files[i]); err == nil && st.Size() > 0 {
			return files[i]
		}
	}
	return files[0]
}

func TestVerifyCatchesTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		damage Damage
		want   string
	}{
		{"edit a field", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					l[3] = bytes.Replace(l[3], []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1)
				}
				return l
			})
		}, Edited, "seq 4: its content does not match its hash"},
		{"delete a line", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					return append(l[:5:5], l[6:]...)
				}
				return l
			})
		}, Deleted, "seq 7: follows seq 5"},
		{"swap two lines", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					l[2], l[3] = l[3], l[2]
				}
				return l
			})
		}, Deleted, "seq 4: follows seq 2"},
		{"cut the start of the oldest file", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					return l[3:]
				}
				return l
			})
		}, Deleted, "records were removed from its start"},
		{"remove every older file and cut the start of the newest", func(t *testing.T, dir string) {
			// Found by a red-team helper: with no header left anywhere,
			// the log read as one from before segments.
			files := Files(filepath.Join(dir, "audit.jsonl"))
			last := newest(dir)
			for _, f := range files {
				if f != last {
					must(t, os.Remove(f))
				}
			}
			must(t, os.Rename(last, filepath.Join(dir, "audit.jsonl")))
			tamper(t, dir, func(i int, l [][]byte) [][]byte { return l[2:] })
		}, Deleted, "no file starts with its audit.segment record but the chain head is in segment"},
		{"cut the start of a later file", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 2 {
					return l[1:]
				}
				return l
			})
		}, Deleted, "records were removed from its start"},
		{"truncate the tail", func(t *testing.T, dir string) {
			last := newest(dir)
			b, _ := os.ReadFile(last)
			lines := bytes.SplitAfter(b, []byte("\n"))
			must(t, os.WriteFile(last, bytes.Join(lines[:len(lines)-2], nil), 0o600))
		}, TailCut, "the end was cut off"},
		{"remove the newest segment", func(t *testing.T, dir string) {
			must(t, os.Remove(newest(dir)))
		}, NewestRemoved, "the newest segment was removed"},
		{"remove a middle segment", func(t *testing.T, dir string) {
			files := Files(filepath.Join(dir, "audit.jsonl"))
			must(t, os.Remove(files[1]))
			renumber(t, files, 1)
		}, MiddleRemoved, "a middle segment was removed: segment 3 follows segment 1"},
		{"remove the oldest segment", func(t *testing.T, dir string) {
			files := Files(filepath.Join(dir, "audit.jsonl"))
			must(t, os.Remove(files[0]))
		}, OldestRemoved, "the oldest segment was removed: the log starts at segment 2"},
		{"remove the two oldest segments", func(t *testing.T, dir string) {
			files := Files(filepath.Join(dir, "audit.jsonl"))
			must(t, os.Remove(files[0]))
			must(t, os.Remove(files[1]))
		}, OldestRemoved, "segments 1 to 2 are missing"},
		{"forge a record with a fresh hash", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					return append(l[:2:2], l[3:]...)
				}
				return l
			})
		}, Deleted, "follows seq 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, Options{MaxSize: 1500, Keep: 50})
			writeN(t, l, 60)
			must(t, l.Close())
			if r, err := verifyDir(dir); err != nil || r.FirstSegment != 1 || r.LastSegment < 4 {
				t.Fatalf("intact log: %+v, %v", r, err)
			}
			tt.tamper(t, dir)
			_, err := verifyDir(dir)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Damage != tt.damage || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("verify = %v, want one line of damage %q containing %q", err, tt.damage, tt.want)
			}
		})
	}
}

// TestOldestRemovedAfterRotation removes the oldest file the log keeps
// after rotation has dropped older ones: only the header can tell the
// difference.
func TestOldestRemovedAfterRotation(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 1500, Keep: 3})
	writeN(t, l, 80)
	must(t, l.Close())
	r, err := verifyDir(dir)
	if err != nil || r.FirstSeq == 1 || r.FirstSegment == 1 {
		t.Fatalf("rotation dropped nothing or verify fails: %+v, %v", r, err)
	}
	must(t, os.Remove(Files(filepath.Join(dir, "audit.jsonl"))[0]))
	_, err = verifyDir(dir)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Damage != OldestRemoved {
		t.Fatalf("verify = %v, want the oldest segment reported removed", err)
	}
}

// legacyLog writes records the way logs were written before segments.
func legacyLog(t *testing.T, dir string, n int) {
	t.Helper()
	var l Log
	var buf []byte
	for i := 0; i < n; i++ {
		line, err := l.encode(Record{"type": "tool.call", "tool": fmt.Sprint(i), "time": "2025-01-01T00:00:00Z"})
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, line...)
	}
	if err := os.WriteFile(filepath.Join(dir, "audit.jsonl"), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	// And its chain head, as the daemon that wrote it kept it.
	head, _ := json.Marshal(Head{Seq: l.seq, Hash: l.prev, File: filepath.Join(dir, "audit.jsonl")})
	must(t, os.WriteFile(filepath.Join(dir, "audit.head"), head, 0o600))
}

func TestLogFromBeforeSegmentsResumes(t *testing.T) {
	dir := t.TempDir()
	legacyLog(t, dir, 20)
	if r, err := verifyDir(dir); err != nil || r.Records != 20 || r.FirstSegment != 0 {
		t.Fatalf("legacy log: %+v, %v", r, err)
	}
	l := openLog(t, dir, Options{MaxSize: 1500, Keep: 10})
	writeN(t, l, 40)
	must(t, l.Close())
	r, err := verifyDir(dir)
	if err != nil || r.FirstSegment != 0 || r.LastSegment < 2 || records(t, dir, "tool.call") != 60 {
		t.Fatalf("after resuming a legacy log: %+v, %v", r, err)
	}
}

func TestBatchModeWritesAndVerifies(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncBatch, Interval: 20 * time.Millisecond})
	writeN(t, l, 25)
	testenv.WaitFor(t, "the interval's fsync to update the head", 10*time.Second, func() (bool, string) {
		h, err := ReadHead(filepath.Join(dir, "audit.head"))
		return err == nil && h.Seq == 26, fmt.Sprintf("%+v, %v", h, err)
	})
	must(t, l.Close())
	if r, err := verifyDir(dir); err != nil || r.Records != 26 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}

// blockWriter makes OnRecord stall the writer goroutine on its first
// record until release is closed.
func blockWriter() (onRecord func(Entry), blocked, release chan struct{}) {
	blocked, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	return func(Entry) {
		once.Do(func() {
			close(blocked)
			<-release
		})
	}, blocked, release
}

// TestCallsOvertakeObservations: with the writer busy and the queue full
// of large asynchronous records, a call's record is written in the next
// batch, not after the flood.
func TestCallsOvertakeObservations(t *testing.T) {
	dir := t.TempDir()
	onRecord, blocked, release := blockWriter()
	l := openLog(t, dir, Options{OnRecord: onRecord})
	defer func() { _ = l.Close() }()
	if err := l.Append(Record{"type": "sentinel"}); err != nil {
		t.Fatal(err)
	}
	<-blocked
	big := strings.Repeat("x", MaxString)
	const flood = 200
	for i := 0; i < flood; i++ {
		// 60 fields of 1 KiB: just under MaxRecord each.
		rec := Record{"type": "file.open", "session": "noisy"}
		for f := 0; f < 60; f++ {
			rec[fmt.Sprint("f", f)] = big
		}
		if !l.AppendAsync(rec) {
			t.Fatal("queue full")
		}
	}
	call := Record{"type": "tool.call", "session": "quiet"}
	done := make(chan error)
	go func() { done <- l.Append(call) }()
	testenv.WaitFor(t, "the call to be queued", 10*time.Second, func() (bool, string) { return len(l.syncQ) == 1, fmt.Sprint(len(l.syncQ)) })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// seq 1 is the header, 2 the sentinel; the call goes into the next
	// batch, with at most one flood record picked before it.
	if seq := call["seq"].(uint64); seq > 4 {
		t.Fatalf("the call was written at seq %d, behind %d flood records", seq, seq-3)
	}
}

func TestQueueFullIsCounted(t *testing.T) {
	dir := t.TempDir()
	onRecord, blocked, release := blockWriter()
	var mu sync.Mutex
	drops := map[DropReason]int{}
	l := openLog(t, dir, Options{OnRecord: onRecord, OnDrop: func(_ Record, reason DropReason, err error) {
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(err, ErrUnavailable) {
			drops[reason]++
		}
	}})
	l.AppendAsync(Record{"type": "sentinel"})
	<-blocked
	accepted := 0
	for i := 0; i < queueLen+10; i++ {
		if l.AppendAsync(Record{"type": "file.open"}) {
			accepted++
		}
	}
	close(release)
	must(t, l.Close())
	if err := l.Append(Record{"type": "late"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append after close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if accepted != queueLen || drops[DropQueueFull] != 10 || drops[DropClosed] != 1 || len(drops) != 2 {
		t.Fatalf("accepted %d, drops %v", accepted, drops)
	}
	if n := records(t, dir, "file.open"); n != queueLen {
		t.Fatalf("%d queued records written, want %d", n, queueLen)
	}
}

// TestFullQueueDropsByPriority: with the writer stalled, observations
// fill three quarters of the queue, decisions the rest, and the record
// that ended a session is kept beside the full queue and written first.
// Before, the first 4096 records of any kind took the queue, and a
// session's flood of observations got the record of its deny_paths hit
// dropped (seen in CI: no file.flood record for the flood's kill).
func TestFullQueueDropsByPriority(t *testing.T) {
	dir := t.TempDir()
	onRecord, blocked, release := blockWriter()
	drops := map[Priority]int{}
	var mu sync.Mutex
	l := openLog(t, dir, Options{OnRecord: onRecord, OnDrop: func(r Record, reason DropReason, _ error) {
		mu.Lock()
		defer mu.Unlock()
		if reason == DropQueueFull {
			drops[r["prio"].(Priority)]++
		}
	}})
	l.AppendAsync(Record{"type": "sentinel"})
	<-blocked
	steps := []struct {
		prio     Priority
		typ      string
		offered  int
		accepted int
	}{
		{Observation, "file.chmod", queueLen, observationRoom},
		{Decision, "request.denied", queueLen, queueLen - observationRoom},
		{Observation, "file.open", 10, 0}, // no room left for either
		{Decision, "tool.result", 10, 0},
		{Essential, "file.flood", maxEssential + 10, maxEssential}, // (the bound)
	}
	for _, st := range steps {
		accepted := 0
		for i := 0; i < st.offered; i++ {
			if l.Enqueue(Record{"type": st.typ, "prio": st.prio}, st.prio) {
				accepted++
			}
		}
		if accepted != st.accepted {
			t.Fatalf("%d of %d %s records (priority %d) queued, want %d", accepted, st.offered, st.typ, st.prio, st.accepted)
		}
	}
	close(release)
	must(t, l.Close())
	for _, st := range steps {
		if n := records(t, dir, st.typ); n != st.accepted {
			t.Errorf("%d %s records written, want the %d queued", n, st.typ, st.accepted)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := (map[Priority]int{Observation: queueLen - observationRoom + 10, Decision: observationRoom + 10, Essential: 10}); !maps.Equal(drops, want) {
		t.Errorf("dropped for a full queue: %v, want %v", drops, want)
	}
	// Written first: right after the sentinel's batch, before the queue.
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	must(t, err)
	lines := bytes.Split(b, []byte("\n"))
	for i, line := range lines[2:12] { // the header, the sentinel, then these
		if !bytes.Contains(line, []byte(`"type":"file.flood"`)) {
			t.Fatalf("line %d: %s, want the kept records before the queued ones", i+3, line)
		}
	}
	if _, err := verifyDir(dir); err != nil {
		t.Fatalf("the chain after the kept records went first: %v", err)
	}
}

// TestASessionsShareOfABusyQueue: once the queue is half full, a session
// may queue at most sessionShare more records until they are taken, so that one server's
// flood of its own denials (which are not dropped as observations)
// leaves the rest of the queue to the other sessions' (red team on
// f69adaf: one session's refused messages filled it all).
func TestASessionsShareOfABusyQueue(t *testing.T) {
	dir := t.TempDir()
	onRecord, blocked, release := blockWriter()
	l := openLog(t, dir, Options{OnRecord: onRecord})
	l.AppendAsync(Record{"type": "sentinel"})
	<-blocked
	steps := []struct {
		session  string
		prio     Priority
		offered  int
		accepted int
	}{
		{"noisy", Decision, queueLen, contestedQueue + sessionShare}, // alone, until the queue is contested, then its share
		{"noisy", Decision, 10, 0},                                   // then over its share
		{"quiet", Decision, sessionShare + 10, sessionShare},         // another still has its share
		{"", Decision, 10, 10},                                       // (no session: not held to a share)
		{"third", Observation, sessionShare + 10, sessionShare},
	}
	for _, st := range steps {
		accepted := 0
		for i := 0; i < st.offered; i++ {
			rec := Record{"type": "request.denied", "n": i}
			if st.session != "" {
				rec["session"] = st.session
			}
			if l.Enqueue(rec, st.prio) {
				accepted++
			}
		}
		if accepted != st.accepted {
			t.Fatalf("session %q: %d of %d records queued, want %d", st.session, accepted, st.offered, st.accepted)
		}
	}
	close(release)
	must(t, l.Close())
	if n := records(t, dir, "request.denied"); n != contestedQueue+3*sessionShare+10 {
		t.Fatalf("%d records written, want every one queued", n)
	}
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	if len(l.waitingBy) != 0 {
		t.Fatalf("sessions still counted as waiting after the queue drained: %v", l.waitingBy)
	}
}

// TestGroupCommit: in always mode records nobody waits for cause no
// fdatasync of their own, the next durable record's fdatasync covers them,
// and records queued while one is being synced share the next one.
func TestGroupCommit(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncAlways, Interval: time.Hour})
	defer func() { _ = l.Close() }()
	for i := 0; i < 20; i++ {
		if !l.AppendAsync(Record{"type": "tool.result", "n": i}) {
			t.Fatal("queue full")
		}
	}
	testenv.WaitFor(t, "the results to be written", 10*time.Second, func() (bool, string) {
		return l.Count() >= 20, fmt.Sprint(l.Count(), " written")
	})
	if n := l.Syncs(); n != 0 {
		t.Fatalf("%d fdatasyncs for records nobody waits for, want 0", n)
	}
	if err := l.Append(Record{"type": "tool.call"}); err != nil {
		t.Fatal(err)
	}
	if n := l.Syncs(); n != 1 {
		t.Fatalf("%d fdatasyncs after one durable record, want 1", n)
	}
	const calls = 64
	var waits []<-chan error
	for i := 0; i < calls; i++ {
		waits = append(waits, l.AppendDurable(Record{"type": "tool.call", "n": i}))
	}
	for _, w := range waits {
		if err := <-w; err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Syncs() - 1; n < 1 || n > calls/8 {
		t.Fatalf("%d fdatasyncs for %d records queued together, want them to share a few", n, calls)
	}
}

// TestWrittenOnTheCallersGoroutine: in batch mode AppendDurable has
// written its record when it returns, and AppendNow writes at once in
// either mode without an fsync; when a commit is under way AppendNow
// queues instead of waiting for it.
func TestWrittenOnTheCallersGoroutine(t *testing.T) {
	inFile := func(t *testing.T, dir, tool string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
		must(t, err)
		return strings.Contains(string(b), `"tool":"`+tool+`"`)
	}
	for _, mode := range []SyncMode{SyncBatch, SyncAlways} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			onRecord, blocked, release := blockWriter()
			var armed sync.Once
			block := false
			var mu sync.Mutex
			l := openLog(t, dir, Options{Sync: mode, Interval: time.Hour, OnRecord: func(r Entry) {
				mu.Lock()
				b := block
				mu.Unlock()
				if b {
					onRecord(r)
				}
			}})
			defer func() { armed.Do(func() { close(release) }); _ = l.Close() }()
			if mode == SyncBatch {
				ch := l.AppendDurable(Record{"type": "tool.call", "tool": "durable"})
				select {
				case err := <-ch:
					must(t, err)
				default:
					t.Fatal("AppendDurable returned before its record was written")
				}
				if !inFile(t, dir, "durable") {
					t.Fatal("the record is not in the file")
				}
			}
			syncs := l.Syncs()
			if !l.AppendNow(Record{"type": "tool.result", "tool": "now"}) || !inFile(t, dir, "now") {
				t.Fatal("AppendNow did not write its record at once")
			}
			if l.Syncs() != syncs {
				t.Fatalf("AppendNow synced: %d fdatasyncs, want %d", l.Syncs(), syncs)
			}
			// Several at once: all written, in order, in one batch.
			count := l.Count()
			if !l.AppendNowAll(Record{"type": "tool.result", "tool": "all-1"}, Record{"type": "tool.result", "tool": "all-2"}) {
				t.Fatal("AppendNowAll refused its records")
			}
			if got := l.Count() - count; got != 2 || !inFile(t, dir, "all-2") {
				t.Fatalf("AppendNowAll: %d records written, want 2 at once", got)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl")); err != nil || strings.Index(string(b), "all-1") > strings.Index(string(b), "all-2") {
				t.Fatalf("AppendNowAll wrote its records out of order (%v)", err)
			}
			// A commit under way: AppendNow queues and returns.
			mu.Lock()
			block = true
			mu.Unlock()
			l.AppendAsync(Record{"type": "x", "tool": "stall"})
			<-blocked
			if !l.AppendNow(Record{"type": "tool.result", "tool": "queued"}) {
				t.Fatal("AppendNow refused a record while a commit was under way")
			}
			armed.Do(func() { close(release) })
			testenv.WaitFor(t, "the queued record to be written", 10*time.Second, func() (bool, string) {
				return inFile(t, dir, "queued"), "not in the file"
			})
		})
	}
}

// TestAppendDurableNow: in always mode it commits and syncs on the
// caller's goroutine when the log is idle, and queues (never waiting
// behind another commit's sync) when one is under way.
func TestAppendDurableNow(t *testing.T) {
	dir := t.TempDir()
	onRecord, blocked, release := blockWriter()
	var block atomic.Bool
	l := openLog(t, dir, Options{Sync: SyncAlways, Interval: time.Hour, OnRecord: func(r Entry) {
		if block.Load() {
			onRecord(r)
		}
	}})
	var once sync.Once
	defer func() { once.Do(func() { close(release) }); _ = l.Close() }()
	syncs := l.Syncs()
	select {
	case err := <-l.AppendDurableNow(Record{"type": "tool.call", "tool": "idle"}):
		must(t, err)
	default:
		t.Fatal("AppendDurableNow on an idle log returned before its record was durable")
	}
	if l.Syncs() != syncs+1 {
		t.Fatalf("%d fdatasyncs, want %d", l.Syncs(), syncs+1)
	}
	block.Store(true)
	stalled := l.AppendDurable(Record{"type": "tool.call", "tool": "stall"})
	<-blocked
	ch := l.AppendDurableNow(Record{"type": "tool.call", "tool": "busy"})
	select {
	case err := <-ch:
		t.Fatalf("AppendDurableNow yielded %v while another commit was under way: it should have queued", err)
	default:
	}
	once.Do(func() { close(release) })
	must(t, <-stalled)
	must(t, <-ch)
}

// TestCommitDurable: deferred records are written only by CommitDurable,
// in the order added; in batch mode with one write on the caller's
// goroutine (their channels have yielded when it returns), in always mode
// synced before they yield; after Close they yield an error.
func TestCommitDurable(t *testing.T) {
	for _, mode := range []SyncMode{SyncBatch, SyncAlways} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, Options{Sync: mode, Interval: time.Hour})
			var d Deferred
			var chs []<-chan error
			for _, tool := range []string{"d-1", "d-2", "d-3"} {
				chs = append(chs, d.Add(Record{"type": "tool.call", "tool": tool}))
			}
			if n := records(t, dir, "tool.call"); n != 0 || d.Len() != 3 {
				t.Fatalf("%d records written and %d kept before CommitDurable, want 0 and 3", n, d.Len())
			}
			count, syncs := l.Count(), l.Syncs()
			l.CommitDurable(&d)
			for i, ch := range chs {
				if mode == SyncBatch {
					select {
					case err := <-ch:
						must(t, err)
					default:
						t.Fatalf("record %d: CommitDurable returned before it was written", i+1)
					}
				} else {
					must(t, <-ch)
				}
			}
			if got := l.Count() - count; got != 3 || d.Len() != 0 {
				t.Fatalf("CommitDurable wrote %d records and kept %d, want 3 and 0", got, d.Len())
			}
			if mode == SyncAlways && l.Syncs() == syncs {
				t.Fatal("always mode: the deferred records yielded without an fdatasync")
			}
			b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
			must(t, err)
			if i1, i2, i3 := strings.Index(string(b), "d-1"), strings.Index(string(b), "d-2"), strings.Index(string(b), "d-3"); i1 < 0 || i1 > i2 || i2 > i3 {
				t.Fatalf("deferred records out of order or missing:\n%s", b)
			}
			must(t, l.Close())
			if _, err := verifyDir(dir); err != nil {
				t.Fatal(err)
			}
			ch := d.Add(Record{"type": "tool.call", "tool": "late"})
			l.CommitDurable(&d)
			if err := <-ch; !errors.Is(err, ErrUnavailable) {
				t.Fatalf("after Close: %v, want ErrUnavailable", err)
			}
		})
	}
}

// Kept (Essential) records go first in the next commits, but a commit
// still takes no more than its byte bound of them: a backlog of large
// ones is written over several commits, not as one write of any size.
func TestKeptRecordsKeepTheBatchBound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var sizes []int64 // the file's size seen by each record's OnRecord: one value per commit
	l := openLog(t, dir, Options{OnRecord: func(Entry) {
		once.Do(func() { close(blocked); <-release })
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) == 0 || sizes[len(sizes)-1] != fi.Size() {
			sizes = append(sizes, fi.Size())
		}
	}})
	l.AppendAsync(Record{"type": "sentinel"})
	<-blocked
	// A full queue: Essential records are then kept beside it.
	for l.Enqueue(Record{"type": "request.denied"}, Decision) {
	}
	const kept = 40
	big := Record{"type": "file.flood"}
	for i := 0; i < 30; i++ {
		big[fmt.Sprintf("field%02d", i)] = strings.Repeat("x", 900) // under MaxString each: ~27 KiB a record
	}
	for i := 0; i < kept; i++ {
		if !l.Enqueue(big, Essential) {
			t.Fatalf("kept record %d refused", i)
		}
	}
	close(release)
	must(t, l.Close())
	if n := records(t, dir, "file.flood"); n != kept {
		t.Fatalf("%d kept records written, want %d", n, kept)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(sizes); i++ {
		if grew := sizes[i] - sizes[i-1]; grew > maxBatch+MaxRecord {
			t.Fatalf("commit %d wrote %d bytes at once, want at most maxBatch (%d) and the record that crossed it", i, grew, maxBatch)
		}
	}
	if len(sizes) < 10 {
		t.Fatalf("%d commits for %d records of ~27 KiB: want them split by the byte bound", len(sizes), kept)
	}
	if _, err := verifyDir(dir); err != nil {
		t.Fatal(err)
	}
}

// Sessions flooding together (a server run in many sessions at once)
// each take a part of the busy queue's room, not all of it: a bystander
// session's denial still finds room. With a fixed share of 256, eight
// flooders filled the queue.
func TestFloodingSessionsLeaveRoom(t *testing.T) {
	for _, flooders := range []int{8, 16, 64} {
		t.Run(fmt.Sprint(flooders, " flooders"), func(t *testing.T) {
			dir := t.TempDir()
			onRecord, blocked, release := blockWriter()
			l := openLog(t, dir, Options{OnRecord: onRecord})
			l.AppendAsync(Record{"type": "sentinel"})
			<-blocked
			for f := 0; f < flooders; f++ {
				for i := 0; i < queueLen; i++ {
					if !l.Enqueue(Record{"type": "request.denied", "session": fmt.Sprint("flooder-", f)}, Decision) {
						break
					}
				}
			}
			queued := len(l.asyncQ)
			if !l.Enqueue(Record{"type": "net.denied", "session": "bystander"}, Decision) {
				t.Fatalf("the bystander's denial was refused with %d records queued by %d flooding sessions", queued, flooders)
			}
			if room := queueLen - queued; room < flooders+2 {
				t.Fatalf("the flooders left %d places of %d", room, queueLen)
			}
			close(release)
			must(t, l.Close())
			if n := records(t, dir, "net.denied"); n != 1 {
				t.Fatalf("%d bystander records written, want 1", n)
			}
		})
	}
}

// TestRotationAmongStrayNames: names beside the log that are not its
// segments (a backup, a zero-padded number, a directory with a segment's
// name) and a directory whose name has glob characters neither stop
// rotation nor get shifted into its segments or listed by Files, and no
// rotation fails because of them.
func TestRotationAmongStrayNames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		subdir string   // the log's directory under the test's
		files  []string // stray regular files
		dirs   []string // stray directories
	}{
		{"glob characters in the directory", "[prod]*", nil, nil},
		{"a backup and a zero-padded number", "", []string{"audit.jsonl.1.bak", "audit.jsonl.04", "audit.jsonl.+2", "audit.jsonl.0"}, nil},
		{"a directory with a segment's name", "", nil, []string{"audit.jsonl.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tc.subdir)
			must(t, os.MkdirAll(dir, 0o755))
			for _, f := range tc.files {
				must(t, os.WriteFile(filepath.Join(dir, f), []byte("not a segment\n"), 0o600))
			}
			for _, d := range tc.dirs {
				must(t, os.Mkdir(filepath.Join(dir, d), 0o755))
				must(t, os.WriteFile(filepath.Join(dir, d, "x"), nil, 0o600)) // not empty: cannot be removed as a file
			}
			failures := 0
			l := openLog(t, dir, Options{MaxSize: 1500, Keep: 3, OnFailure: func(error) { failures++ }})
			writeN(t, l, 80) // many rotations
			must(t, l.Close())
			if failures != 0 {
				t.Fatalf("%d rotation failures", failures)
			}
			path := filepath.Join(dir, "audit.jsonl")
			files := Files(path)
			if len(files) != 4 {
				t.Fatalf("Files = %v, want the current file and 3 kept segments", files)
			}
			for _, f := range files {
				if st, err := os.Lstat(f); err != nil || !st.Mode().IsRegular() {
					t.Fatalf("Files lists %s, which is not a regular file (%v)", f, err)
				}
			}
			for _, f := range tc.files {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != "not a segment\n" {
					t.Errorf("stray %s changed: %q %v", f, b, err)
				}
			}
			if _, err := verifyDir(dir); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

// TestRenameNoReplace: a rotation's renames never replace a name in use
// (whatever a listing of the directory missed).
func TestRenameNoReplace(t *testing.T) {
	for _, tc := range []struct {
		name       string
		targetHeld bool
		wantErr    bool
	}{
		{"the target is free", false, false},
		{"the target is a segment", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			from, to := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit.jsonl.1")
			must(t, os.WriteFile(from, []byte("current\n"), 0o600))
			if tc.targetHeld {
				must(t, os.WriteFile(to, []byte("kept\n"), 0o600))
			}
			err := renameNoReplace(from, to)
			if (err != nil) != tc.wantErr {
				t.Fatalf("renameNoReplace: %v, want an error: %v", err, tc.wantErr)
			}
			want := "current\n"
			if tc.targetHeld {
				want = "kept\n"
				if b, rerr := os.ReadFile(from); rerr != nil || string(b) != "current\n" {
					t.Fatalf("the source changed: %q %v", b, rerr)
				}
			}
			if b, rerr := os.ReadFile(to); rerr != nil || string(b) != want {
				t.Fatalf("the target holds %q (%v), want %q", b, rerr, want)
			}
		})
	}
}

// TestVerifyCatchesACutStartOfTheOnlyFile: a log of one file, its header
// and first records cut off, read as a log from before segments and
// passed (found by a red-team helper); the chain head says segments
// began.
func TestVerifyCatchesACutStartOfTheOnlyFile(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 1 << 20, Keep: 5})
	writeN(t, l, 10)
	must(t, l.Close())
	if r, err := verifyDir(dir); err != nil || len(Files(filepath.Join(dir, "audit.jsonl"))) != 1 || r.FirstSegment != 1 {
		t.Fatalf("intact log of one file: %+v, %v", r, err)
	}
	tamper(t, dir, func(i int, l [][]byte) [][]byte { return l[3:] })
	_, err := verifyDir(dir)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Damage != Deleted || !strings.Contains(err.Error(), "records were removed from the log's start") {
		t.Fatalf("verify = %v, want the cut start reported", err)
	}
}

// TestRestartAfterDamage: what the daemon finds when it starts again
// after the log was damaged while it was stopped (or killed mid-write).
// Before, a cut end or a removed newest segment passed verification once
// the chain went on from what the files held, and a torn last line kept
// the daemon from starting (found by a red-team helper).
func TestRestartAfterDamage(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		opts    Options
		mark    string // the record the restart writes
		verify  Damage // what verify says after the restart ("" : OK)
		wantErr string // Open fails with this ("" : it opens)
	}{
		{"the end cut", func(t *testing.T, dir string) {
			tamper(t, dir, func(_ int, l [][]byte) [][]byte { return l[:len(l)-4] })
		}, Options{}, GapType, Lost, ""},
		{"the newest segment removed", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "audit.jsonl")))
		}, Options{MaxSize: 2000, Keep: 50}, GapType, Lost, ""},
		{"a torn last line", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "audit.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
			must(t, err)
			_, err = f.WriteString(`{"hash":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","seq":31,"ty`)
			must(t, err)
			must(t, f.Close())
		}, Options{}, RecoveredType, "", ""},
		{"the head removed with the end cut", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "audit.head")))
			tamper(t, dir, func(_ int, l [][]byte) [][]byte { return l[:len(l)-4] })
		}, Options{}, GapType, Lost, ""},
		{"records replaced past the head", func(t *testing.T, dir string) {
			// Cut 4, chain 6 others after the rest: the log ends past the
			// head, whose record is no longer there.
			tamper(t, dir, func(_ int, l [][]byte) [][]byte { return l[:len(l)-4] })
			l := openLogNoHead(t, dir)
			writeN(t, l, 6)
			must(t, l.Close())
		}, Options{}, GapType, Lost, ""},
		{"a whole last line edited", func(t *testing.T, dir string) {
			tamper(t, dir, func(_ int, l [][]byte) [][]byte {
				l[len(l)-1] = bytes.Replace(l[len(l)-1], []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1)
				return l
			})
		}, Options{}, "", "", "a whole line that is not what was written"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, tt.opts)
			writeN(t, l, 30)
			must(t, l.Close())
			tt.damage(t, dir)
			tt.opts.Path, tt.opts.HeadPath = filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit.head")
			l, err := Open(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			must(t, err)
			writeN(t, l, 5)
			must(t, l.Close())
			want := 1
			if tt.name == "records replaced past the head" {
				want = 2 // the forger's own Log wrote one (its head was missing), then the restart's
			}
			if n := records(t, dir, tt.mark); n != want {
				t.Fatalf("%d %s records after the restart, want %d", n, tt.mark, want)
			}
			r, err := verifyDir(dir)
			var ve *VerifyError
			switch {
			case tt.verify == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.verify != "" && (!errors.As(err, &ve) || ve.Damage != tt.verify):
				t.Fatalf("verify = %+v, %v; want %s", r, err, tt.verify)
			case tt.verify == Lost && (len(r.Gaps) == 0 || !strings.Contains(r.Gaps[len(r.Gaps)-1].Lost, "chain head")):
				t.Fatalf("gaps %+v", r.Gaps)
			case tt.name == "records replaced past the head" && !strings.Contains(r.Gaps[len(r.Gaps)-1].Lost, "is not the one the head recorded"):
				t.Fatalf("the restart's gap %+v, want it to name the replaced record", r.Gaps[len(r.Gaps)-1])
			}
			if tt.mark == RecoveredType {
				saved, _ := filepath.Glob(filepath.Join(dir, "audit.jsonl.torn-*"))
				if len(saved) != 1 {
					t.Fatalf("torn end saved as %v", saved)
				}
				if b, _ := os.ReadFile(saved[0]); !bytes.HasSuffix(b, []byte(`"seq":31,"ty`)) {
					t.Fatalf("saved torn end %q", b)
				}
			}
		})
	}
}

// TestRemovedFileIsPutBack: the current file removed while the log writes
// to it (rm, a log tool) is copied back from the open file, and the log
// writes on there; before, records went on into the removed file, unseen,
// and were lost at the next rotation (found by a red-team helper). When
// something else took the path, the log says so once.
func TestRemovedFileIsPutBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		takePath bool // a new file is made at the path after the removal
	}{
		{"path free: put back", false},
		{"path taken: told", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var mu sync.Mutex
			var failures []error
			l := openLog(t, dir, Options{Interval: 20 * time.Millisecond, OnFailure: func(err error) {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}})
			writeN(t, l, 10)
			path := filepath.Join(dir, "audit.jsonl")
			must(t, os.Remove(path))
			if tc.takePath {
				must(t, os.WriteFile(path, []byte("someone else's\n"), 0o600))
			}
			writeN(t, l, 5) // into the removed file
			testenv.WaitFor(t, "the removal handled", 5*time.Second, func() (bool, string) {
				mu.Lock()
				defer mu.Unlock()
				if tc.takePath {
					return len(failures) > 0, "no failure reported"
				}
				return records(t, dir, RecoveredType) == 1, fmt.Sprint("not put back yet; failures: ", failures)
			})
			writeN(t, l, 5)
			must(t, l.Close())
			if tc.takePath {
				mu.Lock()
				defer mu.Unlock()
				if len(failures) != 1 || !errors.Is(failures[0], ErrRemoved) || !strings.Contains(failures[0].Error(), "could not be put back") {
					t.Fatalf("failures %v, want one naming the removed file", failures)
				}
				return
			}
			r, err := verifyDir(dir)
			if err != nil || r.Records != 22 { // a header, 20 records and the recovered one
				t.Fatalf("verify = %+v, %v; want the whole chain back", r, err)
			}
		})
	}
}

// TestHeadChecks: the head exists from the start (a batch-mode daemon
// killed before its first sync interval left none, and verify failed as
// if it had been removed), and a log that goes on past the head must hold
// the record the head saw (only the last record was compared).
func TestHeadChecks(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncBatch, Interval: time.Hour})
	if _, err := ReadHead(filepath.Join(dir, "audit.head")); err != nil {
		t.Fatalf("no chain head right after Open: %v", err)
	}
	writeN(t, l, 3)
	if _, err := verifyDir(dir); err != nil { // as if killed now
		t.Fatalf("verify before the first sync interval: %v", err)
	}
	must(t, l.Close())

	a, b := t.TempDir(), t.TempDir()
	la := openLog(t, a, Options{})
	writeN(t, la, 10)
	must(t, la.Close())
	lb := openLog(t, b, Options{})
	must(t, lb.Append(Record{"type": "tool.call", "tool": "other"}))
	writeN(t, lb, 14)
	must(t, lb.Close())
	headA, err := ReadHead(filepath.Join(a, "audit.head"))
	must(t, err)
	_, err = Verify(Files(filepath.Join(b, "audit.jsonl")), &headA)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Damage != HeadMismatched || ve.Seq != headA.Seq {
		t.Fatalf("verify of a longer log without the head's record = %v, want %s at seq %d", err, HeadMismatched, headA.Seq)
	}
}

// openLogNoHead opens the log in dir with a chain head of its own (the
// real one left as it is), as someone who can write the log but not the
// state directory would.
func openLogNoHead(t *testing.T, dir string) *Log {
	t.Helper()
	l, err := Open(Options{Path: filepath.Join(dir, "audit.jsonl"), HeadPath: filepath.Join(t.TempDir(), "other.head")})
	must(t, err)
	return l
}

// TestOneWriterPerLog: a second Log on the same files is refused while
// the first is open (its start would act on lines the first writes), and
// opens once the first is closed.
func TestOneWriterPerLog(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	_, err := Open(Options{Path: filepath.Join(dir, "audit.jsonl"), HeadPath: filepath.Join(dir, "audit.head")})
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Open = %v, want it refused", err)
	}
	must(t, l.Close())
	must(t, openLog(t, dir, Options{}).Close())
}

// TestTrimIsCountedAndHistoryStartMoves: every segment a rotation
// removes is told (OnTrim), and HistoryStart is the first record of the
// oldest file left, which moves forward as segments go.
func TestTrimIsCountedAndHistoryStartMoves(t *testing.T) {
	for _, tc := range []struct {
		name        string
		keep        int
		records     int
		wantRemoved bool
	}{
		{"nothing past keep", 50, 30, false},
		{"segments removed", 2, 80, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "audit.jsonl")
			if _, ok := HistoryStart(path); ok {
				t.Fatal("HistoryStart of no log found a record")
			}
			removed := 0
			l := openLog(t, dir, Options{MaxSize: 1500, Keep: tc.keep, OnTrim: func(n int) { removed += n }})
			writeN(t, l, tc.records)
			must(t, l.Close())
			files := Files(path)
			// The chain head's segment is the number of segments made;
			// the files holding records are those kept.
			h, err := ReadHead(filepath.Join(dir, "audit.head"))
			must(t, err)
			held := 0
			for _, f := range files {
				if st, err := os.Stat(f); err == nil && st.Size() > 0 {
					held++
				}
			}
			if want := int(h.Segment) - held; removed != want || tc.wantRemoved != (removed > 0) {
				t.Fatalf("OnTrim told of %d removed segments, want %d (segment %d, %d files hold records: %v)", removed, want, h.Segment, held, files)
			}
			start, ok := HistoryStart(path)
			if !ok {
				t.Fatalf("HistoryStart found no record in %v", files)
			}
			first, err := os.ReadFile(files[0])
			must(t, err)
			line, _, _ := strings.Cut(string(first), "\n")
			var rec struct {
				Time time.Time `json:"time"`
				Seq  uint64    `json:"seq"`
			}
			must(t, json.Unmarshal([]byte(line), &rec))
			if !start.Equal(rec.Time) {
				t.Fatalf("HistoryStart = %v, the oldest file %s begins at %v", start, files[0], rec.Time)
			}
			if tc.wantRemoved && rec.Seq <= 1 {
				t.Fatalf("segments were removed but the oldest file left begins with record %d", rec.Seq)
			}
		})
	}
}
