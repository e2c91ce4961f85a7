package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Record is one audit event: type-specific fields plus the common ones
// (session, agent, agent_instance, user, server) set by the caller. Log
// sets time (when absent), seq, prev and hash, and bounds the values (see
// MaxString and MaxRecord); after a write the record holds what was
// written. A record belongs to the Log once appended.
type Record map[string]any

// SyncMode says when the log fsyncs.
type SyncMode string

// Sync modes ([daemon] audit_sync).
const (
	SyncAlways SyncMode = "always" // every group commit, before Append returns
	SyncBatch  SyncMode = "batch"  // on an interval
)

// DropReason says why a record was not written.
type DropReason string

// Drop reasons, reported to Options.OnDrop.
const (
	DropQueueFull    DropReason = "queue_full"    // AppendAsync found the queue full
	DropWriteFailed  DropReason = "write_failed"  // the write, fsync or head update failed
	DropEncodeFailed DropReason = "encode_failed" // a value cannot be encoded as JSON
	DropClosed       DropReason = "closed"        // appended after Close
)

// Options configure a Log.
type Options struct {
	Path     string        // the current file, e.g. /var/log/mcpcage/audit.jsonl
	HeadPath string        // chain head, in the state dir
	MaxSize  int64         // rotate when the file exceeds this (0: 64 MiB)
	Keep     int           // rotated files kept (0: 10)
	Sync     SyncMode      // SyncAlways (default) or SyncBatch
	Interval time.Duration // fsync interval in batch mode (0: 1s)
	OnRecord func(Entry)   // called after each durable write (metrics, followers, journal)
	// OnLine is called after each write with every line it wrote (segment
	// headers included), in order, each without its newline; it must copy
	// what it keeps (the buffer is reused).
	OnLine    func(line []byte)
	OnFailure func(error)         // called when writing (ErrUnavailable) or rotating (ErrRotate) fails (metrics, logs)
	OnRecover func()              // called when a write succeeds after a write failed (logs)
	OnSync    func(time.Duration) // called after each fdatasync with its duration (metrics)
	// OnTrim is called, on the writer's goroutine, after a rotation
	// removed segments past Keep, with how many it removed (metrics,
	// logs: a log rotated much sooner than usual has lost history to a
	// flood).
	OnTrim func(removed int)
	// OnDrop is called, on the writer's goroutine or AppendAsync's caller,
	// for every record that was not written, whether or not a caller was
	// told (Append returns the error too).
	OnDrop func(rec Record, reason DropReason, err error)
}

// Queue and batch bounds.
const (
	queueLen        = 4096
	maxBatch        = MaxRecord // a group commit stops collecting past this many bytes
	maxBatchRecords = 1024
)

// maxKeptBuf bounds the buffer of encoded lines a Log keeps between
// commits (a batch of many records, or one huge one, is not kept).
const maxKeptBuf = 256 << 10

// Log is an open audit log.
type Log struct {
	o      Options
	syncQ  chan *pending // Append: preferred, so a flood of observations cannot delay a call
	asyncQ chan *pending // AppendAsync, Enqueue
	// essential: the Essential records that found the queue full, written
	// first by the next commit (the full queue wakes the writer).
	essMu     sync.Mutex
	essential []*pending
	// waitingBy counts each session's records queued in asyncQ while it
	// was contested (sessionShare).
	waitMu    sync.Mutex
	waitingBy map[string]int
	done      chan struct{}
	wg        sync.WaitGroup
	mu        sync.RWMutex // held shared while queueing, exclusively by Close
	closed    bool

	// wmu guards what follows: held by the writer goroutine for each
	// group commit, and in batch mode by AppendDurable's caller, which
	// commits its record itself (see AppendDurable).
	wmu        sync.Mutex
	f          *os.File // nil after a failed rotation: reopened by the next write
	headF      *os.File // the head file, rewritten in place (see saveHead)
	size       int64
	seq        uint64
	prev       string
	prevV      any      // prev boxed as a record value, when it was the last hash encoded
	segment    uint64   // the current file's segment (0: a file from before segments)
	oldest     uint64   // the oldest segment kept
	needHeader bool     // the current file is empty: the next write opens it with a header
	marks      []Record // what resume found (GapType, RecoveredType), written by Open
	lock       *os.File // held while the log is open (lockLog)
	// restoreFailed: the current file was removed and could not be put
	// back (told once; see restoreRemoved).
	restoreFailed bool
	torn          bool // a failed write could not be cut back: refuse writes until it is
	dirty         bool
	wbuf          []byte // a commit's lines, kept for the next one (see maxKeptBuf)

	failed atomic.Pointer[error]
	// failing: a write failed and none has succeeded since.
	failing atomic.Bool
	count   atomic.Int64
	syncs   atomic.Int64
}

