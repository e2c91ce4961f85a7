package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/metrics"
)

// openAudit opens the audit log and wires it to metrics, followers and,
// when asked, the journal.
func (d *Daemon) openAudit() error {
	cfg := d.conf().Daemon
	journalOn := cfg.AuditJournal && journal.Enabled()
	if cfg.AuditJournal && !journalOn {
		d.log.Warn("audit_journal = true but no systemd journal is reachable: records go to the audit log only")
	}
	drops := &dropLog{log: d.log, metric: d.metrics.AuditRecordsDropped}
	failures := &failureLog{log: d.log, path: cfg.AuditLog, now: time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
	syncs := d.metrics.AuditSync
	trims := &trimLog{log: d.log, path: cfg.AuditLog, metric: d.metrics.AuditSegmentsRemoved, now: time.Now, start: audit.HistoryStart}
	// By record type: a bounded set of constants.
	perType := metrics.Children[string, prometheus.Counter]{Limit: 64}
	l, err := audit.Open(audit.Options{
		Path:     cfg.AuditLog,
		HeadPath: filepath.Join(cfg.StateDir, "audit.head"),
		MaxSize:  int64(cfg.AuditMaxSize),
		Keep:     cfg.AuditKeep,
		Sync:     audit.SyncMode(cfg.AuditSync),
		Interval: time.Duration(cfg.AuditSyncInterval),
		OnLine:   d.auditFollowers.publish,
		OnRecord: func(e audit.Entry) {
			t := e.Type()
			perType.Get(t, func() prometheus.Counter { return d.metrics.AuditRecords.WithLabelValues(t) }).Inc()
			if journalOn {
				if err := sendJournal(e.Record()); err != nil {
					d.log.Warn("copy audit record to the journal", "type", t, "err", err)
				}
			}
		},
		OnFailure: func(err error) {
			d.metrics.AuditWriteErrors.Inc()
			failures.failed(err)
		},
		OnRecover: failures.recovered,
		OnDrop:    drops.drop,
		OnSync:    func(d time.Duration) { syncs.Observe(d.Seconds()) },
		OnTrim:    trims.trimmed,
	})
	if err != nil {
		return fmt.Errorf("audit log %s: %w", cfg.AuditLog, err)
	}
	d.metrics.ReadAuditHistoryStart(func() float64 {
		if t, ok := audit.HistoryStart(cfg.AuditLog); ok {
			return float64(t.UnixNano()) / 1e9
		}
		return 0
	})
	d.audit = l
	return nil
}

// minHistory is the history a rotation is expected to keep: one that
// removes records younger than this is warned of (a flood, or audit_max_size
// and audit_keep too small for the host's traffic).
const minHistory = 24 * time.Hour

// trimLog counts the segments rotations remove and warns, at most once
// an hour, when what is left starts less than minHistory ago.
type trimLog struct {
	log     *slog.Logger
	path    string
	metric  prometheus.Counter
	now     func() time.Time
	start   func(path string) (time.Time, bool) // audit.HistoryStart
	mu      sync.Mutex
	warned  time.Time
	removed int // since the last warning
}

func (t *trimLog) trimmed(removed int) {
	t.metric.Add(float64(removed))
	start, ok := t.start(t.path)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removed += removed
	if !ok || now.Sub(start) >= minHistory || now.Sub(t.warned) < time.Hour {
		return
	}
	t.log.Warn("the audit log's rotation removed records less than a day old: it now holds history from the time shown on; raise audit_max_size or audit_keep, and see what filled it (mcpcage audit --since 1h)",
		"history_start", start.UTC().Format(time.RFC3339), "segments_removed", t.removed, "audit_log", t.path)
	t.warned, t.removed = now, 0
}

// dropLog counts every audit record that was not written and logs the
// drops, at most one line a second per reason (a full queue drops in
// floods), with the number left unlogged since.
type dropLog struct {
	log    *slog.Logger
	metric *prometheus.CounterVec

	mu     sync.Mutex
	last   map[audit.DropReason]time.Time
	unseen map[audit.DropReason]int
}

func (dl *dropLog) drop(r audit.Record, reason audit.DropReason, err error) {
	dl.metric.WithLabelValues(string(reason)).Inc()
	dl.mu.Lock()
	now := time.Now()
	if dl.last == nil {
		dl.last, dl.unseen = map[audit.DropReason]time.Time{}, map[audit.DropReason]int{}
	}
	if now.Sub(dl.last[reason]) < time.Second {
		dl.unseen[reason]++
		dl.mu.Unlock()
		return
	}
	unlogged := dl.unseen[reason]
	dl.last[reason], dl.unseen[reason] = now, 0
	dl.mu.Unlock()
	attr := func(k string) string { // the record may not be bounded yet
		v, _ := r[k].(string)
		if len(v) > 256 {
			v = strings.ToValidUTF8(v[:256], "") + "…"
		}
		return v
	}
	dl.log.Error("audit record dropped", "reason", string(reason), "type", attr("type"), "session", attr("session"),
		"agent", attr("agent"), "server", attr("server"), "err", err, "unlogged_drops", unlogged)
}

// failureLogEvery is the least time between two lines of a failureLog.
const failureLogEvery = time.Minute

// failureLog logs the audit log's failed writes and its recoveries
// without a line for each: a log that cannot write (a full disk) is tried
// again at every commit and every audit_sync_interval, and each failure
// is counted (mcpcage_audit_write_errors_total) but not each logged. A
// spell of failures is logged when it starts, then once a minute while it
// lasts (with how many failed since the last line), and when a write
// succeeds again. Spells that start and end within a minute of the last
// line (a disk that fills and frees again and again) are counted, and a
// summary line says how many once the minute is over: at most two lines
// a minute, and no failure goes unsaid. A failed rotation (the log still
// writes, to a file growing past audit_max_size) has its own line, once
// a minute while it keeps failing.
type failureLog struct {
	log   *slog.Logger
	path  string
	now   func() time.Time
	after func(time.Duration, func()) // time.AfterFunc; the tests' clock

	mu            sync.Mutex
	failing       bool      // failed, and no write has succeeded since
	spellLogged   bool      // this spell's failure has a line: its end gets one
	since         time.Time // the first failure of this spell
	spell         int       // failures of this spell
	lastErr       error     // the last failure's
	unlogged      int       // failures and recoveries since the last line
	summary       bool      // a summary line is due (unlogged > 0)
	last          time.Time // the last line
	rotations     int       // failed rotations since the last rotation line
	lastRotate    time.Time // the last rotation line
	rotateSummary bool      // a rotation summary is scheduled
}

func (fl *failureLog) failed(err error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := fl.now()
	if errors.Is(err, audit.ErrRemoved) {
		fl.log.Error("AUDIT LOG FILE REMOVED while mcpcaged writes to it, and another file now has its name: records go on into the removed file (readable at /proc/PID/fd) until the next rotation; move the new file away so that the next check (within the sync interval) puts the log back", "err", err, "path", fl.path)
		return
	}
	if errors.Is(err, audit.ErrRotate) || errors.Is(err, audit.ErrTrim) {
		fl.rotations++
		if !fl.lastRotate.IsZero() && now.Sub(fl.lastRotate) < failureLogEvery {
			fl.armRotateSummary(now)
			return
		}
		msg := "AUDIT LOG ROTATION FAILED: records are still written, to the current file, which grows past audit_max_size until a rotation works (tried after every write)"
		if errors.Is(err, audit.ErrTrim) {
			msg = "audit log rotated, but a segment past audit_keep could not be removed: remove it by hand, later rotations fail while it is there (records are still written)"
		}
		fl.log.Error(msg, "err", err, "path", fl.path, "failed_rotations", fl.rotations)
		fl.lastRotate, fl.rotations = now, 0
		return
	}
	if !fl.failing {
		fl.failing, fl.spellLogged, fl.since, fl.spell = true, false, now, 0
	}
	fl.spell++
	fl.lastErr = err
	if !fl.last.IsZero() && now.Sub(fl.last) < failureLogEvery {
		fl.unlogged++
		fl.armSummary(now) // in case no later failure or write comes to say it
		return
	}
	fl.spellLine(now)
}

// spellLine logs the spell of failures going on, with what was counted
// since the last line, and makes it the last line (fl.mu held).
func (fl *failureLog) spellLine(now time.Time) {
	fl.log.Error("AUDIT LOG WRITE FAILED: tool calls are denied until it can be written again", "err", fl.lastErr, "path", fl.path,
		"failing_since", fl.since.UTC().Format(time.RFC3339), "failures", fl.spell, "unlogged_since_last_line", fl.unlogged)
	fl.last, fl.unlogged, fl.spellLogged = now, 0, true
}

func (fl *failureLog) recovered() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if !fl.failing {
		return
	}
	fl.failing = false
	now := fl.now()
	if !fl.spellLogged {
		// A spell too soon after the last line: said in a summary once
		// the minute is over.
		fl.unlogged++
		fl.armSummary(now)
		return
	}
	unlogged := fl.unlogged
	fl.last, fl.unlogged = now, 0
	fl.log.Warn("audit log written again: tool calls are decided again", "path", fl.path,
		"failed_for", now.Sub(fl.since).Round(time.Millisecond).String(), "failures", fl.spell, "unlogged_since_last_line", unlogged)
}

