package daemon

import "github.com/mcpcage/mcpcage/api"

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
const maxKernelDenialRecords = 100

// admitKernelDenial reports whether the denial of type typ at target is
// recorded one by one; when not, it is counted (recordBudget).
func (s *session) admitKernelDenial(typ, target string) bool {
	return s.kernelDenials.admit(maxKernelDenialRecords, typ+" "+target)
}

// recordKernelDeniedOverflow writes s's kernel.denied_overflow record, if
// any (count, recorded, and denied: the counts by type and target); the
// session's tasks are gone by then.
func (d *Daemon) recordKernelDeniedOverflow(s *session) {
	d.recordOverflow(s, &s.kernelDenials, overflowOf{api.RecordKernelDeniedOverflow, maxKernelDenialRecords, "denied", "kernel denials"})
}