// Priority says what becomes of an asynchronous record (Enqueue) when
// the writer falls behind and its queue fills.
type Priority uint8

// The priorities of asynchronous records.
const (
	// Observation: what a server did that broke no rule (a kernel event):
	// dropped, and OnDrop called, once the queue is three quarters full,
	// so that a flood of them (one session's, faster than the writer)
	// leaves room for the rest.
	Observation Priority = iota + 1
	// Decision: a deny, a refusal, a prompt and its answer, a tool's
	// result: dropped only when the queue is full.
	Decision
	// Essential: the record of what ended a session (its first deny_paths
	// hit, its flood), which a flood must not be able to hide: never
	// dropped for a full queue, but kept beside it, in memory, until
	// written (bounded by maxEssential; its callers make one a session).
	Essential
)

// observationRoom is how many queued records an Observation finds room
// beside; maxEssential bounds the Essential records waiting beside a
// full queue. Once the queue holds contestedQueue records, a session (a
// record's "session") may have at most its share (sessionShare, less
// when many sessions have records waiting: admit) more of its
// Observations and Decisions waiting in it: one server's flood of its own
// denials or refusals (as many as it likes) leaves the rest of the queue
// to the others, while a burst on a quiet daemon takes what room there
// is. Only the records queued while it is contested are counted: below
// that, a record costs no look-up.
const (
	observationRoom = queueLen * 3 / 4
	maxEssential    = 65536
	contestedQueue  = queueLen / 2
	sessionShare    = queueLen / 16
)

type pending struct {
	e         Entry
	done      chan error // nil: asynchronous
	session   string     // counted in waitingBy until taken from the queue (queued while contested)
	essential bool       // kept for the next commit when its write fails (fail)
	// given is a kept record as it was given (essential, asynchronous):
	// each try encodes a copy of it (see add).
	given Entry
}

// asGiven is p's record as its caller gave it (not a try's copy, with
// the log's fields of a write that failed).
func (p *pending) asGiven() Entry {
	if p.given != nil {
		return p.given
	}
	return p.e
}

// ErrUnavailable wraps every write failure.
var ErrUnavailable = errors.New("audit log unavailable")

// ErrRemoved is told to OnFailure when the current file was removed
// while in use and could not be put back (see restoreRemoved): records
// are still written, into the removed file, until the next rotation.
var ErrRemoved = errors.New("audit log file removed while in use")

// ErrRotate wraps a failed rotation, which OnFailure is told of: records
// are still written, to the current file, which grows past MaxSize until
// a rotation works (tried again after each commit).
var ErrRotate = errors.New("audit log rotation failed")

// ErrTrim wraps a rotation that worked but could not remove a segment
// past Keep, which OnFailure is told of: the next rotation tries again,
// and while the segment cannot be removed (made immutable, say) it blocks
// the shift of the others, so rotations fail (ErrRotate, naming it)
// until it is removed by hand. No history is lost meanwhile.
var ErrTrim = errors.New("audit log segment past its keep count not removed")

