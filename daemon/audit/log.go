package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Record is one audit event: type-specific fields plus the common ones
// (session, agent, agent_instance, user, server) set by the caller. Log
// sets time, seq, prev and hash.
type Record map[string]any

// Options configure a Log.
type Options struct {
	Path      string        // the current file, e.g. /var/log/mcpcage/audit.jsonl
	HeadPath  string        // chain head, in the state dir
	MaxSize   int64         // rotate when the file exceeds this (0: 64 MiB)
	Keep      int           // rotated files kept (0: 10)
	Sync      string        // "always" (default) or "batch"
	Interval  time.Duration // fsync interval in batch mode (0: 1s)
	OnRecord  func(Record)  // called after each durable write (followers, journal)
	OnFailure func(error)   // called when writing fails (metrics, logs)
}

// Log is an open audit log.
type Log struct {
	o     Options
	queue chan *pending
	done  chan struct{}
	wg    sync.WaitGroup

	// Owned by the writer goroutine.
	f      *os.File
	size   int64
	seq    uint64
	prev   string
	dirty  bool
	failed atomic.Pointer[error]
	count  atomic.Int64
}

type pending struct {
	rec  Record
	done chan error // nil: asynchronous
}

// ErrUnavailable wraps every write failure.
var ErrUnavailable = errors.New("audit log unavailable")

// Head is the chain's last record.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	File string `json:"file"`
}

// Open opens (creating) the log and resumes its chain.
func Open(o Options) (*Log, error) {
	if o.MaxSize <= 0 {
		o.MaxSize = 64 << 20
	}
	if o.Keep <= 0 {
		o.Keep = 10
	}
	if o.Sync == "" {
		o.Sync = "always"
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log directory: %w", err)
	}
	l := &Log{o: o, queue: make(chan *pending, 4096), done: make(chan struct{})}
	if err := l.resume(); err != nil {
		return nil, err
	}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	l.wg.Add(1)
	go l.writer()
	return l, nil
}

