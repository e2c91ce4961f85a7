package daemon

import (
	"sync"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/pins"
)

// A server chooses how often its definitions change, and a client lists
// again at every notifications/tools/list_changed the server sends: one
// whose 1,000 tools changed their descriptions at every list made 1,000
// tool.changed records a list (each up to about 1.7 KB with its bounded
// diff), as often as the client asked, enough to rotate every user's
// history out of the audit log. A session records a held-back definition
// once per pin, approved digest and definition shown (a server
// alternating two definitions is recorded once for each). The first
// held-back definition of each pin in a session is always recorded (a
// server has at most pins.MaxTools pins), so that no server can hide a
// rug pull behind others; after it, a session records at most
// maxPinChangeRecords more one by one, and counts the rest by pin in one
// record at its end (tool.changed_overflow). What is held back does not
// change: the budget bounds the records, not the checks.
const (
	maxPinChangeRecords = 256
	maxPinChangesSeen   = 1024
	maxPinFirsts        = 2 * pins.MaxTools // pins whose first held-back definition the session recorded
)

// fullDef is what the session was shown, for a definition held back
// because the pins of its server are full (pins.MaxTools).
const fullDef = "full"

// pinChanges are the held-back definitions a session has recorded.
type pinChanges struct {
	mu     sync.Mutex
	seen   map[string]struct{} // pin name, approved digest, what was shown (NUL between)
	firsts map[string]struct{} // pins with a held-back definition recorded
	warned bool                // the budget's end was logged
	budget recordBudget
}

// admit says whether the held-back definition of pin name is new to the
// session (fresh: not seen as approved and shown before), and whether it
// is recorded one by one: the pin's first, or within the budget. Past
// maxPinChangesSeen definitions every one is fresh, and past
// maxPinFirsts pins the budget alone bounds them.
func (c *pinChanges) admit(name, approved, shown string) (fresh, record bool, first bool) {
	key := name + "\x00" + approved + "\x00" + shown
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[key]; ok {
		return false, false, false
	}
	if len(c.seen) < maxPinChangesSeen {
		if c.seen == nil {
			c.seen = map[string]struct{}{}
		}
		c.seen[key] = struct{}{}
	}
	if _, ok := c.firsts[name]; !ok && len(c.firsts) < maxPinFirsts {
		if c.firsts == nil {
			c.firsts = map[string]struct{}{}
		}
		c.firsts[name] = struct{}{}
		return true, true, false
	}
	record = c.budget.admit(maxPinChangeRecords, name)
	first = !record && !c.warned
	c.warned = c.warned || first
	return true, record, first
}

// recordsChange says whether the session writes the tool.changed record of
// the held-back definition of pin name, approved as approved, shown as
// shown (a digest, or why it was held back without a pin: unreadableDef
// or fullDef); fresh says whether the session saw it before.
// The first one past the budget is logged.
func (p *sessionPolicy) recordsChange(name, approved, shown string) (fresh, record bool) {
	fresh, record, first := p.s.pinChanges.admit(name, approved, shown)
	if first {
		p.s.log.Warn("a server changed its definitions again more often than a session records one by one: the rest are counted, and recorded at the session's end (tool.changed_overflow)", "recorded", maxPinChangeRecords)
	}
	if fresh && !record {
		p.s.log.Debug("tool definition held back", "pin_name", name, "unrecorded", true)
	}
	return fresh, record
}

// recordPinChangeOverflow writes s's tool.changed_overflow record, if any
// (count, recorded, and changed: the counts by pin).
func (d *Daemon) recordPinChangeOverflow(s *session) {
	d.recordOverflow(s, &s.pinChanges.budget, overflowOf{api.RecordToolChangedOverflow, maxPinChangeRecords, "changed", "held-back tool definitions"})
}