// Open opens (creating) the log and resumes its chain.
func Open(o Options) (*Log, error) {
	if o.MaxSize <= 0 {
		o.MaxSize = 64 << 20
	}
	if o.Keep <= 0 {
		o.Keep = 10
	}
	if o.Sync == "" {
		o.Sync = SyncAlways
	}
	if o.Sync != SyncAlways && o.Sync != SyncBatch {
		return nil, fmt.Errorf("audit sync mode %q: want %q or %q", o.Sync, SyncAlways, SyncBatch)
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log directory: %w", err)
	}
	l := &Log{o: o, syncQ: make(chan *pending, queueLen), asyncQ: make(chan *pending, queueLen), waitingBy: map[string]int{}, done: make(chan struct{})}
	// One writer: a second daemon on the same log would fork the chain,
	// and its start (a torn line cut, a gap recorded) would act on a line
	// the first is writing (found by a review helper).
	lock, err := lockLog(o.Path)
	if err != nil {
		return nil, err
	}
	l.lock = lock
	if err := l.resume(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	if err := l.openFile(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.writer()
	for _, m := range l.marks {
		if err := l.Append(m); err != nil {
			_ = l.Close() // the error above says what failed
			return nil, fmt.Errorf("record what was found when the audit log was opened (%s): %w", m["type"], err)
		}
	}
	l.marks = nil
	// The head at once, for what the files hold (and the marks, synced
	// first): a daemon killed before its first sync interval left no
	// head, and verification then failed as if it had been removed.
	l.wmu.Lock()
	if l.seq == 0 {
		_ = l.saveHead() // nothing to make durable first; a failure is told by the next save
	} else {
		l.dirty = true
		l.syncIfDirty()
	}
	l.wmu.Unlock()
	return l, nil
}

// Append writes rec and returns once it is durable (per the sync mode).
func (l *Log) Append(rec Entry) error { return <-l.AppendDurable(rec) }

// AppendDurable queues rec and returns at once; the channel yields nil
// once rec is durable per the sync mode (in "always" mode, fsynced), or
// the error that kept it from the log. Records appended while others wait
// share their group commit: one write and one fdatasync for all of them.
// In "batch" mode, where durable means written, the caller writes rec
// (with whatever else is queued) itself, so the channel has yielded when
// AppendDurable returns: no hand-off to the writer goroutine and back.
func (l *Log) AppendDurable(rec Entry) <-chan error { return l.appendDurable(rec, false) }

// AppendDurableNow is AppendDurable for a caller with nothing else to do
// until rec is durable (a session with no other call in flight): when no
// commit is under way it commits on the caller's goroutine in "always"
// mode too, fdatasync included, which spares the two goroutine hand-offs
// of the queue; otherwise it queues like AppendDurable, so it never
// waits behind another commit's sync.
func (l *Log) AppendDurableNow(rec Entry) <-chan error { return l.appendDurable(rec, true) }

func (l *Log) appendDurable(rec Entry, now bool) <-chan error {
	stamp(rec)
	p := &pending{e: rec, done: make(chan error, 1)}
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case l.closed:
		err := fmt.Errorf("%w: closed", ErrUnavailable)
		l.drop(rec, DropClosed, err)
		p.done <- err
	case l.o.Sync == SyncBatch:
		l.wmu.Lock() // a commit under way is a write, not a sync: wait for it
		l.commit(true, p)
		l.wmu.Unlock()
	case now && l.wmu.TryLock():
		l.commit(true, p)
		l.wmu.Unlock()
	default:
		l.syncQ <- p
	}
	return p.done
}

// Deferred is records to be appended durably together, later: a caller
// that decides several requests in a row adds each one's record, then
// commits them with one CommitDurable (one write) before it forwards
// any of them. The zero value is empty; it is not safe for concurrent
// use.
type Deferred struct{ ps []*pending }

// Add stamps rec and keeps it for CommitDurable; the channel yields as
// AppendDurable's would, once a CommitDurable has written it.
func (d *Deferred) Add(rec Entry) <-chan error {
	stamp(rec)
	p := &pending{e: rec, done: make(chan error, 1)}
	d.ps = append(d.ps, p)
	return p.done
}

// Len is the number of records kept.
func (d *Deferred) Len() int { return len(d.ps) }

// CommitDurable appends d's records, in order, as AppendDurable would,
// and empties d: in "batch" mode written together with one write on the
// caller's goroutine (their channels have yielded when it returns); in
// "always" mode queued for the writer's next group commit.
func (l *Log) CommitDurable(d *Deferred) {
	ps := d.ps
	d.ps = nil
	if len(ps) == 0 {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case l.closed:
		err := fmt.Errorf("%w: closed", ErrUnavailable)
		for _, p := range ps {
			l.drop(p.e, DropClosed, err)
			p.done <- err
		}
	case l.o.Sync == SyncBatch:
		l.wmu.Lock()
		l.commit(true, ps...)
		l.wmu.Unlock()
	default:
		for _, p := range ps {
			l.syncQ <- p
		}
	}
}

// Sync is the log's sync mode.
func (l *Log) Sync() SyncMode { return l.o.Sync }

// AppendAsync is Enqueue of a Decision.
func (l *Log) AppendAsync(rec Entry) bool { return l.Enqueue(rec, Decision) }

// Enqueue queues rec without waiting. It is written with the next group
// commit but never causes an fsync of its own: in "always" mode the next
// durable record's fsync, or the interval, makes it durable. It reports
// false, and OnDrop is called, when rec is dropped: the queue has no
// room for its priority (see Priority), or the log is closed; a later
// write failure reaches OnDrop too.
func (l *Log) Enqueue(rec Entry, prio Priority) bool {
	stamp(rec)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.drop(rec, DropClosed, fmt.Errorf("%w: closed", ErrUnavailable))
		return false
	}
	if prio == Observation && len(l.asyncQ) >= observationRoom {
		l.drop(rec, DropQueueFull, fmt.Errorf("%w: queue full (%d records; observations are dropped beyond %d)", ErrUnavailable, len(l.asyncQ), observationRoom))
		return false
	}
	p := &pending{e: rec, essential: prio == Essential}
	if prio != Essential && len(l.asyncQ) >= contestedQueue {
		p.session = sessionOf(rec)
		if ok, share := l.admit(p.session, len(l.asyncQ)); !ok {
			l.drop(rec, DropQueueFull, fmt.Errorf("%w: queue busy (%d records; this session has %d waiting, its share)", ErrUnavailable, len(l.asyncQ), share))
			return false
		}
	}
	select {
	case l.asyncQ <- p:
		return true
	default:
	}
	l.taken(p)
	if prio == Essential {
		l.essMu.Lock()
		if len(l.essential) < maxEssential {
			l.essential = append(l.essential, p)
			l.essMu.Unlock()
			return true
		}
		l.essMu.Unlock()
	}
	l.drop(rec, DropQueueFull, fmt.Errorf("%w: queue full (%d records)", ErrUnavailable, queueLen))
	return false
}

