package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SegmentType is the type of the record that opens every file (segment)
// of the log. Its fields: segment, the segment's number (1, 2, ... across
// rotations); oldest_segment, the oldest segment the log keeps at that
// point. Its prev is the hash of the previous segment's last record.
const SegmentType = "audit.segment"

// GapType is the record the daemon writes when it resumes a chain that
// lost records while it was stopped: the chain head knew of records the
// files no longer hold (cut from the end, the newest segment removed), or
// the last record is not the one the head saw. It names what was lost
// (lost_from..lost_to, or replaced_seq) and why (lost); the records after
// it go on from what the files hold, so those numbers come again. Verify
// reports every one of them.
const GapType = "audit.gap"

// RecoveredType is the record of a torn last line cut at start-up: a
// write the kernel stopped part way (the daemon killed mid-write) leaves
// a line without its end, which was never a record (a call waits for its
// record's write to return). The bytes are kept beside the log
// (saved_to) and named by size and digest.
const RecoveredType = "audit.recovered"

// Head is the chain's last durable record, kept in the state dir.
type Head struct {
	Seq     uint64 `json:"seq"`
	Hash    string `json:"hash"`
	File    string `json:"file"`
	Segment uint64 `json:"segment,omitempty"`        // the segment holding Seq (0: before segments)
	Oldest  uint64 `json:"oldest_segment,omitempty"` // the oldest segment kept
}

// headSize is the size of the head file: the head is rewritten in place,
// one page, its JSON padded with spaces, so that a sync of the log never
// also commits a new directory entry (a rename would) and the write cannot
// straddle pages.
const headSize = 4096

// headReads is how many times ReadHead reads a head that does not parse:
// a reader can meet the page while the daemon rewrites it.
const headReads = 3

// ReadHead reads the chain head saved in the state dir.
func ReadHead(path string) (Head, error) {
	var h Head
	var err error
	for range headReads {
		var b []byte
		if b, err = os.ReadFile(path); err != nil {
			return h, err
		}
		if err = json.Unmarshal(b, &h); err == nil {
			return h, nil
		}
	}
	return h, fmt.Errorf("chain head %s: %w", path, err)
}

// saveHead rewrites the head file in place (see headSize); a head too
// long for a page (a very long log path) is replaced by a rename instead.
func (l *Log) saveHead() error {
	if l.o.HeadPath == "" {
		return nil
	}
	b, _ := json.Marshal(Head{Seq: l.seq, Hash: l.prev, File: l.o.Path, Segment: l.segment, Oldest: l.oldest})
	if len(b) >= headSize {
		return replaceFile(l.o.HeadPath, b)
	}
	if l.headF == nil {
		f, err := os.OpenFile(l.o.HeadPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("save chain head: %w", err)
		}
		l.headF = f
	}
	page := make([]byte, headSize)
	copy(page, b)
	for i := len(b); i < headSize-1; i++ {
		page[i] = ' '
	}
	page[headSize-1] = '\n'
	if _, err := l.headF.WriteAt(page, 0); err != nil {
		return fmt.Errorf("save chain head: %w", err)
	}
	return nil
}

// replaceFile writes b to a new file and renames it over path.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save chain head: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save chain head: %w", err)
	}
	return nil
}

// resume finds the chain's end (the last record of the newest non-empty
// file, else the head file) and the current segment (from the header of
// that file).
func (l *Log) resume() error {
	if err := l.resumeFiles(); err != nil {
		return err
	}
	l.checkHead()
	return nil
}

// checkHead compares where the files end with the chain head the daemon
// kept: records the head knows of that the files no longer hold were
// lost while the daemon was stopped. Going on from the files alone made a
// cut end, or a removed newest segment, pass verification after the next
// start (found by a red-team helper); an audit.gap record now says so.
func (l *Log) checkHead() {
	h, err := ReadHead(l.o.HeadPath)
	switch {
	case l.seq == 0 && (err != nil || h.Seq == 0):
		return // a new log
	case errors.Is(err, fs.ErrNotExist):
		// Files and no head: nothing to check their end against, and the
		// head written next would hide that there was none (found by a
		// review helper: records cut with the head removed passed).
		l.marks = append(l.marks, Record{"type": GapType, "head_missing": true,
			"lost": fmt.Sprintf("the chain head %s was missing while the log holds records (up to seq %d): whether records were cut from its end before this start cannot be told", l.o.HeadPath, l.seq)})
		return
	case err != nil:
		l.marks = append(l.marks, Record{"type": GapType, "head_missing": true,
			"lost": fmt.Sprintf("the chain head %s could not be read (%v) while the log holds records (up to seq %d): whether records were cut from its end before this start cannot be told", l.o.HeadPath, err, l.seq)})
		return
	case h.Seq == 0:
		return
	}
	switch {
	case h.Seq > l.seq:
		l.marks = append(l.marks, Record{"type": GapType, "lost_from": l.seq + 1, "lost_to": h.Seq, "head_hash": h.Hash, "head_segment": h.Segment,
			"lost": fmt.Sprintf("the chain head says the log reached seq %d (segment %d) but its files end at seq %d: records were cut from the end or a newest segment removed while mcpcaged was stopped; the records after this one go on from seq %d", h.Seq, h.Segment, l.seq, l.seq+2)})
	case h.Seq == l.seq && h.Hash != l.prev:
		l.marks = append(l.marks, Record{"type": GapType, "replaced_seq": h.Seq, "head_hash": h.Hash,
			"lost": fmt.Sprintf("the record at seq %d is not the one the chain head recorded: it was replaced while mcpcaged was stopped", h.Seq)})
	case h.Seq < l.seq:
		// The files go on past the head (records written after its last
		// save): the record it saw must be among them. Records cut and
		// others chained in their place, past the head, passed (found by
		// a review helper).
		if hash, found := l.hashAt(h.Seq); !found || hash != h.Hash {
			l.marks = append(l.marks, Record{"type": GapType, "replaced_seq": h.Seq, "head_hash": h.Hash,
				"lost": fmt.Sprintf("the log goes on past the chain head (seq %d) but its record at seq %d is not the one the head recorded: records were replaced while mcpcaged was stopped", l.seq, h.Seq)})
		}
	}
}