// armSummary schedules a summary for when the minute since the last line
// is over, unless one is scheduled already (fl.mu held).
func (fl *failureLog) armSummary(now time.Time) {
	if !fl.summary {
		fl.summary = true
		fl.after(fl.last.Add(failureLogEvery).Sub(now), fl.summarize)
	}
}

// summarize says what was counted and not logged since the last line,
// if no line has said it meanwhile; a line since then moves it to a
// minute after that line.
func (fl *failureLog) summarize() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.summary = false
	if fl.unlogged == 0 {
		return
	}
	now := fl.now()
	if now.Sub(fl.last) < failureLogEvery {
		fl.armSummary(now)
		return
	}
	if fl.failing {
		// A spell goes on: its line of the minute (and, if it started
		// too soon after the last line to have one, its first), so that
		// its end gets a line too.
		fl.spellLine(now)
		return
	}
	fl.log.Error("AUDIT LOG WRITES FAILED since the last line, each time for a moment: tool calls were denied meanwhile", "path", fl.path,
		"failing_now", false, "unlogged_since_last_line", fl.unlogged)
	fl.last, fl.unlogged = now, 0
}

// armRotateSummary is armSummary for failed rotations (fl.mu held).
func (fl *failureLog) armRotateSummary(now time.Time) {
	if fl.rotateSummary {
		return
	}
	fl.rotateSummary = true
	fl.after(fl.lastRotate.Add(failureLogEvery).Sub(now), func() {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.rotateSummary = false
		if fl.rotations == 0 {
			return
		}
		if now := fl.now(); now.Sub(fl.lastRotate) < failureLogEvery {
			fl.armRotateSummary(now)
			return
		}
		fl.log.Error("AUDIT LOG ROTATION FAILED since the last line (it may have worked since)", "path", fl.path, "failed_rotations", fl.rotations)
		fl.lastRotate, fl.rotations = fl.now(), 0
	})
}