// admit counts a record of session for the contested queue, unless the
// session has its share waiting, and returns the share. The share is an
// equal part of the room left among the sessions with records waiting
// and one more (a newcomer), at most sessionShare: however many sessions
// flood at once, each takes a part of what is left, never all of it:
// a newcomer's first record finds a place while k+2 are free (k: the
// sessions with records waiting), which the flooders' shares leave free
// until about 80 of them flood at once.
func (l *Log) admit(session string, queued int) (bool, int) {
	if session == "" {
		return true, 0
	}
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	n := l.waitingBy[session]
	others := len(l.waitingBy)
	if n > 0 {
		others--
	}
	share := min(sessionShare, (queueLen-queued)/(others+2))
	if n >= share {
		return false, share
	}
	l.waitingBy[session] = n + 1
	return true, share
}

// taken uncounts p, taken from the queue (or never queued).
func (l *Log) taken(p *pending) {
	if p.session == "" {
		return
	}
	l.waitMu.Lock()
	if n := l.waitingBy[p.session] - 1; n > 0 {
		l.waitingBy[p.session] = n
	} else {
		delete(l.waitingBy, p.session)
	}
	l.waitMu.Unlock()
	p.session = ""
}

// takeEssential moves the Essential records waiting beside the queue
// into the batch, oldest first, while it has room (maxBatch bytes,
// maxBatchRecords records): the rest go first in the next commit.
func (l *Log) takeEssential(b *batch) {
	for len(b.buf) < maxBatch && len(b.entries) < maxBatchRecords {
		l.essMu.Lock()
		if len(l.essential) == 0 {
			l.essential = nil
			l.essMu.Unlock()
			return
		}
		p := l.essential[0]
		l.essential[0] = nil
		l.essential = l.essential[1:]
		l.essMu.Unlock()
		l.add(b, p)
	}
}

