// Package renames tells, without a race, where a rename on a watched file
// system took a name from and put it. fanotify's FAN_RENAME events carry
// handles of the old and the new directory, which are turned into paths
// as the events are read: whatever became of the names the caller used
// (a symlink swapped or removed at once after the call), the paths are
// those of the directories the kernel acted on.
//
// A directory removed at once after a file was renamed out of it (a
// package manager's staging directory) no longer opens by its handle; its
// deletion's event (FAN_DELETE of a directory, with its parent's handle
// and its name, and its own handle) says where it was, and the move's
// old name is resolved through it (Claim).
//
// Marks are per file system (fanotify has no mount or cgroup scope for
// renames), so a watched file system reports every process's renames
// and deletions; the daemon claims the moves of a sandbox's threads
// (Claim) when the kernel's own rename event of that thread reaches it,
// and the rest expire.
//
// Deletions and attribute changes (chmod, chown, xattrs, times) of a
// sandbox's threads are checked from their fanotify events alone
// (CheckChanges): the reader asks whose each event's thread is (the
// kernel's changers map) and reports, with the path where the kernel
// acted, those of sessions. Nothing the thread did to the names it
// passed (a symlink removed at once, bytes rewritten during the call)
// changes that path.
package renames

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Move is one rename as the kernel did it.
type Move struct {
	Tid uint32 // the renaming thread, in the host's pid namespace
	// From and To are the old and the new name: the host's path of the
	// directory and the name in it.
	From, To string
	// FromErr says why From is empty: the old directory could not be
	// resolved (removed before the event was read, a path longer than
	// PATH_MAX, outside every watched source). A caller must take such a
	// move as unchecked, not as harmless.
	FromErr string
	seen    time.Time
	// session is the thread's session as the kernel's changers map said
	// when the move was read (owned: it said one): a move of another
	// session is never claimed for this one, whatever the thread id.
	session uint64
	owned   bool
	// fromDir and fromName: the old directory's handle (handleKey) and
	// the name in it, kept when the directory could not be resolved as
	// the event was read (removed), for its deletion's event to resolve
	// (Claim).
	fromDir  string
	fromName string
}

// goneDir is where a deleted directory was: the deletion's record of its
// parent's handle and its name, kept as read (resolved only when a move
// needs it: reading a deletion costs no system call, so a flood of them
// cannot outpace the reader), and the parent's handle as a key, to
// follow the parent's own deletion when it is gone too.
type goneDir struct {
	rec    []byte // the DFID_NAME record (resolve)
	parent string // handleKey of the parent
	name   string
	seen   time.Time
}

// Bounds of the unclaimed moves: a move not claimed within keepFor is
// another process's (or its thread's kernel event was lost, which the
// caller learns otherwise), and at most maxPending are kept; deleted
// directories are kept as long, the newest maxGone (a move out of one no
// longer known stays unresolved). A claim reads the queue for at most
// claimWait: a flood of events it cannot get through in that time makes
// it fail (ErrBehind), not return too few moves.
const (
	// MaxClaimLag is how late after a rename its claim may come and still
	// find the move: moves are kept keepFor after they were read, or half
	// that beyond maxPending. A caller whose account of a rename is later
	// than this takes it as unchecked.
	MaxClaimLag = keepFor / 3
	keepFor     = 30 * time.Second
	maxPending  = 32768
	maxGone     = 32768
	claimWait   = 2 * time.Second
	// maxGoneDepth bounds the deleted ancestors followed to resolve a
	// deleted directory (rm -r of a tree deletes from the leaves up).
	maxGoneDepth = 64
)