// resume finds the chain's head: the last record of the newest file, or
// the head file when the log files are empty.
func (l *Log) resume() error {
	files := Files(l.o.Path)
	for i := len(files) - 1; i >= 0; i-- {
		last, err := lastLine(files[i])
		if err != nil {
			return fmt.Errorf("read audit log %s: %w", files[i], err)
		}
		if last == nil {
			continue
		}
		hash, seq, _, err := parseLine(last)
		if err != nil {
			return fmt.Errorf("audit log %s ends with a damaged record (%v): run `mcpcage audit verify` and move the file aside", files[i], err)
		}
		l.seq, l.prev = seq, hash
		return nil
	}
	if h, err := ReadHead(l.o.HeadPath); err == nil {
		l.seq, l.prev = h.Seq, h.Hash
	}
	return nil
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(l.o.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Append writes rec and returns once it is durable (per the sync mode).
func (l *Log) Append(rec Record) error {
	p := &pending{rec: rec, done: make(chan error, 1)}
	select {
	case l.queue <- p:
	case <-l.done:
		return fmt.Errorf("%w: closed", ErrUnavailable)
	}
	return <-p.done
}

// AppendAsync queues rec without waiting (observations such as kernel
// events). It reports false when the queue is full.
func (l *Log) AppendAsync(rec Record) bool {
	select {
	case l.queue <- &pending{rec: rec}:
		return true
	default:
		return false
	}
}

// Healthy reports the last write's error, nil when writes succeed.
func (l *Log) Healthy() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Count is the number of records written since Open.
func (l *Log) Count() int64 { return l.count.Load() }

// Close flushes and closes the log.
func (l *Log) Close() error {
	close(l.done)
	l.wg.Wait()
	return l.f.Close()
}

func (l *Log) writer() {
	defer l.wg.Done()
	var tick <-chan time.Time
	if l.o.Sync == "batch" {
		t := time.NewTicker(l.o.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		var batch []*pending
		select {
		case p := <-l.queue:
			batch = append(batch, p)
		case <-tick:
			l.syncIfDirty()
			continue
		case <-l.done:
			// Drain what is queued, then stop.
			for {
				select {
				case p := <-l.queue:
					batch = append(batch, p)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				l.write(batch)
			}
			l.syncIfDirty()
			return
		}
	collect:
		for len(batch) < 1024 {
			select {
			case p := <-l.queue:
				batch = append(batch, p)
			default:
				break collect
			}
		}
		l.write(batch)
	}
}

func (l *Log) syncIfDirty() {
	if l.dirty {
		if err := l.f.Sync(); err == nil {
			l.dirty = false
			l.saveHead()
		}
	}
}

// write appends a batch with one write and (in always mode) one fsync.
func (l *Log) write(batch []*pending) {
	start, startSeq, startPrev := l.size, l.seq, l.prev
	var buf bytes.Buffer
	var written []Record
	for _, p := range batch {
		line, hash, err := l.encode(p.rec)
		if err != nil {
			if p.done != nil {
				p.done <- fmt.Errorf("%w: encode: %v", ErrUnavailable, err)
			}
			continue
		}
		buf.Write(line)
		written = append(written, p.rec)
		_ = hash
	}
	err := l.flush(buf.Bytes())
	if err != nil {
		// Cut the partial write and rewind the chain: the records were not
		// logged, and the callers are told.
		l.f.Truncate(start)
		l.size, l.seq, l.prev = start, startSeq, startPrev
		werr := fmt.Errorf("%w: %v", ErrUnavailable, err)
		l.failed.Store(&werr)
		if l.o.OnFailure != nil {
			l.o.OnFailure(werr)
		}
		for _, p := range batch {
			if p.done != nil {
				p.done <- werr
			}
		}
		return
	}
	l.failed.Store(nil)
	l.count.Add(int64(len(written)))
	for _, p := range batch {
		if p.done != nil {
			p.done <- nil
		}
	}
	if l.o.OnRecord != nil {
		for _, r := range written {
			l.o.OnRecord(r)
		}
	}
	if l.size > l.o.MaxSize {
		if err := l.rotate(); err != nil && l.o.OnFailure != nil {
			l.o.OnFailure(fmt.Errorf("rotate audit log: %w", err))
		}
	}
}

func (l *Log) flush(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return err
	}
	if l.o.Sync == "always" {
		if err := l.f.Sync(); err != nil {
			return err
		}
		return l.saveHead()
	}
	l.dirty = true
	return nil
}

// encode assigns seq, prev and time, and renders the line.
func (l *Log) encode(rec Record) ([]byte, string, error) {
	seq := l.seq + 1
	rec["seq"] = seq
	rec["prev"] = l.prev
	if _, ok := rec["time"]; !ok {
		rec["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	delete(rec, "hash")
	canon, err := json.Marshal(map[string]any(rec))
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(canon)
	hash := hex.EncodeToString(sum[:])
	rec["hash"] = hash
	line := make([]byte, 0, len(canon)+80)
	line = append(line, `{"hash":"`...)
	line = append(line, hash...)
	line = append(line, '"')
	if len(canon) > 2 {
		line = append(line, ',')
	}
	line = append(line, canon[1:]...)
	line = append(line, '\n')
	l.seq, l.prev = seq, hash
	return line, hash, nil
}

func (l *Log) saveHead() error {
	if l.o.HeadPath == "" {
		return nil
	}
	b, _ := json.Marshal(Head{Seq: l.seq, Hash: l.prev, File: l.o.Path})
	tmp := l.o.HeadPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.o.HeadPath)
}

// rotate shifts audit.jsonl -> .1 -> .2 ..., dropping the oldest.
func (l *Log) rotate() error {
	if err := l.f.Sync(); err != nil {
		return err
	}
	l.dirty = false
	l.saveHead()
	l.f.Close()
	os.Remove(fmt.Sprintf("%s.%d", l.o.Path, l.o.Keep))
	for i := l.o.Keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", l.o.Path, i), fmt.Sprintf("%s.%d", l.o.Path, i+1))
	}
	if err := os.Rename(l.o.Path, l.o.Path+".1"); err != nil {
		return err
	}
	return l.openFile()
}

// Files lists the log's files oldest first: path.N ... path.1, path.
func Files(path string) []string {
	var rotated []int
	matches, _ := filepath.Glob(path + ".*")
	for _, m := range matches {
		if n, err := strconv.Atoi(m[len(path)+1:]); err == nil && n > 0 {
			rotated = append(rotated, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(rotated)))
	var out []string
	for _, n := range rotated {
		out = append(out, fmt.Sprintf("%s.%d", path, n))
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// ReadHead reads the chain head saved in the state dir.
func ReadHead(path string) (Head, error) {
	var h Head
	b, err := os.ReadFile(path)
	if err != nil {
		return h, err
	}
	return h, json.Unmarshal(b, &h)
}

func lastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var last []byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			last = append(last[:0], sc.Bytes()...)
		}
	}
	return last, sc.Err()
}