// essentialWaiting reports whether Essential records wait beside the queue.
func (l *Log) essentialWaiting() bool {
	l.essMu.Lock()
	defer l.essMu.Unlock()
	return len(l.essential) > 0
}

// AppendNow is AppendAsync for a record on a path someone waits on (a
// tool's result on its way to the client): when no commit is under way,
// rec is written at once on the caller's goroutine, a write and never an
// fsync (in "always" mode the next durable commit or the interval syncs
// it, as for AppendAsync). That spares waking the writer goroutine, which
// on a busy two-core machine delays the caller by about as much as the
// rest of its work. When a commit is under way, rec is queued like
// AppendAsync.
func (l *Log) AppendNow(rec Entry) bool { return l.AppendNowAll(rec) }

// AppendNowAll is AppendNow for several records (the results the client
// got in one write): one write for all of them. It reports false when
// one of them was dropped (see AppendAsync).
func (l *Log) AppendNowAll(recs ...Entry) bool {
	l.mu.RLock()
	if !l.closed && l.wmu.TryLock() {
		ps := make([]*pending, len(recs))
		for i, rec := range recs {
			stamp(rec)
			ps[i] = &pending{e: rec}
		}
		l.commit(false, ps...)
		l.wmu.Unlock()
		l.mu.RUnlock()
		return true
	}
	l.mu.RUnlock()
	ok := true
	for _, rec := range recs {
		ok = l.AppendAsync(rec) && ok
	}
	return ok
}

// stamp sets the record's time when the event is reported, not when the
// writer gets to it.
func stamp(e Entry) {
	switch rec := e.(type) {
	case Record:
		if _, ok := rec["time"]; !ok {
			rec["time"] = now()
		}
	case *Fields:
		if _, ok := rec.Get("time"); !ok {
			rec.Add("time", now())
		}
	}
}

// now is a record's time.
func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// sessionOf is e's "session" field ("" when it has none).
func sessionOf(e Entry) string {
	var v any
	switch rec := e.(type) {
	case Record:
		v = rec["session"]
	case *Fields:
		v, _ = rec.Get("session")
	}
	s, _ := v.(string)
	return s
}

func (l *Log) drop(e Entry, reason DropReason, err error) {
	if l.o.OnDrop != nil {
		l.o.OnDrop(e.Record(), reason, err)
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

// Syncs is the number of fdatasyncs since Open.
func (l *Log) Syncs() int64 { return l.syncs.Load() }

// Close writes what is queued and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	l.wg.Wait()
	var herr error
	if l.headF != nil {
		herr = l.headF.Close()
	}
	defer func() {
		if l.lock != nil {
			_ = l.lock.Close() // the lock goes with it
		}
	}()
	if l.f == nil {
		return herr
	}
	return errors.Join(l.f.Close(), herr)
}

func (l *Log) writer() {
	defer l.wg.Done()
	// Both modes sync on the interval what was written without a sync
	// (every record in batch mode; asynchronous ones in always mode).
	t := time.NewTicker(l.o.Interval)
	defer t.Stop()
	tick := t.C
	for {
		stallWriter()
		var first *pending
		select {
		case first = <-l.syncQ:
		case first = <-l.asyncQ:
		case <-tick:
			l.wmu.Lock()
			if rec := l.restoreRemoved(); rec != nil {
				stamp(rec)
				l.commit(true, &pending{e: rec, done: make(chan error, 1)})
			}
			if l.essentialWaiting() {
				l.commit(true) // kept after a failed write: tried again
			}
			l.syncIfDirty()
			l.wmu.Unlock()
			continue
		case <-l.done:
			// Nothing is queued after done: write the rest, then stop.
			l.wmu.Lock()
			for len(l.syncQ)+len(l.asyncQ) > 0 || l.essentialWaiting() {
				if !l.commit(true) {
					// A failing log keeps Essential records for the next
					// commit; closing, there is none.
					l.dropEssential(fmt.Errorf("%w: closed while writes fail", ErrUnavailable))
				}
			}
			l.syncIfDirty()
			l.wmu.Unlock()
			return
		}
		l.wmu.Lock()
		l.commit(true, first)
		l.wmu.Unlock()
	}
}

// lockLog takes path's writer lock (an exclusive flock of path.lock,
// released when the process ends however it ends).
func lockLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("audit log %s is being written by another process (another mcpcaged?): one daemon per audit log", path)
		}
		return nil, fmt.Errorf("audit log lock: %w", err)
	}
	return f, nil
}