// Watcher reads the renames of the file systems it watches.
type Watcher struct {
	file *os.File // the fanotify group, for the poller (Run)
	fd   int
	log  *slog.Logger

	mu         sync.Mutex
	marks      map[unix.Fsid]*mark
	pending    map[uint32][]Move // by thread, oldest first
	npending   int
	gone       map[string]goneDir // deleted directories, by handle (handleKey)
	goneFIFO   []string           // their keys, oldest first from goneHead (a ring of maxGone)
	goneHead   int
	pruned     time.Time // the last prune
	gonePruned time.Time // the last pruneGone
	overflow   int       // queue overflows seen (none with an unlimited queue)
	// lostAt: when events read were lost to a bug of mcpcaged's (a panic
	// parsing them), UnixNano; 0: never.
	lostAt atomic.Int64
	buf    []byte

	// CheckChanges: whose thread a deletion or attribute change is, and
	// where the session's changes go. waiting: changes whose directory
	// was removed before they were read, by the directory's handle
	// (handleKey), until its deletion's event says where it was (up
	// removed parents), or the queue is empty; ready: to be reported,
	// outside the lock.
	owner    func(tid uint32) (uint64, bool)
	report   func([]Change)
	waiting  map[string][]Change
	nwaiting int
	ready    []Change
	// owners caches owner's answers for one read (a flood is one
	// thread's); cost is each session's time spent resolving since
	// costFrom, and flooded those reported for it.
	owners   map[uint32]owned
	cost     map[uint64]time.Duration
	flooded  map[uint64]bool // for good: the caller ends such a session
	costFrom time.Time
	// dirs caches the paths of directories resolved by handle (key: fsid
	// and handle): a directory a server deletes in by the thousand is
	// resolved once. A directory's deletion drops its entry; a
	// directory's rename, every entry (its subtree moved).
	dirs map[string]string
}

// owned is an answer of the owner function.
type owned struct {
	session uint64
	ok      bool
}

// maxCachedDirs bounds the cache of directory paths.
const maxCachedDirs = 16384

// mark is one watched file system: the watched sources on it, whose
// descriptors open the events' directory handles.
type mark struct {
	path    string // the first source, which the mark was made with
	sources []*source
}

// source is one watched directory: a handle opened through it resolves
// to a path in its mount, so a directory outside it is resolved through
// another source (a bind of a subtree shows nothing above it).
type source struct {
	dir  *os.File
	path string
	refs int
}

// markMask is what a watched file system reports: renames, deletions
// and attribute changes, of files and directories (a deletion of a
// directory is also kept to resolve moves and deletions out of it).
const markMask = unix.FAN_RENAME | unix.FAN_DELETE | unix.FAN_ATTRIB | unix.FAN_ONDIR

// Op is what a checked change (Change) did.
type Op uint8

// The checked changes.
const (
	OpDelete Op = iota + 1 // unlink or rmdir
	OpAttrib               // chmod, chown, setxattr, removexattr, utimes
	// OpFlood: the session's changes cost the reader more than
	// MaxCostPerSecond of resolving in the last second; the reader,
	// shared by every session, would fall behind and others' renames
	// fail their checks. Its changes are still resolved and reported.
	OpFlood
)

// MaxCostPerSecond is how much of the reader's time one session's changes
// may take to resolve (their directories looked up by handle) in a
// second before the reader reports it (OpFlood).
const MaxCostPerSecond = 250 * time.Millisecond

// Change is a deletion or an attribute change by a thread of a session
// (CheckChanges), where the kernel acted.
type Change struct {
	Op      Op
	Dir     bool   // of a directory
	Tid     uint32 // the changing thread, in the host's pid namespace
	Session uint64 // its session, as the changers map says
	// Path is the host's path of what was changed; Err says why it is
	// empty (its directory removed, its deletion not known). A caller
	// must take such a change as unchecked, not as harmless.
	Path string
	Err  string
	// name: while waiting for its removed directory's deletion, the path
	// below that directory.
	name string
}

// maxWaiting bounds the checked changes waiting for the deletions of
// their removed directories; beyond, they are reported unresolved.
const maxWaiting = 65536

// Open creates the fanotify group (root; Linux 5.17+ for FAN_RENAME and
// FAN_REPORT_TARGET_FID).
func Open(log *slog.Logger) (*Watcher, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|
		unix.FAN_REPORT_DFID_NAME|unix.FAN_REPORT_FID|unix.FAN_REPORT_TARGET_FID|unix.FAN_REPORT_TID|unix.FAN_UNLIMITED_QUEUE,
		unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	return &Watcher{file: os.NewFile(uintptr(fd), "fanotify"), fd: fd, log: log, marks: map[unix.Fsid]*mark{},
		pending: map[uint32][]Move{}, gone: map[string]goneDir{}, dirs: map[string]string{}, waiting: map[string][]Change{},
		owners: map[uint32]owned{}, cost: map[uint64]time.Duration{}, flooded: map[uint64]bool{},
		buf: make([]byte, 64<<10)}, nil
}

