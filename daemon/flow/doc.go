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
// detector finding, or suspect), at most MaxFingerprints fingerprints,
// and the registry at most MaxRuns runs. A run lives while one of its
// sessions does, and after that while its client process is alive (see
// Runs.Sweep): taint survives the tainting session's end, not the agent.
// Contents are never kept, only their digest, size and what was found.
package flow