// restoreRemoved puts the current file back at its path when it was
// removed while the log wrote to it (rm, or a log tool that does not know
// this log rotates itself): the writes went on into the removed file,
// which no reader saw and the next rotation dropped (found by a red-team
// helper). Its content is copied from the open file to the path, when the
// path is free, and the log writes on there; the record returned says so
// (nil when nothing was done). Checked once per interval, under wmu.
func (l *Log) restoreRemoved() Record {
	if l.f == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(l.f.Fd()), &st); err != nil || st.Nlink > 0 {
		return nil
	}
	tmp := l.o.Path + ".restoring"
	var n int64
	_, err := os.Lstat(l.o.Path)
	switch {
	case err == nil:
		err = errors.New("another file has its name") // no copy made each interval for nothing
	case errors.Is(err, fs.ErrNotExist):
		_ = os.Remove(tmp) // left by a copy a crash cut short
		n, err = copyOpenFile(l.f, tmp)
	}
	if err == nil {
		err = renameNoReplace(tmp, l.o.Path)
	}
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(l.o.Path, os.O_WRONLY|os.O_APPEND, 0)
	}
	if err != nil {
		_ = os.Remove(tmp)
		if !l.restoreFailed && l.o.OnFailure != nil {
			l.o.OnFailure(fmt.Errorf("%w: the current file %s was removed while in use and could not be put back (%v): records go on into the removed file until the next rotation", ErrRemoved, l.o.Path, err))
		}
		l.restoreFailed = true
		return nil
	}
	_ = l.f.Close() // the removed file: its content is at the path now
	l.f, l.restoreFailed = f, false
	return Record{"type": RecoveredType, "file": l.o.Path, "restored_bytes": n,
		"reason": "the current file was removed while mcpcaged wrote to it; its records were copied back from the open file, and the log goes on there"}
}