// CheckChanges has the watcher report the deletions and attribute
// changes of sessions' threads: owner says whose thread tid is (a
// session, or none), report receives them, outside the watcher's lock.
// Call it before Run.
func (w *Watcher) CheckChanges(owner func(tid uint32) (uint64, bool), report func([]Change)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.owner, w.report = owner, report
}

// flush reports the changes ready.
func (w *Watcher) flush() {
	w.mu.Lock()
	ready := w.ready
	w.ready = nil
	w.mu.Unlock()
	if len(ready) > 0 && w.report != nil {
		w.report(ready)
	}
}

// Close ends the group; Run returns.
func (w *Watcher) Close() error { return w.file.Close() }

// Watch reports the renames on the file system that holds path (a
// directory, or a file: its directory) until release is called. Marks
// are per file system; sources are counted.
func (w *Watcher) Watch(path string) (release func(), err error) {
	dir := path
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.IsDir() {
		dir = filepath.Dir(path)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // the kernel's paths are canonical
	}
	// open_by_handle_at wants a descriptor opened for reading, not O_PATH.
	f, err := os.OpenFile(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return w.WatchDir(f, dir)
}

// WatchDir is Watch of the directory f (opened for reading, which
// WatchDir takes over) whose canonical path is dir: the file system
// watched is the one f is on, whatever dir names by now (a directory on
// the way swapped for a symlink since f was opened changes nothing).
func (w *Watcher) WatchDir(f *os.File, dir string) (release func(), err error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("statfs %s: %w", dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.marks[sfs.Fsid]
	if m != nil {
		for _, src := range m.sources {
			if src.path == dir {
				_ = f.Close()
				src.refs++
				return w.releaser(sfs.Fsid, src), nil
			}
		}
	}
	if m == nil {
		if err := unix.FanotifyMark(w.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, markMask, int(f.Fd()), ""); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("fanotify_mark %s: %w", dir, err)
		}
		m = &mark{path: dir}
		w.marks[sfs.Fsid] = m
	}
	src := &source{dir: f, path: dir, refs: 1}
	m.sources = append(m.sources, src)
	clear(w.dirs) // a directory outside every source may lie in this one
	return w.releaser(sfs.Fsid, src), nil
}

// releaser drops one hold of src, once; the mark goes with its last
// source.
func (w *Watcher) releaser(fsid unix.Fsid, src *source) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if src.refs--; src.refs > 0 {
				return
			}
			w.drainLocked(time.Time{}) // the events of its renames need its descriptor
			m := w.marks[fsid]
			m.sources = slices.DeleteFunc(m.sources, func(s *source) bool { return s == src })
			clear(w.dirs) // (paths are through sources)
			defer func() { _ = src.dir.Close() }()
			if len(m.sources) > 0 {
				return
			}
			// Removed through the last source's descriptor (any object on
			// the file system names it), not by a path that may lead
			// elsewhere by now.
			if err := unix.FanotifyMark(w.fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_FILESYSTEM, markMask, int(src.dir.Fd()), ""); err != nil {
				w.log.Warn("could not stop watching renames", "path", m.path, "err", err)
			}
			delete(w.marks, fsid)
		})
	}
}

// Watching reports how many file systems are watched.
func (w *Watcher) Watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.marks)
}

// ErrBehind: the events queued before a claim could not all be read
// within claimWait; the claimed thread's renames are unchecked.
var ErrBehind = errors.New("the rename events of the file system could not be read in time (a flood of renames or deletions)")

// Claim returns (and forgets) the moves of thread tid read so far, but
// those read before started (the thread's start: a tid is reused, and a
// move of the thread that had it before is not this one's). The kernel
// queues a rename's event before the call returns, so once the thread's
// own account of a rename is in hand, Claim has that move, having read
// the queue through: when it cannot within claimWait, it returns
// ErrBehind. A move out of a directory removed since is resolved through
// the directory's deletion, whose event was queued before the removal
// returned.
//
// session, when not 0, is the claiming thread's session: moves read as
// another session's (the kernel's changers map said so as they were
// read) are left out, whatever their thread id.
func (w *Watcher) Claim(tid uint32, started time.Time, session uint64) ([]Move, error) {
	defer w.flush()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.drainLocked(time.Now().Add(claimWait)) {
		return nil, ErrBehind
	}
	moves := w.pending[tid]
	delete(w.pending, tid)
	w.npending -= len(moves)
	moves = slices.DeleteFunc(moves, func(m Move) bool {
		return m.seen.Before(started) || (session != 0 && m.owned && m.session != session)
	})
	for i := range moves {
		m := &moves[i]
		if m.fromDir == "" {
			continue
		}
		if dir, ok := w.gonePath(m.fromDir, 0); ok {
			m.From, m.FromErr = filepath.Join(dir, m.fromName), ""
		}
		m.fromDir, m.fromName = "", ""
	}
	return moves, nil
}

