package audit

import (
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// appenders is how many goroutines wait on AppendDurable at once in the
// sync benchmarks: about as many calls as a busy daemon has in flight.
const appenders = 32

// BenchmarkAppend measures how many records per second the log writes, in
// each sync mode: "sync" is AppendDurable from 32 goroutines, each waiting
// for its record before the next (as the relay holds a call until its
// record is durable); "async" is AppendAsync from one goroutine, as tool
// results and kernel events are logged. The time runs until every record
// is written (not until Close, whose final fdatasync would dominate a
// short run). The log lives in the test's temporary directory, so
// "always" pays that disk's fdatasync.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []SyncMode{SyncAlways, SyncBatch} {
		b.Run(string(mode)+"/sync", func(b *testing.B) {
			l := benchLog(b, mode)
			b.ResetTimer()
			var left atomic.Int64
			left.Store(int64(b.N))
			var failed atomic.Pointer[error]
			var wg sync.WaitGroup
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						if err := <-l.AppendDurable(benchRecord(g)); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if p := failed.Load(); p != nil {
				b.Fatal(*p)
			}
			finish(b, l)
		})
		b.Run(string(mode)+"/async", func(b *testing.B) {
			l := benchLog(b, mode)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A full queue drops the record: offer a new one until it is taken.
				for !l.AppendAsync(benchRecord(i)) {
					runtime.Gosched()
				}
			}
			finish(b, l)
		})
	}
}

// benchLog opens a log in mode; the benchmark closes it (finish).
func benchLog(b *testing.B, mode SyncMode) *Log {
	b.Helper()
	dir := b.TempDir()
	l, err := Open(Options{Path: filepath.Join(dir, "audit.jsonl"), HeadPath: filepath.Join(dir, "audit.head"), Sync: mode})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() }) // closed already, unless the benchmark failed
	return l
}

// finish waits until the writer has written all b.N records, stops the
// timer, reports the records written per second and the fdatasyncs per
// record, and closes l.
func finish(b *testing.B, l *Log) {
	b.Helper()
	for l.Count() < int64(b.N) {
		if err := l.Healthy(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(l.Syncs())/float64(b.N), "fdatasyncs/record")
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchRecord is a tool.call record of a typical size (about 400 bytes
// once written with its seq, prev and hash).
func benchRecord(i int) Record {
	// Room for the log's four fields, as the daemon's records have.
	r := make(Record, 16)
	maps.Copy(r, Record{
		"type": "tool.call", "session": "s-0123456789abcdef", "agent": "claude", "agent_instance": fmt.Sprintf("i-%d", i),
		"user": "alice", "server": "everything", "method": "tools/call", "tool": "echo", "id": i,
		"arguments": map[string]any{"message": "ping"}, "decision": "allow", "rule": "default_decision",
	})
	return r
}

// BenchmarkEncode measures what the daemon does for each call's record
// on the call's path, before the write: the arguments redacted and
// digested, then the record bounded, rendered and chained; built as a
// map (Record) and as the daemon builds a call's records (Fields, the
// same fields, here in no particular order).
func BenchmarkEncode(b *testing.B) {
	args := map[string]any{"message": "ping", "count": float64(3)}
	key, err := NewDigestKey()
	if err != nil {
		b.Fatal(err)
	}
	dg, err := NewDigester(key)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		build func(i int) Entry
	}{
		{"record", func(i int) Entry {
			rec := benchRecord(i)
			rec["args_digest"] = dg.Digest(args)
			rec["arguments"] = Arguments(args, ArgsRedacted, nil)
			return rec
		}},
		{"fields", func(i int) Entry {
			f := NewFields(14)
			f.Add("type", "tool.call")
			f.Add("session", "s-0123456789abcdef")
			f.Add("agent", "claude")
			f.Add("agent_instance", fmt.Sprintf("i-%d", i))
			f.Add("user", "alice")
			f.Add("server", "everything")
			f.Add("method", "tools/call")
			f.Add("tool", "echo")
			f.Add("id", i)
			f.Add("decision", "allow")
			f.Add("rule", "default_decision")
			f.Add("args_digest", dg.Digest(args))
			f.Add("arguments", Arguments(args, ArgsRedacted, nil))
			return f
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := benchLog(b, SyncBatch)
			var buf []byte
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e := bc.build(i)
				var err error
				if buf, err = l.encodeTo(buf[:0], e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
