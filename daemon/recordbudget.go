package daemon

import (
	"sort"
	"strings"
	"sync"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// maxFoldedKeys bounds the keys a recordBudget counts by once it is spent;
// the rest are counted under foldedOther.
const maxFoldedKeys = 32

// foldedOther is the key under which records beyond maxFoldedKeys keys
// are counted.
const foldedOther = "(other)"

// maxFoldedKeyBytes bounds a key a recordBudget counts by (a server's
// names are as long as it likes); a longer one is cut, and marked so.
const maxFoldedKeyBytes = 256

// recordBudget bounds the records of one kind a session writes when a
// server can repeat what causes them at will: the first ones are written
// one by one; beyond the budget each is counted by a key (what it was
// about), and the counts are recorded once, at the session's end.
type recordBudget struct {
	mu     sync.Mutex
	n      int64            // records asked for
	folded map[string]int64 // beyond the budget: by key
	over   int64            // beyond the budget
}

// admit reports whether a record about key is written one by one, the
// first limit of the session; when not, it is counted.
func (b *recordBudget) admit(limit int64, key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	if b.n <= limit {
		return true
	}
	if b.folded == nil {
		b.folded = map[string]int64{}
	}
	if len(key) > maxFoldedKeyBytes {
		key = strings.ToValidUTF8(key[:maxFoldedKeyBytes], "") + "…"
	}
	if _, ok := b.folded[key]; !ok && len(b.folded) >= maxFoldedKeys {
		key = foldedOther
	}
	b.folded[key]++
	b.over++
	return false
}

// overflow is how many records were counted instead of written, and
// their counts by key in key order ({"what", "count"} each); 0 and nil
// when none were.
func (b *recordBudget) overflow() (int64, []map[string]any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over == 0 {
		return 0, nil
	}
	keys := make([]string, 0, len(b.folded))
	for key := range b.folded {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	counts := make([]map[string]any, 0, len(keys))
	for _, key := range keys {
		counts = append(counts, map[string]any{"what": key, "count": b.folded[key]})
	}
	return b.over, counts
}

// overflowOf describes a budget's overflow record.
type overflowOf struct {
	typ    api.RecordType
	limit  int64  // the records written one by one
	member string // the member that holds the counts by key
	what   string // the records, for the log
}

// recordOverflow writes session s's record of what b counted instead of
// recording (count, recorded, and the counts by key), if it counted
// anything; at the session's end.
func (d *Daemon) recordOverflow(s *session, b *recordBudget, o overflowOf) {
	over, counts := b.overflow()
	if over == 0 {
		return
	}
	if err := d.audit.Append(s.record(o.typ, audit.Record{"count": over, "recorded": o.limit, o.member: counts})); err != nil {
		s.log.Error(o.what+" not recorded in the audit log", "count", over, "err", err)
	}
}
