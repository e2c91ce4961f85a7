package daemon

import (
	"sort"
	"sync"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// A server lives on after the denials it can repeat at will (a connect
// the egress list refuses, a bind or listen, an open BPF LSM refused):
// one looping on connect(2) made about 200,000 records a second, which
// rotated every user's audit history out of the log within a minute while
// `audit verify` stayed green, and flooded the journal past its rate limit
// (found by a red-team helper). Such denials are recorded and logged one by
// one up to maxKernelDenialRecords per session; beyond that they are
// counted by what was denied (type and address or path, at most
// maxFoldedKeys of them) and recorded once, at the session's end
// (kernel.denied_overflow). Metrics and traces still see every one.
const (
	maxKernelDenialRecords = 100
	maxFoldedKeys          = 32
)

// foldedOther is the key under which denials beyond maxFoldedKeys keys
// are counted.
const foldedOther = "(other)"

// kernelDenials counts a session's repeatable kernel denials.
type kernelDenials struct {
	mu     sync.Mutex
	n      int64            // denials seen
	folded map[string]int64 // beyond the records: by type and target
	over   int64            // beyond the records
}

// record reports whether the denial of type typ at target is recorded
// one by one; when not, it is counted.
func (k *kernelDenials) record(typ, target string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.n++
	if k.n <= maxKernelDenialRecords {
		return true
	}
	if k.folded == nil {
		k.folded = map[string]int64{}
	}
	key := typ + " " + target
	if _, ok := k.folded[key]; !ok && len(k.folded) >= maxFoldedKeys {
		key = foldedOther
	}
	k.folded[key]++
	k.over++
	return false
}

// kernelDeniedOverflowRecord is the kernel.denied_overflow record of the denials not
// recorded one by one, or nil when there were none.
func (s *session) kernelDeniedOverflowRecord() audit.Record {
	k := &s.kernelDenials
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.over == 0 {
		return nil
	}
	keys := make([]string, 0, len(k.folded))
	for key := range k.folded {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	denied := make([]map[string]any, 0, len(keys))
	for _, key := range keys {
		denied = append(denied, map[string]any{"what": key, "count": k.folded[key]})
	}
	return s.record(api.RecordKernelDeniedOverflow, audit.Record{"count": k.over, "recorded": maxKernelDenialRecords, "denied": denied})
}

// recordKernelDeniedOverflow writes s's kernel.denied_overflow record, if
// any; the session's tasks are gone by then.
func (d *Daemon) recordKernelDeniedOverflow(s *session) {
	rec := s.kernelDeniedOverflowRecord()
	if rec == nil {
		return
	}
	if err := d.audit.Append(rec); err != nil {
		s.log.Error("kernel denials not recorded in the audit log", "count", rec["count"], "err", err)
	}
}
