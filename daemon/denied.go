package daemon

import (
	"time"

	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/sandbox/seccompnotify"
)

// maxDeniedRecords bounds the sandbox.denied records of one session, so
// a server looping on a refused call cannot flood the audit log.
const maxDeniedRecords = 20

// onDeniedSyscall records a system call the seccomp profile refused. It
// runs while the caller waits for the answer, so it never blocks on the
// audit log.
// A bug there (a panic, on a call and arguments the server chose) ends
// that session only, and the call is still refused.
func (d *Daemon) onDeniedSyscall(e seccompnotify.Event) {
	d.mu.Lock()
	s := d.sessions[e.Metadata]
	d.mu.Unlock()
	if s == nil {
		d.log.Warn("sandbox denied a system call", "container", e.Container, "syscall", e.Syscall, "pid", e.Pid)
		return
	}
	d.forSession(s, "refused system call", func() { d.recordDeniedSyscall(s, e) })
}

// recordDeniedSyscall is onDeniedSyscall for the call's session s.
func (d *Daemon) recordDeniedSyscall(s *session, e seccompnotify.Event) {
	n := s.deniedSyscalls.Add(1)
	args := e.SafeArgs()
	var calls []string
	if s.relay != nil {
		for _, c := range s.relay.CallsAt(time.Now(), string(request.ToolsCall)) {
			calls = append(calls, c.ID)
		}
	}
	if n > maxDeniedRecords {
		s.log.Debug("sandbox denied a system call", "syscall", e.Syscall, "args", args, "pid", e.Pid, "action", "EPERM", "tool_calls", calls, "unrecorded", true)
		return
	}
	s.log.Warn("sandbox denied a system call", "syscall", e.Syscall, "args", args, "pid", e.Pid, "action", "EPERM", "tool_calls", calls)
	d.audit.AppendAsync(s.sandboxDeniedRecord(e.Syscall, args, e.Pid, calls))
}

// recordDeniedOverflow writes the count of refused calls beyond
// maxDeniedRecords, if any; the session's tasks are gone by then.
func (d *Daemon) recordDeniedOverflow(s *session) {
	if over := s.deniedSyscalls.Load() - maxDeniedRecords; over > 0 {
		if err := d.audit.Append(s.sandboxDeniedOverflowRecord(over, maxDeniedRecords)); err != nil {
			s.log.Error("denied system calls not recorded in the audit log", "count", over, "err", err)
		}
	}
}
