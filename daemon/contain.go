package daemon

import (
	"context"
	"encoding/json"
	"errors"
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
	s := d.sessionOfEvent(ev) // found before: the panic may come with d.mu busy
	if s == nil {
		return
	}
	contain.Run(func() { d.onSessionEvent(s, ev) }, func(p contain.Panic) {
		d.log.Error("internal error dealing with a kernel event: its session's server is stopped; mcpcaged goes on (please report this)",
			"session", s.id, "kind", ev.Kind.String(), "cgroup", ev.Cgroup, "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInKernelEvent).Inc()
		s.endForBug()
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

// badKernelEvent is told of a kernel event that could not be read (its
// session unknown): a bug of mcpcaged's among them is counted.
func (d *Daemon) badKernelEvent(err error) {
	if errors.Is(err, bpf.ErrEventBug) {
		d.log.Error("kernel event lost", "err", err)
		d.metrics.InternalErrors.WithLabelValues(internalInKernelEvent).Inc()
		return
	}
	d.log.Warn("kernel event", "err", err)
}

// forSession runs fn, work of the daemon's own for session s (what),
// contained: a bug there (a panic) ends s (endForBug) and nothing else,
// and whoever called goes on.
func (d *Daemon) forSession(s *session, what string, fn func()) {
	contain.Run(fn, func(p contain.Panic) {
		d.log.Error("internal error dealing with a session: it ends; mcpcaged goes on (please report this)", "session", s.id, "in", what, "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
		s.endForBug()
	})
}

// endForBug ends session s after a bug of mcpcaged's in dealing with it
// (a panic in one of its goroutines or in one of its kernel events): its
// end says internal_error, and its server is stopped (fail closed: what
// the goroutine should have done for the session may not have been
// done, and a server that ignores the end of its stdin must not outlive
// the session). The stop is the session's own (stopOnRequest, which
// runs once the server has started): the caller may be a loop other
// sessions need, a stop waits up to stop_timeout, and the server may not
// have started yet.
func (s *session) endForBug() {
	s.internalEnd.Store(true)
	s.stopForPolicy()
}

// endBrokenSession ends session s, whose server runs, when a bug of
// mcpcaged's (a panic, which goes on to the connection's handler once
// this returns) cut runSession short before the session was accounted
// for. Fail closed, as a session's end always does: the relay and the
// session's goroutines end, the client is let go of and told, the server
// is stopped, and the end is recorded (internal_error) before the
// container is removed. If the panic came while the session was being
// ended, what is left of that is done; if it came while the end was
// being recorded, only the container is left to remove. A second bug
// here is logged, and the container removed if it can be.
func (d *Daemon) endBrokenSession(ctx context.Context, s *session, fw *api.FrameWriter, stdio *passedStdio, c *net.UnixConn) {
	ctx = context.WithoutCancel(ctx)
	contain.Run(func() {
		s.relay.Abort()
		s.endForBug()
		if s.accounting.Load() {
			d.abandonInstance(ctx, s)
			return
		}
		s.over.Store(true)
		if stdio != nil {
			stdio.abandon()
		}
		s.relay.CloseClientIn() // a framed shim's pump stops
		end := relay.End{Reason: api.ExitInternal, Err: relay.ErrInternal}
		var exit api.Exit
		if s.ending.Load() {
			s.stop()
			exit = s.exitOf(end)
		} else {
			exit = d.endSession(ctx, s, end)
		}
		if b, err := json.Marshal(exit); err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(closeWait))
			_ = fw.Write(api.FrameExit, b)
		}
		if stdio != nil {
			stdio.expire()
		}
		d.accountSession(ctx, s, exit)
	}, func(p contain.Panic) {
		d.log.Error("internal error ending a session after an internal error: its container is removed if it can be; mcpcaged goes on (please report this)", "session", s.id, "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
		contain.Run(func() { d.abandonInstance(ctx, s) }, func(p contain.Panic) {
			d.log.Error("internal error removing the container of a session: it is left (the next start removes it)", "session", s.id, "panic", p.Value)
		})
	})
}

// abandonInstance kills s's server and removes its container, after a
// bug of mcpcaged's left the session without its usual end.
func (d *Daemon) abandonInstance(ctx context.Context, s *session) {
	h := s.handle
	if h == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	h.Kill(ctx)
	<-h.Exited()
	if err := h.Remove(ctx); err != nil {
		s.log.Error("cleanup failed", "err", err)
	}
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