// sendJournal copies a record to the journal with structured fields.
func sendJournal(r audit.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "mcpcaged-audit"}
	for k, v := range r {
		key := "MCPCAGE_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(k))
		switch x := v.(type) {
		case string:
			vars[key] = x
		default:
			b, _ := json.Marshal(x)
			vars[key] = string(b)
		}
	}
	t, _ := r["type"].(string)
	return journal.Send("mcpcage audit: "+t, journal.PriInfo, vars)
}

// followers fans the audit log's lines out to `mcpcage audit --follow`,
// exactly as written (segment headers too), so that a follower can check
// the chain as it goes; before, they were records encoded again (another
// key order, no headers), which no hash matched.
type followers struct {
	mu   sync.Mutex
	subs map[*follower]bool
}

// follower is one `audit --follow`: the lines for it, and how many it
// missed, reading slower than the log was written (told to it, see
// missedLine, before its next line).
type follower struct {
	lines  chan []byte
	missed atomic.Uint64
}

// followBuffer is how many lines a follower may be behind before it
// misses some.
const followBuffer = 4096

func (f *followers) add() *follower {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[*follower]bool{}
	}
	fl := &follower{lines: make(chan []byte, followBuffer)}
	f.subs[fl] = true
	return fl
}

func (f *followers) remove(fl *follower) {
	f.mu.Lock()
	delete(f.subs, fl)
	f.mu.Unlock()
}