// gonePath is where the deleted directory with handle key was: its
// parent's path (or, the parent deleted too, where that was) and its
// name.
func (w *Watcher) gonePath(key string, depth int) (string, bool) {
	g, ok := w.gone[key]
	if !ok || depth > maxGoneDepth {
		return "", false
	}
	if p, err := w.resolve(g.rec); err == nil {
		return p, true // the parent's path and the name
	}
	// The parent removed too, or not resolvable: its own deletion, if
	// known, says where it was.
	parent, ok := w.gonePath(g.parent, depth+1)
	if !ok {
		return "", false
	}
	return filepath.Join(parent, g.name), true
}

// Run reads events as they come until the watcher is closed, so that a
// busy file system's events do not pile up in the kernel.
func (w *Watcher) Run() {
	rc, err := w.file.SyscallConn()
	if err != nil {
		w.log.Warn("renames are read only when claimed", "err", err)
		return
	}
	_ = rc.Read(func(uintptr) bool {
		// One read at a time under the lock: a claim gets in between.
		for {
			more := w.readOnce()
			w.flush()
			if !more {
				return false // wait for the next event
			}
		}
	})
}

// readOnce is readOnceLocked under the lock, which a panic (a bug) lets
// go of: the daemon then starts Run again, and every claim must still
// get in.
func (w *Watcher) readOnce() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readOnceLocked()
}

// LostSince reports whether events read at t or later were lost to a bug
// of mcpcaged's (a panic while they were parsed): a rename made at or
// before that moment may have had its move among them, so its check must
// fail closed.
func (w *Watcher) LostSince(t time.Time) bool {
	lost := w.lostAt.Load()
	return lost != 0 && lost >= t.UnixNano()
}

// drainLocked reads every queued event and keeps its move; false when
// the queue was not empty by deadline (zero: none).
func (w *Watcher) drainLocked(deadline time.Time) bool {
	for w.readOnceLocked() {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// readOnceLocked reads the queued events once (up to a buffer of them),
// keeps their moves and deleted directories, and prunes; false when the
// queue was empty.
func (w *Watcher) readOnceLocked() bool {
	n, err := unix.Read(w.fd, w.buf)
	if err != nil || n <= 0 {
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EBADF) {
			w.log.Warn("reading rename events failed", "err", err)
		}
		w.giveUpWaiting() // the queue is empty: no deletion will resolve them
		return false
	}
	parsed := false
	defer func() {
		if !parsed { // a bug of mcpcaged's (a panic): the events read are lost
			w.lostAt.Store(time.Now().UnixNano())
		}
	}()
	w.parse(w.buf[:n])
	parsed = true
	now := time.Now()
	w.prune(now)
	w.pruneGone(now)
	return true
}

const metaSize = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))

// parse keeps the moves of a read's events.
func (w *Watcher) parse(b []byte) {
	now := time.Now()
	clear(w.owners)
	if now.Sub(w.costFrom) > time.Second {
		clear(w.cost)
		w.costFrom = now
	}
	for len(b) >= metaSize {
		meta := decodeMeta(b)
		if int(meta.Event_len) < metaSize || int(meta.Event_len) > len(b) {
			return
		}
		ev := b[:meta.Event_len]
		b = b[meta.Event_len:]
		if meta.Mask&unix.FAN_Q_OVERFLOW != 0 {
			w.overflow++
			w.log.Error("rename events were lost (fanotify queue overflow)")
			continue
		}
		info := ev[meta.Metadata_len:]
		switch {
		case meta.Mask&unix.FAN_RENAME != 0:
			if meta.Mask&unix.FAN_ONDIR != 0 {
				clear(w.dirs)
			}
			w.parseRename(info, uint32(meta.Pid), now)
		case meta.Mask&unix.FAN_DELETE != 0:
			dir := meta.Mask&unix.FAN_ONDIR != 0
			if dir {
				w.parseDeletedDir(info, now)
			}
			w.parseChange(info, OpDelete, dir, uint32(meta.Pid))
		case meta.Mask&unix.FAN_ATTRIB != 0:
			w.parseChange(info, OpAttrib, meta.Mask&unix.FAN_ONDIR != 0, uint32(meta.Pid))
		}
	}
}

