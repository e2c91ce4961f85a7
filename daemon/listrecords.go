package daemon

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"

	"github.com/mcpcage/mcpcage/daemon/consent"
)

// A server that says its list changed (notifications/tools/list_changed)
// after every list keeps a client listing as fast as it answers, and each
// list was a record of what the agent was shown and what was hidden (up to
// 64 KiB with a thousand names), every time.
//
// A session records each list of a kind (tools, resources, prompts) once
// per content: the names shown and hidden, in order, under the digest the
// record carries (list_digest). A list shown again right after the same
// one is counted (session.end's lists_repeated); one shown again after
// another is a small record naming the digest of the recorded one
// (shown_again), at most maxListRecords of them per kind, then counted.
// Per kind, at most maxListRecords different lists are recorded whole;
// past that, a list is still recorded while it shows a name the session
// has not shown before (at most maxShownNames of them), so that no server
// can spend the bound and then show a tool unrecorded. The rest are counted
// (lists_unrecorded), and the first is logged.
const (
	maxListRecords = 256
	maxShownNames  = 2048
)

// listRecording is how a list is recorded.
type listRecording int

const (
	listCounted    listRecording = iota // not recorded: counted in session.end
	listWhole                           // recorded whole: names shown and hidden
	listShownAgain                      // recorded as the digest of the list recorded before
)

// listRecords are the lists a session has recorded.
type listRecords struct {
	mu         sync.Mutex
	kinds      map[consent.Kind]*kindLists
	repeated   int64 // lists shown again, not recorded
	unrecorded int64 // different lists not recorded
	warned     bool  // the first list not recorded was logged
}

// kindLists are the lists of one kind a session has recorded.
type kindLists struct {
	seen  map[[sha256.Size]byte]struct{} // recorded whole
	names map[[sha256.Size]byte]struct{} // names shown
	last  [sha256.Size]byte              // the last list of the kind
	again int                            // listShownAgain records
}

// admit says how the list of kind k that showed shown and hid hidden is
// recorded, under what digest, and whether it is the first one counted
// instead of recorded (to be logged).
func (l *listRecords) admit(k consent.Kind, shown, hidden []string) (how listRecording, digest string, firstCounted bool) {
	key := listDigest(k, shown, hidden)
	digest = hex.EncodeToString(key[:])
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = map[consent.Kind]*kindLists{}
	}
	kl := l.kinds[k]
	if kl == nil {
		kl = &kindLists{seen: map[[sha256.Size]byte]struct{}{}, names: map[[sha256.Size]byte]struct{}{}}
		l.kinds[k] = kl
	}
	defer func() { kl.last = key }()
	if _, ok := kl.seen[key]; ok {
		if kl.last != key && kl.again < maxListRecords {
			kl.again++
			return listShownAgain, digest, false
		}
		l.repeated++
		return listCounted, digest, false
	}
	news := false
	for _, name := range shown {
		n := sha256.Sum256([]byte(name))
		if _, ok := kl.names[n]; !ok && len(kl.names) < maxShownNames {
			kl.names[n] = struct{}{}
			news = true
		}
	}
	if len(kl.seen) < maxListRecords || news {
		kl.seen[key] = struct{}{}
		return listWhole, digest, false
	}
	l.unrecorded++
	firstCounted = !l.warned
	l.warned = true
	return listCounted, digest, firstCounted
}

// counts are the lists counted instead of recorded: shown again, and
// different ones past the bounds.
func (l *listRecords) counts() (repeated, unrecorded int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.repeated, l.unrecorded
}

// listDigest is the digest of a list's kind and names, each
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