// publish hands line (copied once, if anyone follows) to every follower.
func (f *followers) publish(line []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return
	}
	line = bytes.Clone(line)
	for fl := range f.subs {
		select {
		case fl.lines <- line:
		default:
			fl.missed.Add(1)
		}
	}
}

// missedLine is the line a follower gets before the next one it reads
// after missing n: not a record of the log (no hash), and never in it.
func missedLine(n uint64) []byte {
	return fmt.Appendf(nil, `{"type":%q,"missed":%d,"reason":"this follower read more slowly than the log was written; mcpcage audit (without --follow) reads them from the log"}`, api.RecordFollowMissed, n)
}

// streamWriteTimeout is how long a stream (an audit query, a trace)
// waits for its client to read a frame before it drops the client (a
// failpoint shortens it).
var streamWriteTimeout = 30 * time.Second

// streamSender returns how a stream of what (an audit query, a trace)
// sends a frame to its client: each within streamWriteTimeout, so a client
// that stops reading is dropped (and its slot, its open segment and
// buffers freed), not waited on for ever. c is nil in tests that write to
// a buffer.
func (d *Daemon) streamSender(c *net.UnixConn, fw *api.FrameWriter, peer Peer, what string) func([]byte) error {
	return func(b []byte) error {
		if c != nil {
			if err := c.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
				return err
			}
		}
		err := fw.Write(api.FrameStdout, b)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			d.log.Warn(what+" dropped: its client read nothing for the write timeout", "user", userName(peer.UID), "timeout", streamWriteTimeout)
		}
		return err
	}
}

// auditQuery streams the records matching req to the caller, then, with
// req.All ("follow"), new ones until the caller goes away. Users see their
// own records; root and the admin group see all.
func (d *Daemon) auditQuery(ctx context.Context, c *net.UnixConn, fw *api.FrameWriter, peer Peer, q *api.AuditQuery) {
	if q == nil {
		q = &api.AuditQuery{}
	}
	if !d.isAdmin(peer) {
		q.User = userName(peer.UID)
	}
	match := func(r map[string]any) bool {
		for k, want := range map[string]string{"agent": q.Agent, "user": q.User, "server": q.Server, "session": q.Session} {
			if want != "" && r[k] != want {
				return false
			}
		}
		if q.Call != "" && (r["call"] != q.Call || r["type"] != string(api.RecordToolCall)) {
			return false
		}
		if q.Run != "" && r["run"] != q.Run {
			return false
		}
		if q.Type != "" {
			t, _ := r["type"].(string)
			if t != q.Type && !strings.HasPrefix(t, q.Type+".") {
				return false
			}
		}
		if q.Since != "" || q.Until != "" {
			ts, _ := r["time"].(string)
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return false
			}
			if since, err := time.Parse(time.RFC3339Nano, q.Since); err == nil && t.Before(since) {
				return false
			}
			if until, err := time.Parse(time.RFC3339Nano, q.Until); err == nil && t.After(until) {
				return false
			}
		}
		return true
	}
	// Every query holds a slot while it streams (a history of the whole
	// log can take a while, and a client that stops reading holds an open
	// segment): one user cannot pile them up.
	release, err := d.auditing.take(peer.account())
	if err != nil {
		d.auditing.refused(d.log, "audit query refused", err, append([]any{"user", userName(peer.UID)}, peer.account().logAttrs()...)...)
		reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, d.log)
		return
	}
	defer release()
	send := d.streamSender(c, fw, peer, "audit query")
	var follow *follower
	if q.Follow {
		release, err := d.following.take(peer.account())
		if err != nil {
			d.following.refused(d.log, "audit follow refused", err, append([]any{"user", userName(peer.UID)}, peer.account().logAttrs()...)...)
			reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, d.log)
			return
		}
		defer release()
		follow = d.auditFollowers.add()
		defer d.auditFollowers.remove(follow)
	}
	reply(fw, api.Reply{OK: true}, d.log)
	var lastSeq float64
	for _, path := range audit.Files(d.conf().Daemon.AuditLog) {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		// Lines of any length (records from before they were bounded can
		// be megabytes); the client reassembles lines split across frames.
		var sendErr error
		err = audit.Lines(f, func(_ int, line []byte) error {
			r, err := audit.ParseRecord(line)
			if err != nil {
				d.log.Warn("audit log line not readable as a record: left out of the query", "path", path, "bytes", len(line))
				return nil
			}
			if s, ok := r["seq"].(float64); ok {
				lastSeq = s
			}
			if match(r) {
				sendErr = send(append(append(make([]byte, 0, len(line)+1), line...), '\n'))
			}
			return sendErr
		})
		_ = f.Close()
		if sendErr != nil {
			return // the caller went away
		}
		if err != nil {
			d.log.Warn("read audit log for a query", "path", path, "err", err)
		}
	}
	if follow == nil {
		return
	}
	gone := clientGone(c)
	for {
		select {
		case line := <-follow.lines:
			if n := follow.missed.Swap(0); n > 0 {
				if send(append(missedLine(n), '\n')) != nil {
					return
				}
			}
			r, err := audit.ParseRecord(line)
			if err != nil {
				d.log.Warn("audit follow: a line written is not readable as a record", "bytes", len(line))
				continue
			}
			if s, ok := r["seq"].(float64); ok && s <= lastSeq {
				continue
			}
			if match(r) {
				if send(append(line, '\n')) != nil {
					return
				}
			}
		case <-gone:
			return // the caller went away: stop following at once
		case <-ctx.Done():
			return
		}
	}
}