// parseChange resolves a deletion or attribute change of a session's
// thread as it is read, in the queue's order: its directory, if removed
// since, is in the directory cache (filled by an earlier change in it)
// or its deletion comes later in the queue (waiting).
func (w *Watcher) parseChange(info []byte, op Op, dir bool, tid uint32) {
	if w.owner == nil {
		return
	}
	o, known := w.owners[tid]
	if !known {
		o.session, o.ok = w.owner(tid)
		w.owners[tid] = o
	}
	if !o.ok || w.flooded[o.session] {
		// Another process's, or a session reported flooding, which
		// ends: dropped as read, so that the queue drains fast.
		return
	}
	session := o.session
	var rec []byte
	infoRecords(info, func(typ byte, r []byte) {
		switch typ {
		case unix.FAN_EVENT_INFO_TYPE_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_DFID:
			rec = r
		}
	})
	if rec == nil {
		// Not a change by name: an unlink's change of the file's link
		// count (its deletion is the change to check).
		return
	}
	c := Change{Op: op, Dir: dir, Tid: tid, Session: session}
	start := time.Now()
	p, err := w.resolve(rec)
	if elsewhere(err) {
		return // (not charged: not the session's)
	}
	w.charge(c, time.Since(start))
	if err == nil {
		c.Path = p
		w.ready = append(w.ready, c)
		return
	}
	key, name, _ := handleKey(rec)
	if gone, ok := w.gonePath(key, 0); ok {
		c.Path = filepath.Join(gone, name)
		w.ready = append(w.ready, c)
		return
	}
	c.Err, c.name = err.Error(), name
	w.wait(key, c)
}

// charge adds d to the resolving time of c's session, and reports the
// session once a second when it is over MaxCostPerSecond.
func (w *Watcher) charge(c Change, d time.Duration) {
	w.cost[c.Session] += d
	if w.cost[c.Session] > MaxCostPerSecond && !w.flooded[c.Session] {
		w.flooded[c.Session] = true
		w.ready = append(w.ready, Change{Op: OpFlood, Tid: c.Tid, Session: c.Session})
	}
}

// wait keeps c until the deletion of the directory with handle key;
// beyond maxWaiting, c is reported unresolved.
func (w *Watcher) wait(key string, c Change) {
	if w.nwaiting >= maxWaiting {
		w.ready = append(w.ready, c)
		return
	}
	w.waiting[key] = append(w.waiting[key], c)
	w.nwaiting++
}

// resolveWaiting resolves the changes that waited for the deletion of
// the directory with handle key, now read: where it was, or, its parent
// removed too, they wait for the parent's deletion.
func (w *Watcher) resolveWaiting(key string) {
	cs, ok := w.waiting[key]
	if !ok {
		return
	}
	delete(w.waiting, key)
	w.nwaiting -= len(cs)
	g := w.gone[key]
	p, err := w.resolve(g.rec) // the parent's path and the directory's name
	if elsewhere(err) {
		return
	}
	for _, c := range cs {
		if err == nil {
			c.Path, c.Err, c.name = filepath.Join(p, c.name), "", ""
			w.ready = append(w.ready, c)
			continue
		}
		c.name = filepath.Join(g.name, c.name)
		w.wait(g.parent, c)
	}
}

// giveUpWaiting reports the changes still waiting once the queue is
// empty: their directories' deletions, queued before them, would have
// been read. They are unresolved (Err).
func (w *Watcher) giveUpWaiting() {
	for key, cs := range w.waiting {
		for _, c := range cs {
			c.name = ""
			w.ready = append(w.ready, c)
		}
		delete(w.waiting, key)
	}
	w.nwaiting = 0
}

// decodeMeta decodes struct fanotify_event_metadata at the start of b
// (metaSize bytes): event_len u32, vers u8, reserved u8, metadata_len
// u16, mask u64, fd s32, pid s32.
func decodeMeta(b []byte) unix.FanotifyEventMetadata {
	ne := binary.NativeEndian
	return unix.FanotifyEventMetadata{Event_len: ne.Uint32(b[0:4]), Vers: b[4], Reserved: b[5], Metadata_len: ne.Uint16(b[6:8]),
		Mask: ne.Uint64(b[8:16]), Fd: int32(ne.Uint32(b[16:20])), Pid: int32(ne.Uint32(b[20:24]))}
}

