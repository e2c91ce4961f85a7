package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/relay"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/internal/contain"
)

// Where a bug of mcpcaged's was caught (the label of
// mcpcage_internal_errors_total).
const (
	internalInSession     = "session"      // a relay loop: the session ended
	internalInRequest     = "request"      // a connection's request (a session's start included): it failed
	internalInKernelEvent = "kernel_event" // a kernel event: its session's server was stopped
	internalInBackground  = "background"   // a daemon-wide loop or task: the item at hand was dropped, the loop started again
)

// containRequest, deferred first by the goroutine serving a connection,
// keeps a panic in serving it (a bug of mcpcaged's) from ending the
// daemon and every other session with it: that connection is closed (by
// the handler's own deferred calls, which run first), the bug is logged
// with its stack and counted, and the daemon goes on.
func (d *Daemon) containRequest(log *slog.Logger) {
	p, ok := contain.Recovered(recover())
	if !ok {
		return
	}
	log.Error("internal error: the request failed and its connection was closed; mcpcaged goes on (please report this)", "panic", p.Value, "stack", p.Stack)
	d.metrics.InternalErrors.WithLabelValues(internalInRequest).Inc()
}

// containedKernelEvent is onKernelEvent on the one goroutine that reads
// every session's kernel events: a panic in dealing with one event (a bug
// of mcpcaged's, on paths and arguments a sandbox chooses) would end the
// daemon, and with it every session. It is logged and counted, the
// event's session has its server stopped (what the event should have
// enforced may not have been: fail closed), and the reader goes on.
func (d *Daemon) containedKernelEvent(ev bpf.Event) {
	contain.Run(func() { d.onKernelEvent(ev) }, func(p contain.Panic) {
		d.log.Error("internal error dealing with a kernel event: its session's server is stopped; mcpcaged goes on (please report this)",
			"kind", ev.Kind.String(), "cgroup", ev.Cgroup, "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInKernelEvent).Inc()
		if !d.mu.TryLock() { // held where it panicked: the session is not found, its server runs on
			d.log.Error("the session of the kernel event could not be found to stop its server", "cgroup", ev.Cgroup)
			return
		}
		s := d.byCgroup[ev.Cgroup]
		d.mu.Unlock()
		if s != nil {
			s.endForBug() // in the background: this reader serves every session
		}
	})
}

// beforeSessionEvent runs for each kernel event of a session, before it is
// dealt with: a no-op (no allocation on this path), but the failpoints
// build panics there for MCPCAGE_FAILPOINT_PANIC=kernel:KIND PATH.
var beforeSessionEvent = func(*bpf.Event) {}

// failpointPanic panics where a test asks it to (where: "decide" a
// request of name, "result" of a call of tool name, "op" a request of op
// name, "answer" to a question about tool name, "started" a session of
// server name once its server runs): a no-op, but the integration tests' failpoints build sets it
// (failpoint_on.go) to show what a bug of mcpcaged's does there.
var failpointPanic = func(where, name string) {}

// endForBug ends session s after a bug of mcpcaged's in dealing with it
// (a panic in one of its goroutines or in one of its kernel events): its
// end says internal_error, and its server is stopped (fail closed: what
// the goroutine should have done for the session may not have been
// done, and a server that ignores the end of its stdin must not outlive
// the session). The stop runs in the background: the caller may be a
// loop other sessions need, and a stop waits up to stop_timeout.
func (s *session) endForBug() {
	s.internalEnd.Store(true)
	if s.handle != nil {
		go s.stopServer()
	}
}

// endBrokenSession ends session s, whose server runs, when a bug of
// mcpcaged's (a panic, which goes on to the connection's handler once
// this returns) cut runSession short before the session was accounted
// for. Fail closed, as a session's end always does: the client is let
// go of and told, the server is stopped, and the end is recorded
// (internal_error) before the container is removed. If the panic came
// while the end was being recorded, only the container is left to
// remove. A second bug here is logged, not let loose.
func (d *Daemon) endBrokenSession(ctx context.Context, s *session, fw *api.FrameWriter, stdio *passedStdio, c *net.UnixConn) {
	contain.Run(func() {
		s.internalEnd.Store(true)
		if s.accounting.Load() {
			s.handle.Kill(context.WithoutCancel(ctx))
			<-s.handle.Exited()
			if err := s.handle.Remove(context.WithoutCancel(ctx)); err != nil {
				s.log.Error("cleanup failed", "err", err)
			}
			return
		}
		s.over.Store(true)
		s.stopServer()
		if stdio != nil {
			stdio.abandon()
		}
		exit := s.exitOf(relay.End{Reason: api.ExitInternal, Err: relay.ErrInternal})
		if b, err := json.Marshal(exit); err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(closeWait))
			_ = fw.Write(api.FrameExit, b)
		}
		if stdio != nil {
			stdio.expire()
		}
		d.accountSession(context.WithoutCancel(ctx), s, exit)
	}, func(p contain.Panic) {
		s.log.Error("internal error ending a session after an internal error: its container may be left; mcpcaged goes on (please report this)", "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
	})
}

// goLoop runs loop, one of the daemon's own loops that every session
// needs (sweepers, watchers), on a goroutine of its own until it returns
// or ctx ends. A panic in it (a bug of mcpcaged's) is logged and counted,
// and the loop is started again (later each time it panics again soon):
// the item it was dealing with may be dropped, the daemon goes on.
func (d *Daemon) goLoop(ctx context.Context, name string, loop func()) {
	go contain.Loop(ctx, contain.DefaultRestart, loop, d.reportBackground(name))
}

// reportBackground logs and counts a panic in the daemon's own work.
func (d *Daemon) reportBackground(name string) func(contain.Panic) {
	return func(p contain.Panic) {
		d.log.Error("internal error in mcpcaged's own work: what it was doing is dropped and it goes on (please report this)", "in", name, "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInBackground).Inc()
	}
}
