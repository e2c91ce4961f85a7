package daemon

import (
	"log/slog"
	"runtime/debug"

	"github.com/mcpcage/mcpcage/daemon/relay"
)

// Where a bug of mcpcaged's was caught (the label of
// mcpcage_internal_errors_total).
const (
	internalInSession = "session" // a relay loop: the session ended
	internalInRequest = "request" // a connection's request (a session's start included): it failed
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

// failpointPanic panics where a test asks it to (where: "decide" a
// request of name, "result" of a call of tool name, "op" a request of op
// name): a no-op, but the integration tests' failpoints build sets it
// (failpoint_on.go) to show what a bug of mcpcaged's does there.
var failpointPanic = func(where, name string) {}