// infoRecords calls fn with each information record of an event.
func infoRecords(info []byte, fn func(typ byte, rec []byte)) {
	for len(info) >= 4 {
		l := int(binary.NativeEndian.Uint16(info[2:4]))
		if l < 4 || l > len(info) {
			return
		}
		fn(info[0], info[:l])
		info = info[l:]
	}
}

// parseRename keeps the move of a rename event.
func (w *Watcher) parseRename(info []byte, tid uint32, now time.Time) {
	mv := Move{Tid: tid, seen: now, FromErr: "no old directory in the event"}
	if w.owner != nil {
		o, known := w.owners[tid]
		if !known {
			o.session, o.ok = w.owner(tid)
			w.owners[tid] = o
		}
		mv.session, mv.owned = o.session, o.ok
	}
	infoRecords(info, func(typ byte, rec []byte) {
		switch typ {
		case unix.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
			var err error
			if mv.From, err = w.resolve(rec); err != nil {
				mv.FromErr = err.Error()
				// Removed (ESTALE; ENOMEM when the kernel could not
				// reconnect the dying directory), or not resolvable:
				// its deletion's event, if there is one, says.
				mv.fromDir, mv.fromName, _ = handleKey(rec)
			} else {
				mv.FromErr = ""
			}
		case unix.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
			mv.To, _ = w.resolve(rec)
		}
	})
	w.pending[mv.Tid] = append(w.pending[mv.Tid], mv)
	w.npending++
}

// parseDeletedDir keeps where a deleted directory was (its parent's
// handle and its name, the DFID_NAME record) by its own handle (the FID
// record), the newest maxGone. No system call: resolved when needed.
func (w *Watcher) parseDeletedDir(info []byte, now time.Time) {
	var g goneDir
	var self string
	infoRecords(info, func(typ byte, rec []byte) {
		switch typ {
		case unix.FAN_EVENT_INFO_TYPE_DFID_NAME:
			g.parent, g.name, _ = handleKey(rec)
			g.rec = slices.Clone(rec)
		case unix.FAN_EVENT_INFO_TYPE_FID:
			self, _, _ = handleKey(rec)
		}
	})
	if self == "" || g.parent == "" || g.name == "" {
		return
	}
	delete(w.dirs, self) // (handleKey: the cache's key)
	g.seen = now
	defer w.resolveWaiting(self)
	if len(w.goneFIFO) < maxGone {
		w.goneFIFO = append(w.goneFIFO, self)
	} else {
		delete(w.gone, w.goneFIFO[w.goneHead]) // the oldest
		w.goneFIFO[w.goneHead] = self
		w.goneHead = (w.goneHead + 1) % maxGone
	}
	w.gone[self] = g
}

// handleKey splits a handle record (see resolve) into its handle, as a
// key that is the same in every record of that object (fsid, size, type,
// bytes), and the name after it.
func handleKey(rec []byte) (key, name string, ok bool) {
	const hdr = 4 + 8 + 8
	if len(rec) < hdr {
		return "", "", false
	}
	size := int(binary.NativeEndian.Uint32(rec[12:16]))
	if size > len(rec)-hdr {
		return "", "", false
	}
	n := rec[hdr+size:]
	if i := bytes.IndexByte(n, 0); i >= 0 {
		n = n[:i]
	}
	return string(rec[4 : hdr+size]), string(n), true
}

