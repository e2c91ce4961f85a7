package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SegmentType is the type of the record that opens every file (segment)
// of the log. Its fields: segment, the segment's number (1, 2, ... across
// rotations); oldest_segment, the oldest segment the log keeps at that
// point. Its prev is the hash of the previous segment's last record.
const SegmentType = "audit.segment"

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
			return fmt.Errorf("audit log %s ends with a damaged record (%v): run `mcpcage audit verify` and move the file aside", files[i], err)
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
	for _, n := range rotated(l.o.Path) {
		if n > l.o.Keep {
			if err := os.Remove(fmt.Sprintf("%s.%d", l.o.Path, n)); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
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
