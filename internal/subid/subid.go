// Package subid says whose a subordinate uid is: /etc/subuid (subuid(5))
// gives users ranges of uids that newuidmap(1) lets them map into a user
// namespace of their own, so one user can act as any of its subordinate
// uids (65,536 by default) towards the rest of the system, and be seen by
// a daemon as that many users.
//
// The file has one range a line:
//
//	OWNER:START:COUNT
//
// where OWNER is a user name or a numeric uid (as newuidmap matches it:
// the caller's name, or its uid), START the first uid of the range and
// COUNT how many. Lines that do not have this shape (comments, blank
// lines, fields that are not numbers, a COUNT of 0, a range past the last
// uid) are ignored, as the shadow tools ignore them.
//
// A uid is a subordinate uid of OWNER (Table.OwnerOf) when it lies in one
// of OWNER's ranges, OWNER is in the user database and the uid itself is
// not: a uid with an entry of its own is an account, whatever ranges
// hold it. When ranges of several owners hold a uid, the first line
// wins. A subordinate uid is never chased further (the owner of an
// owner): newuidmap maps only the caller's own ranges.
//
// Caveats: only the file is read, not subordinate ids an NSS module
// serves (nsswitch.conf "subid:", e.g. SSSD); the file is read again when
// its size, mtime, ctime or inode change, at most maxFileBytes of it.
package subid

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPath is the subordinate uid file of shadow's tools.
const DefaultPath = "/etc/subuid"

// maxFileBytes bounds a read of the file: 4 MiB is about 150,000 ranges,
// far more than a host has users.
const maxFileBytes = 4 << 20

// Range is one line of the file.
type Range struct {
	Owner string // a user name or a numeric uid, as written
	Start uint32
	Count uint32
}

// Contains reports whether uid lies in r.
func (r Range) Contains(uid uint32) bool {
	return uid >= r.Start && uint64(uid) < uint64(r.Start)+uint64(r.Count)
}

// Parse returns the ranges of a subordinate uid file, in order; lines
// that are not ranges are left out.
func Parse(b []byte) []Range {
	var out []Range
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if r, ok := parseLine(string(bytes.TrimSpace(line))); ok {
			out = append(out, r)
		}
	}
	return out
}

// parseLine parses OWNER:START:COUNT.
func parseLine(line string) (Range, bool) {
	f := strings.Split(line, ":")
	if len(f) != 3 || f[0] == "" || strings.HasPrefix(f[0], "#") {
		return Range{}, false
	}
	start, err1 := strconv.ParseUint(f[1], 10, 32)
	count, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil || count == 0 || start+count-1 > 1<<32-1 {
		return Range{}, false
	}
	return Range{Owner: f[0], Start: uint32(start), Count: uint32(count)}, true
}

// Owner is the user a subordinate uid belongs to.
type Owner struct {
	UID  uint32
	Name string // the user's name; "uid N" when the database has none for it
}

// Table is a subordinate uid file, read again when it changes. Its zero
// value is not usable: use New.
type Table struct {
	path string
	// Look-ups in the user database (os/user's by default; tests set
	// their own): an error is "no such user".
	lookupID   func(uid string) (*user.User, error)
	lookupName func(name string) (*user.User, error)

	mu     sync.Mutex
	stamp  stamp
	read   bool // stamp and ranges are those of a read
	ranges []Range
	err    error // the last stat's or read's failure, if any (the ranges are then empty)
}

// stamp is what tells that the file changed.
type stamp struct {
	size         int64
	mtime, ctime time.Time
	ino          uint64
	missing      bool
}

// New returns the table of the file at path, which need not exist (then
// no uid is subordinate).
func New(path string) *Table {
	return &Table{path: path, lookupID: user.LookupId, lookupName: user.Lookup}
}

// OwnerOf returns the owner of uid when uid is a subordinate uid; ok is
// false for an account of its own, a uid no range holds, and one whose
// ranges' owners the user database does not know. An error reading the
// file (other than its absence) is returned once, by the call that found
// the file changed, with ok false; until the file changes again no uid is
// subordinate.
//
// Any failed look-up of uid in the user database (an NSS source that is
// down, too) counts as no entry: the range says whose uid it is, and
// bounds are better charged to its owner than not at all.
func (t *Table) OwnerOf(uid uint32) (o Owner, ok bool, err error) {
	ranges, err := t.current()
	if err != nil {
		return Owner{}, false, err
	}
	for _, r := range ranges {
		if !r.Contains(uid) {
			continue
		}
		if o, ok = t.owner(r.Owner); ok {
			break
		}
	}
	if !ok {
		return Owner{}, false, nil
	}
	if _, err := t.lookupID(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return Owner{}, false, nil // an account of its own
	}
	return o, true, nil
}

// owner resolves a range's owner field.
func (t *Table) owner(field string) (Owner, bool) {
	if n, err := strconv.ParseUint(field, 10, 32); err == nil {
		o := Owner{UID: uint32(n), Name: "uid " + field}
		if u, err := t.lookupID(field); err == nil {
			o.Name = u.Username
		}
		return o, true
	}
	u, err := t.lookupName(field)
	if err != nil {
		return Owner{}, false // nobody of that name can map the range
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Owner{}, false
	}
	return Owner{UID: uint32(n), Name: u.Username}, true
}

// current returns the file's ranges, read again when it changed; the
// error of a read is returned by the call that made it only.
func (t *Table) current() ([]Range, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now, err := statOf(t.path)
	if err != nil {
		if t.err != nil && t.err.Error() == err.Error() {
			return nil, nil // told already
		}
		t.stamp, t.ranges, t.err = stamp{}, nil, err
		return nil, err
	}
	if t.read && now == t.stamp {
		return t.ranges, nil
	}
	t.stamp, t.ranges, t.err, t.read = now, nil, nil, true
	if now.missing {
		return nil, nil
	}
	b, err := readBounded(t.path)
	if err != nil {
		t.err = err
		return nil, err
	}
	t.ranges = Parse(b)
	return t.ranges, nil
}

// statOf stamps the file at path; a missing file has its own stamp.
func statOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return stamp{missing: true}, nil
	}
	if err != nil {
		return stamp{}, fmt.Errorf("subordinate uids: %w", err)
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino, s.ctime = st.Ino, time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return s, nil
}

// readBounded reads at most maxFileBytes of path; a longer file is an
// error (a truncated one could end mid-line and drop ranges).
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("subordinate uids: %w", err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("subordinate uids: read %s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("subordinate uids: %s is larger than %d bytes, more than mcpcaged reads: no uid is taken for a subordinate one until it is smaller", path, maxFileBytes)
	}
	return b, nil
}
