// Package flow is the data-flow guard's memory of one agent run: every
// session one client process opened (the agent's pid and start time, for
// one user). It keeps what reached the agent in that run (the influence
// trail), which labels tainted it (the first result from a server with
// each label, with the call that brought it), fingerprints of the
// high-entropy strings those results carried, and decides a call by the
// [[flow]] rules of the configuration.
//
// Everything is in memory and bounded: a run keeps its last RecentMax
// influences and its last FlaggedMax flagged ones (labelled, with a
// detector finding, or suspect) and at most MaxFingerprints
// fingerprints. A run lives while one of its sessions does, and after
// that while its client process is alive (see Runs.Sweep): taint
// survives the tainting session's end, not the agent. A user keeps at
// most MaxUserRuns runs without sessions (past it their oldest goes);
// past MaxRuns, runs without sessions whose process is gone are dropped
// at once, and no live client's run is dropped for another user's.
//
// The client process is the one that started the shim (the agent of
// package identity): a client that starts each server through a wrapper
// process of its own has one run per server.
// Contents are never kept, only their digest, size and what was found.
package flow