// hashAt is the hash of the record at seq in the files, newest first (the
// head is normally in the newest segment, at most one sync interval
// behind its end).
func (l *Log) hashAt(seq uint64) (string, bool) {
	files := Files(l.o.Path)
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.Open(files[i])
		if err != nil {
			continue
		}
		var hash string
		first := true
		var older bool // the file starts past seq: look in the one before
		_ = Lines(f, func(_ int, line []byte) error {
			m, err := parseLine(line)
			if err != nil {
				return nil
			}
			if first {
				first, older = false, m.Seq > seq
				if older {
					return errStop
				}
			}
			if m.Seq == seq {
				hash = m.Hash // the last: numbers come again after an audit.gap
			}
			return nil
		})
		_ = f.Close()
		if hash != "" {
			return hash, true
		}
		if !older && !first {
			return "", false // the file holds seq's place and not seq
		}
	}
	return "", false
}

// errStop ends a Lines walk early.
var errStop = errors.New("stop")

// resumeFiles finds the chain's end in the files, cutting a torn last
// line first (see RecoveredType).
func (l *Log) resumeFiles() error {
	files := Files(l.o.Path)
	for i := len(files) - 1; i >= 0; i-- {
		last, err := lastLine(files[i])
		if err != nil {
			return fmt.Errorf("read audit log %s: %w", files[i], err)
		}
		if last == nil {
			continue
		}
		m, err := parseLine(last)
		if err != nil {
			rec, cutErr := cutTornLine(files[i])
			if cutErr != nil {
				return fmt.Errorf("audit log %s ends with a damaged record (%v), and its torn end could not be set aside: %w", files[i], err, cutErr)
			}
			if rec == nil {
				return fmt.Errorf("audit log %s ends with a damaged record (%v), a whole line that is not what was written: run `mcpcage audit verify`, keep the file for investigation and move it aside", files[i], err)
			}
			l.marks = append(l.marks, rec)
			i++ // read the file's end again
			continue
		}
		l.seq, l.prev = m.Seq, m.Hash
		first, err := firstLine(files[i])
		if err != nil {
			return fmt.Errorf("read audit log %s: %w", files[i], err)
		}
		if fm, err := parseLine(first); err == nil && fm.Type == SegmentType {
			l.segment, l.oldest = fm.Segment, fm.Oldest
		}
		if files[i] != l.o.Path {
			l.advance() // the current file is empty or missing: a new segment
		}
		return nil
	}
	if h, err := ReadHead(l.o.HeadPath); err == nil && h.Seq > 0 {
		l.seq, l.prev, l.segment, l.oldest = h.Seq, h.Hash, h.Segment, h.Oldest
	}
	l.advance()
	return nil
}

// advance moves on to the next segment and the oldest one it keeps.
func (l *Log) advance() {
	l.segment++
	oldest := uint64(1)
	if keep := uint64(l.o.Keep); l.segment > keep {
		oldest = l.segment - keep
	}
	l.oldest = max(l.oldest, oldest)
}

// header is the record that opens the current segment.
func (l *Log) header() Record {
	return Record{"type": SegmentType, "segment": l.segment, "oldest_segment": l.oldest}
}

func (l *Log) openFile() error {
	f, err := os.OpenFile(l.o.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open audit log: %w", err)
	}
	l.f, l.size = f, st.Size()
	l.needHeader = l.size == 0
	return nil
}

