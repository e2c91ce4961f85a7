package daemon

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/mcpcage/mcpcage/daemon/consent"
)

// A server that says its list changed (notifications/tools/list_changed)
// after every list keeps a client listing as fast as it answers, and each
// list was a record of what the agent was shown and what was hidden (up to
// 64 KiB with a thousand names), every time. A session records each list
// once per kind and content (the names shown and hidden, in order); an
// identical later list is counted (session.end's lists_repeated). At most
// maxListRecords different lists are recorded one by one; the rest are
// counted too (lists_unrecorded). What the agent was shown is in the log
// once per session; how often it was shown it again is a count.
const maxListRecords = 256

// listRecords are the lists a session has recorded.
type listRecords struct {
	mu         sync.Mutex
	seen       map[[sha256.Size]byte]struct{}
	repeated   int64 // lists identical to one recorded
	unrecorded int64 // different lists beyond maxListRecords
}

// admit says whether the list of kind k that showed shown and hid hidden
// is recorded; when not, it is counted.
func (l *listRecords) admit(k consent.Kind, shown, hidden []string) bool {
	key := listDigest(k, shown, hidden)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[key]; ok {
		l.repeated++
		return false
	}
	if len(l.seen) >= maxListRecords {
		l.unrecorded++
		return false
	}
	if l.seen == nil {
		l.seen = map[[sha256.Size]byte]struct{}{}
	}
	l.seen[key] = struct{}{}
	return true
}

// counts are the lists counted instead of recorded: identical to one
// recorded, and beyond the bound.
func (l *listRecords) counts() (repeated, unrecorded int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.repeated, l.unrecorded
}

// listDigest is the digest of a list's kind and names, each name
// length-prefixed (no two lists share one).
func listDigest(k consent.Kind, shown, hidden []string) [sha256.Size]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
	h.Write([]byte(k))
	for _, names := range [][]string{shown, hidden} {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(names)))])
		for _, name := range names {
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(name)))])
			h.Write([]byte(name))
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
