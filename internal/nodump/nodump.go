// Package nodump makes the process that imports it non-dumpable as it
// starts (PR_SET_DUMPABLE 0), before its main runs: no other process of
// the same user may then read its memory, trace it or open its files
// through /proc/PID/fd. mcpcage run holds the MCP client's pipes until
// the daemon has them; an agent that keeps other programs of its user
// away by being non-dumpable itself would otherwise be reachable through
// its shim (a writer opened on /proc/SHIM/fd/0 sends the daemon tool
// calls as the agent's, and keeps doing so after the shim lets go).
//
// A fresh exec is dumpable until this runs (the Go runtime starts
// first): about a millisecond in which a program watching for the shim
// could still open its files. Installing mcpcage setgid closes that too
// (the kernel makes such an exec non-dumpable from the start), at the
// cost of a group of its own; see the README's agent identity section.
package nodump

import "golang.org/x/sys/unix"

func init() {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) // fails only on kernels without prctl: nothing to do then
}