// resolve turns one directory-handle-and-name record into the host's
// path of the name: its header (4 bytes), fsid (8), struct file_handle
// (handle_bytes, handle_type, f_handle) and the name, NUL-terminated.
// The handle is opened through each watched source on its file system in
// turn; a path is taken from the first source it lies under (through a
// bind of a subtree, a directory outside it shows as "/" and its name).
func (w *Watcher) resolve(rec []byte) (string, error) {
	const hdr = 4 + 8 + 8
	if len(rec) < hdr {
		return "", errors.New("a short directory record")
	}
	var fsid unix.Fsid
	fsid.Val[0] = int32(binary.NativeEndian.Uint32(rec[4:8]))
	fsid.Val[1] = int32(binary.NativeEndian.Uint32(rec[8:12]))
	size := int(binary.NativeEndian.Uint32(rec[12:16]))
	typ := int32(binary.NativeEndian.Uint32(rec[16:20]))
	if size > len(rec)-hdr {
		return "", errors.New("a short directory handle")
	}
	name := rec[hdr+size:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	key := string(rec[4 : hdr+size]) // handleKey's
	if dir, ok := w.dirs[key]; ok {
		if dir == "" {
			return "", errOutside
		}
		return filepath.Join(dir, string(name)), nil
	}
	m := w.marks[fsid]
	if m == nil {
		return "", errUnwatched
	}
	var lastErr = errOutside
	for _, src := range m.sources {
		fd, err := unix.OpenByHandleAt(int(src.dir.Fd()), unix.NewFileHandle(typ, rec[hdr:hdr+size]), unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			return "", fmt.Errorf("open the directory by its handle: %w", err) // ESTALE: removed
		}
		dir, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		_ = unix.Close(fd)
		if err != nil {
			lastErr = fmt.Errorf("the directory's path: %w", err) // ENAMETOOLONG
			continue
		}
		dir = strings.TrimSuffix(dir, " (deleted)")
		if dir == src.path || strings.HasPrefix(dir, src.path+"/") || src.path == "/" {
			w.cacheDir(key, dir)
			return filepath.Join(dir, string(name)), nil
		}
	}
	if lastErr == errOutside {
		w.cacheDir(key, "") // (a host directory a thread id of a session's thread changes in)
	}
	return "", lastErr
}

// cacheDir caches the path of the directory with handle key ("": outside
// every watched source), one entry out, whichever, when full.
func (w *Watcher) cacheDir(key, dir string) {
	if len(w.dirs) >= maxCachedDirs {
		for k := range w.dirs {
			delete(w.dirs, k)
			break
		}
	}
	w.dirs[key] = dir
}

// errOutside and errUnwatched: a directory that resolved, but lies
// outside every watched source (no session's writable mount holds it),
// or on a file system no longer watched (its sessions ended).
var (
	errOutside   = errors.New("outside every watched source")
	errUnwatched = errors.New("a file system no longer watched")
)

// elsewhere reports whether err says a change is in no session's
// writable mount: another process's, made by a thread whose id a
// session's thread had before.
func elsewhere(err error) bool { return errors.Is(err, errOutside) || errors.Is(err, errUnwatched) }

// pruneGone drops deleted directories older than keepFor, oldest first,
// at most once a second.
func (w *Watcher) pruneGone(now time.Time) {
	if len(w.goneFIFO) == 0 || now.Sub(w.gonePruned) < time.Second {
		return
	}
	w.gonePruned = now
	cut := now.Add(-keepFor)
	n := 0 // how many of the oldest have expired
	for n < len(w.goneFIFO) {
		key := w.goneFIFO[(w.goneHead+n)%len(w.goneFIFO)]
		if g, ok := w.gone[key]; ok && !g.seen.Before(cut) {
			break
		}
		delete(w.gone, key)
		n++
	}
	if n == 0 {
		return
	}
	// The ring, oldest first, without them: a slice again.
	rest := make([]string, 0, len(w.goneFIFO)-n)
	for i := n; i < len(w.goneFIFO); i++ {
		rest = append(rest, w.goneFIFO[(w.goneHead+i)%len(w.goneFIFO)])
	}
	w.goneFIFO, w.goneHead = rest, 0
}

// prune drops moves older than keepFor, and the oldest beyond
// maxPending.
func (w *Watcher) prune(now time.Time) {
	if w.npending == 0 || (now.Sub(w.pruned) < time.Second && w.npending <= maxPending) {
		return // at most once a second: a prune walks every thread's moves
	}
	w.pruned = now
	cut := now.Add(-keepFor)
	if w.npending > maxPending {
		// Beyond the bound: keep the newest half of the time since.
		cut = now.Add(-keepFor / 2)
	}
	for tid, moves := range w.pending {
		kept := slices.DeleteFunc(moves, func(m Move) bool { return m.seen.Before(cut) })
		w.npending -= len(moves) - len(kept)
		if len(kept) == 0 {
			delete(w.pending, tid)
		} else {
			w.pending[tid] = kept
		}
	}
}
