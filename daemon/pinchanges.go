package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/pins"
)

// A server chooses how often its definitions change, and a client lists
// again at every notifications/tools/list_changed the server sends: one
// whose 1,000 tools changed their descriptions at every list made 1,000
// tool.changed records a list (each up to about 1.7 KB with its bounded
// diff), as often as the client asked, enough to rotate every user's
// history out of the audit log.
//
// A session records a held-back definition once per pin, approved digest
// and definition shown (a server alternating two definitions is recorded
// once for each). The first changed definition of each pin and approval
// in a session is always recorded, with its diff, so that no server can
// hide a rug pull behind others: pins are bounded by the pin store
// (pins.MaxTools a server). Everything else (a pin's later changes, and
// what is held back without a pin, whose names the server makes up at
// will: an unreadable definition, a tool named like a UI resource, a pin
// store full) shares a budget of maxPinChangeRecords records one by one;
// the rest are counted by pin in one record at the session's end
// (tool.changed_overflow). What is held back does not change: the budget
// bounds the records, not the checks.
const (
	maxPinChangeRecords = 256
	maxPinChangesSeen   = 1024
	maxPinFirsts        = 2 * pins.MaxTools // pins and approvals whose first change the session recorded
)

// heldKind is what a held-back definition is of: a record of one kind
// never stands for a record of another under the same name (a tool named
// "ui://app (listed)" is not that UI resource's list entry).
type heldKind uint8

const (
	heldTool         heldKind = iota // a tool's definition
	heldInstructions                 // the server's instructions
	heldResource                     // a UI resource's content (resources/read)
	heldListed                       // a UI resource's resources/list entry
)

// String names the kind in the overflow record's counts.
func (k heldKind) String() string {
	switch k {
	case heldInstructions:
		return "instructions"
	case heldResource:
		return "resource"
	case heldListed:
		return "list entry"
	}
	return "tool"
}

// heldBack is a held-back definition, as a session records it.
type heldBack struct {
	kind     heldKind
	name     string // the pin's name (for a list entry, pins.Listed)
	approved string // the approved digest; "" for none
	shown    string // the digest of what the session was shown; unreadable (unreadableShown) or overflowDef (the pins are full)
	pinned   bool   // name has a pin (approved, or pending under quarantine): the pin store bounds these names
}

// unreadableShown is heldBack.shown for a definition that cannot be pinned
// (raw, as the server sent it): a later different one is another.
func unreadableShown(raw []byte) string {
	sum := sha256.Sum256(raw)
	return unreadableDef + ":" + hex.EncodeToString(sum[:])
}

// key is h's key in the session's sets: a digest, so that a server's long
// names cost the session 32 bytes each.
func (h heldBack) key(withShown bool) [sha256.Size]byte {
	b := make([]byte, 0, 1+len(h.name)+len(h.approved)+len(h.shown)+2)
	b = append(b, byte(h.kind))
	b = append(append(b, h.name...), 0)
	b = append(b, h.approved...)
	if withShown {
		b = append(append(b, 0), h.shown...)
	}
	return sha256.Sum256(b)
}

// pinChanges are the held-back definitions a session has recorded.
type pinChanges struct {
	mu     sync.Mutex
	seen   map[[sha256.Size]byte]struct{} // definitions seen (heldBack.key with what was shown)
	firsts map[[sha256.Size]byte]struct{} // pins and approvals whose first change was recorded
	warned bool                           // the budget's end was logged
	budget recordBudget
}

// admit says whether h is new to the session (fresh: not seen before), and
// whether it is recorded one by one: a pin's first change (for its
// approval), or within the budget; first says it is the first the budget
// refused. Past maxPinChangesSeen definitions every one is fresh, and
// past maxPinFirsts pins and approvals the budget alone bounds them.
func (c *pinChanges) admit(h heldBack) (fresh, record, first bool) {
	key := h.key(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[key]; ok {
		return false, false, false
	}
	if len(c.seen) < maxPinChangesSeen {
		if c.seen == nil {
			c.seen = map[[sha256.Size]byte]struct{}{}
		}
		c.seen[key] = struct{}{}
	}
	if h.pinned {
		pin := h.key(false)
		if _, ok := c.firsts[pin]; !ok && len(c.firsts) < maxPinFirsts {
			if c.firsts == nil {
				c.firsts = map[[sha256.Size]byte]struct{}{}
			}
			c.firsts[pin] = struct{}{}
			return true, true, false
		}
	}
	record = c.budget.admit(maxPinChangeRecords, h.kind.String()+" "+h.name)
	first = !record && !c.warned
	c.warned = c.warned || first
	return true, record, first
}

// recordsChange says whether the session writes the tool.changed record of
// the held-back definition h; fresh says whether the session saw it
// before. The first one past the budget is logged.
func (p *sessionPolicy) recordsChange(h heldBack) (fresh, record bool) {
	fresh, record, first := p.s.pinChanges.admit(h)
	if first {
		p.s.log.Warn("a server held back more definitions than a session records one by one: the rest are counted, and recorded at the session's end (tool.changed_overflow)", "recorded", maxPinChangeRecords)
	}
	if fresh && !record {
		p.s.log.Debug("definition held back", "kind", h.kind.String(), "pin_name", h.name, "unrecorded", true)
	}
	return fresh, record
}

// recordPinChangeOverflow writes s's tool.changed_overflow record, if any
// (count; recorded, the budget beyond each pin's first change; and
// changed: the counts by kind and pin).
func (d *Daemon) recordPinChangeOverflow(s *session) {
	d.recordOverflow(s, &s.pinChanges.budget, overflowOf{api.RecordToolChangedOverflow, maxPinChangeRecords, "changed", "held-back definitions"})
}