// secretValues are the values of the administrator's and the agents'
// secret stores, which must never reach the audit log even inside tool
// arguments. A user's own values are scrubbed from that user's sessions
// only (sessionPolicy.secretValues): one user's values must not hide
// what another's sessions do.
func (d *Daemon) secretValues() []string {
	if l := d.secretList(); l != nil {
		return *l
	}
	return nil
}

// secretList is secretValues as the daemon keeps it: one list per state
// of the stores, replaced (never changed) when a store changes; nil
// without a store.
func (d *Daemon) secretList() *[]string {
	if d.secrets == nil {
		return nil
	}
	if p := d.secretCache.Load(); p != nil {
		return p
	}
	// Read and kept under secretMu, which a change of the stores takes
	// too: a list read just before a change and kept just after it would
	// lack the new value until the next change (found by a review helper).
	d.secretMu.Lock()
	defer d.secretMu.Unlock()
	if p := d.secretCache.Load(); p != nil {
		return p
	}
	out := storeValues(d.secrets)
	out = append(out, d.agentSecretValues()...)
	d.secretCache.Store(&out)
	return &out
}

// secretsChanged forgets the list of the stores' values: a store changed
// (called after the change).
func (d *Daemon) secretsChanged() {
	d.secretMu.Lock()
	d.secretCache.Store(nil)
	d.secretMu.Unlock()
}

// secretValues are the values this session's records must not carry: the
// administrator's and agents' secrets as the stores hold them now, and
// every value injected into this session's server at its start (its
// owner's own, and those a store has since replaced).
func (p *sessionPolicy) secretValues() []string {
	l := p.d.secretList()
	var g []string
	if l != nil {
		g = *l
	}
	if len(p.s.injected) == 0 {
		return g
	}
	if m := p.secrets.Load(); m != nil && m.from == l {
		return m.all
	}
	all := g[:len(g):len(g)]
	for _, v := range p.s.injected {
		if !slices.Contains(g, v) {
			all = append(all, v)
		}
	}
	p.secrets.Store(&mergedSecrets{from: l, all: all})
	return all
}

// mergedSecrets is a session's secretValues for one state of the stores:
// the daemon's list from (Daemon.secretList).
type mergedSecrets struct {
	from *[]string
	all  []string
}