// copyOpenFile copies f's whole content (f may be write-only and
// removed: it is read through its /proc/self/fd link) into a new file at
// path, synced, and returns its size.
func copyOpenFile(f *os.File, path string) (int64, error) {
	in, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return 0, err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// batch is one group commit: encoded lines and who waits for them.
type batch struct {
	buf     []byte
	entries []*pending
	lines   [][2]int // where each line written is in buf (for OnLine)
	durable bool     // a caller waits for one of them to be durable
	// The chain as it was before the batch, restored if it fails.
	size       int64
	seq        uint64
	prev       string
	needHeader bool
}

// commit collects a batch, firsts first, then the queued calls preferred,
// up to maxBatch bytes, and writes it with one write and (in always mode)
// one fsync. takeSync false leaves the synchronous queue to the writer
// (AppendNow: no fsync on its caller's path).
func (l *Log) commit(takeSync bool, firsts ...*pending) (written bool) {
	var openErr error
	if l.f == nil {
		openErr = l.openFile()
	}
	b := &batch{buf: l.wbuf[:0], size: l.size, seq: l.seq, prev: l.prev, needHeader: l.needHeader}
	defer func() {
		if cap(b.buf) <= maxKeptBuf {
			l.wbuf = b.buf // the next commit's, once this one is written
		}
	}()
	if l.needHeader {
		start := len(b.buf)
		var err error
		if b.buf, err = l.encodeTo(b.buf, l.header()); err == nil {
			l.needHeader = false
			b.lines = append(b.lines, [2]int{start, len(b.buf)})
		}
	}
	l.takeEssential(b)
	for _, p := range firsts {
		l.add(b, p)
	}
	syncQ := l.syncQ
	if !takeSync {
		syncQ = nil // never ready
	}
	for len(b.buf) < maxBatch && len(b.entries) < maxBatchRecords {
		select {
		case p := <-syncQ:
			l.add(b, p)
			continue
		default:
		}
		select {
		case p := <-l.asyncQ:
			l.add(b, p)
			continue
		default:
		}
		break
	}
	if len(b.entries) == 0 {
		l.size, l.seq, l.prev, l.needHeader = b.size, b.seq, b.prev, b.needHeader
		return true
	}
	if openErr != nil {
		l.fail(b, openErr)
		return false
	}
	if err := l.flush(b.buf, b.durable); err != nil {
		l.fail(b, err)
		return false
	}
	l.failed.Store(nil)
	if l.failing.Swap(false) && l.o.OnRecover != nil {
		l.o.OnRecover()
	}
	l.count.Add(int64(len(b.entries)))
	for _, p := range b.entries {
		if p.done != nil {
			p.done <- nil
		}
	}
	if l.o.OnRecord != nil {
		for _, p := range b.entries {
			l.o.OnRecord(p.e)
		}
	}
	if l.o.OnLine != nil {
		for _, r := range b.lines {
			l.o.OnLine(bytes.TrimSuffix(b.buf[r[0]:r[1]], []byte{'\n'}))
		}
	}
	if l.size > l.o.MaxSize {
		if err := l.rotate(); err != nil && l.o.OnFailure != nil {
			// Records are still written, to the current file: the log
			// is not failing (no OnRecover follows), the rotation is
			// tried again after the next commit.
			if !errors.Is(err, ErrTrim) {
				err = fmt.Errorf("%w: %w", ErrRotate, err)
			}
			l.o.OnFailure(err)
		}
	}
	return true
}

// add encodes p's record into the batch (an unencodable record is
// dropped and its caller told).
func (l *Log) add(b *batch, p *pending) {
	l.taken(p)
	if p.essential && p.done == nil {
		// Encoding bounds a record in place. One that a failed write
		// keeps for the next commit (fail) is encoded each time from
		// the values it was given: bounding its bounded forms again (a
		// long key's, or a long value's in a string map, themselves
		// over MaxString) would record another digest than the
		// original's.
		if p.given == nil {
			p.given = p.e
		}
		p.e = cloneEntry(p.given)
	}
	start := len(b.buf)
	var err error
	if b.buf, err = l.encodeTo(b.buf, p.e); err != nil {
		err = fmt.Errorf("%w: encode: %w", ErrUnavailable, err)
		l.drop(p.e, DropEncodeFailed, err)
		if p.done != nil {
			p.done <- err
		}
		return
	}
	b.entries = append(b.entries, p)
	b.lines = append(b.lines, [2]int{start, len(b.buf)})
	b.durable = b.durable || p.done != nil
}

// fail cuts the partial write back to the last good record and rewinds
// the chain: the batch's records were not logged, and their callers are
// told. If the cut fails, the log refuses writes until a later cut works.
func (l *Log) fail(b *batch, err error) {
	if l.f != nil && l.size != b.size {
		if terr := l.f.Truncate(b.size); terr != nil {
			l.torn = true
			err = fmt.Errorf("%w; the partial record could not be cut off (%v): writes are refused until it is", err, terr)
		} else {
			l.torn = false
		}
	}
	l.size, l.seq, l.prev, l.needHeader = b.size, b.seq, b.prev, b.needHeader
	werr := fmt.Errorf("%w: %w", ErrUnavailable, err)
	l.failure(werr)
	var kept []*pending
	for _, p := range b.entries {
		if p.essential && p.done == nil {
			// The record of what ended a session: kept, first in the
			// next commit (as when the queue was full), not lost to a
			// disk that is full for a moment.
			kept = append(kept, p)
			continue
		}
		l.drop(p.e, DropWriteFailed, werr)
		if p.done != nil {
			p.done <- werr
		}
	}
	if len(kept) > 0 {
		l.essMu.Lock()
		n := min(len(kept), max(0, maxEssential-len(l.essential))) // within the bound
		l.essential = append(slices.Clip(kept[:n]), l.essential...)
		l.essMu.Unlock()
		for _, p := range kept[n:] {
			l.drop(p.asGiven(), DropWriteFailed, werr)
		}
	}
}

// dropEssential drops the Essential records still waiting (Close, with
// the log failing: nothing would take them).
func (l *Log) dropEssential(err error) {
	l.essMu.Lock()
	left := l.essential
	l.essential = nil
	l.essMu.Unlock()
	for _, p := range left {
		l.drop(p.asGiven(), DropWriteFailed, err)
	}
}

// failure marks the log failed (calls fail closed) and tells OnFailure;
// the next write that succeeds tells OnRecover.
func (l *Log) failure(err error) {
	l.failed.Store(&err)
	l.failing.Store(true)
	if l.o.OnFailure != nil {
		l.o.OnFailure(err)
	}
}

func (l *Log) syncIfDirty() {
	if !l.dirty || l.f == nil {
		return
	}
	if err := l.datasync(); err != nil {
		l.failure(fmt.Errorf("%w: fdatasync: %w", ErrUnavailable, err))
		return
	}
	l.dirty = false
	if err := l.saveHead(); err != nil {
		l.failure(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
}

// flush writes b at the end of the file and, in always mode when someone
// waits for it, makes it durable.
func (l *Log) flush(b []byte, durable bool) error {
	if l.torn {
		if err := l.f.Truncate(l.size); err != nil {
			return fmt.Errorf("cut a partial record: %w", err)
		}
		l.torn = false
	}
	if err := failWrite(); err != nil {
		return err
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return err
	}
	if l.o.Sync == SyncAlways && durable {
		if err := l.datasync(); err != nil {
			return err
		}
		l.dirty = false
		return l.saveHead()
	}
	l.dirty = true
	return nil
}

// datasync makes the file's data durable without its timestamps: the
// size, which appends change, is synced too (fdatasync keeps what reading
// the data back needs).
func (l *Log) datasync() error {
	l.syncs.Add(1)
	if l.o.OnSync != nil {
		defer func(start time.Time) { l.o.OnSync(time.Since(start)) }(time.Now())
	}
	raw, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// encodeTo assigns seq and prev, bounds e and appends its line to dst,
// advancing the chain; e is left holding what was written. On error dst
// is returned as it was.
func (l *Log) encodeTo(dst []byte, e Entry) ([]byte, error) {
	stamp(e)
	seq := l.seq + 1
	prev := any(l.prev)
	if h, ok := l.prevV.(string); ok && h == l.prev {
		prev = l.prevV // the last record's boxed hash: no allocation
	}
	// The line is {"hash":"<hex>", then the canonical record after its
	// brace: the record is rendered where its brace lands on that comma,
	// hashed there, and the head written in front of it.
	start := len(dst)
	const head = len(hashPrefix) + sha256.Size*2 + len(`"`)
	dst = append(dst, make([]byte, head)...)
	rec, _ := e.(Record)
	f, _ := e.(*Fields)
	if f != nil {
		f.remove("hash")
		f.Add("seq", seq) // a retried record's earlier ones give way
		f.Add("prev", prev)
		rendered := false
		var err error
		if dst, rendered, err = appendFields(dst, f); err != nil {
			return dst[:start], err
		}
		if !rendered {
			rec = f.Record() // bounded and shrunk as a map, then copied back
		}
	}
	if rec != nil {
		rec["seq"], rec["prev"] = seq, prev
		delete(rec, "hash")
		var err error
		if dst, err = appendRecord(dst, rec); err != nil {
			return dst[:start], err
		}
	}
	canon := dst[start+head:]
	sum := sha256.Sum256(canon)
	copy(dst[start:], hashPrefix)
	hex.Encode(dst[start+len(hashPrefix):], sum[:])
	dst[start+head-1] = '"'
	hash := string(dst[start+len(hashPrefix) : start+head-1])
	hv := any(hash)
	switch {
	case f != nil && rec != nil:
		rec["hash"] = hv
		f.list = f.list[:0]
		for k, v := range rec {
			f.Add(k, v)
		}
	case f != nil:
		f.Add("hash", hv)
	default:
		rec["hash"] = hv
	}
	l.prevV = hv
	if len(canon) > 2 {
		canon[0] = ','
	} else { // {} (no field): the line is the hash alone
		canon[0], dst = '}', dst[:start+head+1]
	}
	dst = append(dst, '\n')
	l.seq, l.prev = seq, hash
	return dst, nil
}

// encode is encodeTo a new slice.
func (l *Log) encode(e Entry) ([]byte, error) { return l.encodeTo(nil, e) }
