package relay

import (
	"fmt"
	"io"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/contain"
)

// ErrInternal ends a session whose relay hit a bug of mcpcaged's (a
// panic in one of its loops): that session ends, fail-closed, and every
// other session and the daemon go on. The panic and its stack are in
// mcpcaged's log; the session's end says only this.
var ErrInternal = fmt.Errorf("mcpcaged hit an internal error in this session and ended it (%s; the details are in mcpcaged's log: please report them)", api.ExitInternal)

// contained runs loop (one of the relay's three loops, or a goroutine of
// the session's, see Go) and turns a panic in it into the end of the
// session: recorded as ExitInternal, OnInternalError told, the server's
// stdin closed (its stop ladder starts once the relay is done), and then
// drain, which keeps the peers of the loops that still run from waiting
// on the one that stopped.
func (r *Relay) contained(name string, loop func(), drain func()) {
	contain.Run(loop, func(p contain.Panic) {
		r.log.Error("internal error: the session ends; mcpcaged goes on (please report this)", "loop", name, "panic", p.Value, "stack", p.Stack)
		r.Abort()
		if r.opts.OnInternalError != nil {
			r.opts.OnInternalError()
		}
		if drain != nil {
			drain()
		}
	})
}

// Abort ends the session's relay for a bug of mcpcaged's, wherever it
// was caught: the relay ends as ExitInternal whatever else ends it, and
// the server's stdin is closed (now, or as soon as it is attached).
func (r *Relay) Abort() {
	r.bug.Store(true)
	r.finish(api.ExitInternal, ErrInternal)
	r.closeServerIn()
}

// Go runs fn on a goroutine of its own that belongs to the session (a
// parked request, a question put to the user), contained as the relay's
// loops are: a panic in fn (a bug of mcpcaged's) ends this session as
// ExitInternal, and neither the daemon nor any other session.
func (r *Relay) Go(name string, fn func()) { go r.contained(name, fn, nil) }

// CloseClientIn closes the client's input: what still writes to it (a
// framed shim's pump) stops. For a session ended by a bug before its
// relay ran (Run closes it otherwise).
func (r *Relay) CloseClientIn() { _ = r.streams.ClientIn.Close() }

// discard reads in until it ends.
func discard(in io.Reader) func() {
	return func() { _, _ = io.Copy(io.Discard, in) }
}