// rotate shifts audit.jsonl -> .1 -> .2 ..., starts the next segment,
// then drops the files past Keep. A rotation that fails part way is
// tried again after the next commit, and a retry must not take more
// history with it: only the run of segments in front of the first free
// number is shifted (a retry after a failed step finds the gap that step
// left and shifts nothing twice), and nothing is removed until the
// current file has become .1. (Before, every retry removed the oldest
// segment and shifted the rest again: a current file that cannot be
// renamed, such as one an admin made append-only, cost one kept segment
// per commit until none was left.)
func (l *Log) rotate() error {
	if err := l.f.Sync(); err != nil {
		return err
	}
	l.dirty = false
	if err := l.saveHead(); err != nil {
		return err
	}
	err := l.f.Close()
	l.f = nil // reopened by the next write if anything below fails
	if err != nil {
		return fmt.Errorf("close audit segment: %w", err)
	}
	// Every path.N counts as taken, whatever its type; a directory that
	// cannot be read stops the rotation (an empty listing would put the
	// current file onto .1); and no rename replaces a name in use.
	names, err := numbered(l.o.Path, false)
	if err != nil {
		return err
	}
	taken := map[int]bool{}
	for _, n := range names {
		taken[n] = true
	}
	free := 1
	for taken[free] {
		free++
	}
	for i := free - 1; i >= 1; i-- {
		if err := renameNoReplace(fmt.Sprintf("%s.%d", l.o.Path, i), fmt.Sprintf("%s.%d", l.o.Path, i+1)); err != nil {
			return err
		}
	}
	if err := renameNoReplace(l.o.Path, l.o.Path+".1"); err != nil {
		return err
	}
	l.advance()
	if err := l.openFile(); err != nil {
		return err
	}
	var errs []error
	removed := 0
	for _, n := range rotated(l.o.Path) {
		if n > l.o.Keep {
			if err := os.Remove(fmt.Sprintf("%s.%d", l.o.Path, n)); err == nil {
				removed++
			} else if !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	if removed > 0 && l.o.OnTrim != nil {
		l.o.OnTrim(removed)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrTrim, err)
	}
	return nil
}

// renameNoReplace renames from to to unless to exists (RENAME_NOREPLACE;
// where the file system lacks it, a check just before the rename).
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if _, lerr := os.Lstat(to); lerr == nil {
			err = unix.EEXIST
		} else {
			err = os.Rename(from, to)
		}
	}
	if err != nil {
		return fmt.Errorf("rotate audit log: rename %s to %s: %w", from, to, err)
	}
	return nil
}

// rotated lists the numbers N of the segments path.N (regular files),
// newest (1) last. A directory that cannot be read lists what it could.
func rotated(path string) []int {
	out, _ := numbered(path, true)
	return out
}

// numbered lists the numbers N of the names path.N in path's directory,
// N written as a plain positive decimal (not "04" or "+4"), largest
// first; with segments, only regular files. The directory is read, not
// globbed: a path with glob characters is a name like any other.
func numbered(path string, segments bool) ([]int, error) {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		err = fmt.Errorf("list the audit log's segments: %w", err)
	}
	var out []int
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), filepath.Base(path)+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n <= 0 || strconv.Itoa(n) != suffix {
			continue
		}
		if segments && !e.Type().IsRegular() {
			continue
		}
		out = append(out, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out)))
	return out, err
}

// maxFirstLine bounds what HistoryStart reads of a file: one record.
const maxFirstLine = MaxRecord + 1024

// HistoryStart is the time of the oldest record the log at path still
// holds: the first record of its oldest file (a segment opens with its
// audit.segment record). ok is false when no file holds a record with a
// time.
func HistoryStart(path string) (start time.Time, ok bool) {
	for _, name := range Files(path) {
		f, err := os.Open(name)
		if err != nil {
			continue // removed by a rotation meanwhile: the next is the oldest
		}
		buf := make([]byte, maxFirstLine)
		n, _ := io.ReadFull(f, buf)
		_ = f.Close()
		line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
		var rec struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal(line, &rec) == nil && !rec.Time.IsZero() {
			return rec.Time, true
		}
	}
	return time.Time{}, false
}

// Files lists the log's files oldest first: path.N ... path.1, path.
func Files(path string) []string {
	var out []string
	for _, n := range rotated(path) {
		out = append(out, fmt.Sprintf("%s.%d", path, n))
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// cutTornLine sets aside the end of path after its last newline, when
// there is one: the file is cut back to its last whole line and the torn
// bytes saved beside it (path.torn-UNIXNANO, 0600). It returns the
// record that says so, or nil when the file ends with a newline (its
// damaged last line is whole: not a torn write, left for a person).
func cutTornLine(path string) (Record, error) {
	f, size, err := openSized(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	end := size // the torn part is [end, size)
	for pos := size; pos > 0; {
		n := min(int64(chunk), pos)
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = pos + int64(i) + 1
			break
		}
		end = 0
	}
	if end == size {
		return nil, nil
	}
	torn := make([]byte, size-end)
	if _, err := f.ReadAt(torn, end); err != nil {
		return nil, err
	}
	saved := fmt.Sprintf("%s.torn-%d", path, time.Now().UnixNano())
	if err := writeSynced(saved, torn); err != nil {
		return nil, fmt.Errorf("save the torn end: %w", err)
	}
	if err := f.Truncate(end); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(torn)
	return Record{"type": RecoveredType, "file": path, "torn_bytes": len(torn), "torn_sha256": hex.EncodeToString(sum[:]), "saved_to": saved,
		"reason": "the log ended with a line cut short (mcpcaged killed during a write); it was never a whole record and is kept in saved_to"}, nil
}

// writeSynced creates path (it must not exist) with b, fsynced.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
