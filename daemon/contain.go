package daemon

import (
	"log/slog"
	"runtime/debug"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/daemon/relay"
)

// Where a bug of mcpcaged's was caught (the label of
// mcpcage_internal_errors_total).
const (
	internalInSession     = "session"      // a relay loop: the session ended
	internalInRequest     = "request"      // a connection's request (a session's start included): it failed
	internalInKernelEvent = "kernel_event" // a kernel event: its session's server was stopped
)

// containRequest, deferred first by the goroutine serving a connection,
// keeps a panic in serving it (a bug of mcpcaged's) from ending the
// daemon and every other session with it: that connection is closed (by
// the handler's own deferred calls, which run first), the bug is logged
// with its stack and counted, and the daemon goes on.
func (d *Daemon) containRequest(log *slog.Logger) {
	v := recover()
	if v == nil {
		return
	}
	log.Error("internal error: the request failed and its connection was closed; mcpcaged goes on (please report this)", "panic", relay.PanicText(v), "stack", string(debug.Stack()))
	d.metrics.InternalErrors.WithLabelValues(internalInRequest).Inc()
}

// containedKernelEvent is onKernelEvent on the one goroutine that reads
// every session's kernel events: a panic in dealing with one event (a bug
// of mcpcaged's, on paths and arguments a sandbox chooses) would end the
// daemon, and with it every session. It is logged and counted, the
// event's session has its server stopped (what the event should have
// enforced may not have been: fail closed), and the reader goes on.
func (d *Daemon) containedKernelEvent(ev bpf.Event) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		d.log.Error("internal error dealing with a kernel event: its session's server is stopped; mcpcaged goes on (please report this)",
			"kind", ev.Kind.String(), "cgroup", ev.Cgroup, "panic", relay.PanicText(v), "stack", string(debug.Stack()))
		d.metrics.InternalErrors.WithLabelValues(internalInKernelEvent).Inc()
		if !d.mu.TryLock() { // held where it panicked: the session is not found, its server runs on
			d.log.Error("the session of the kernel event could not be found to stop its server", "cgroup", ev.Cgroup)
			return
		}
		s := d.byCgroup[ev.Cgroup]
		d.mu.Unlock()
		if s != nil {
			s.internalEnd.Store(true)
			s.stopServer()
		}
	}()
	d.onKernelEvent(ev)
}

// beforeSessionEvent runs for each kernel event of a session, before it is
// dealt with: a no-op (no allocation on this path), but the failpoints
// build panics there for MCPCAGE_FAILPOINT_PANIC=kernel:KIND PATH.
var beforeSessionEvent = func(*bpf.Event) {}

// failpointPanic panics where a test asks it to (where: "decide" a
// request of name, "result" of a call of tool name, "op" a request of op
// name): a no-op, but the integration tests' failpoints build sets it
// (failpoint_on.go) to show what a bug of mcpcaged's does there.
var failpointPanic = func(where, name string) {}
