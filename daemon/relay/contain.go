package relay

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/mcpcage/mcpcage/api"
)

// ErrInternal ends a session whose relay hit a bug of mcpcaged's (a
// panic in one of its loops): that session ends, fail-closed, and every
// other session and the daemon go on. The panic and its stack are in
// mcpcaged's log; the session's end says only this.
var ErrInternal = fmt.Errorf("mcpcaged hit an internal error in this session and ended it (%s; the details are in mcpcaged's log: please report them)", api.ExitInternal)

// maxPanicLog bounds the panic's value in the log line: it may quote
// what a peer sent.
const maxPanicLog = 256

// PanicText is what a log line says of panic value v: its text, cut to a
// bounded length.
func PanicText(v any) string {
	text := fmt.Sprint(v)
	if len(text) > maxPanicLog {
		text = text[:maxPanicLog] + "…"
	}
	return text
}

// contained runs loop (one of the relay's three) and turns a panic in it
// into the end of the session: recorded as ExitInternal, the server's
// stdin closed (its stop ladder starts once the relay is done), and then
// drain, which keeps the peers of the loops that still run from waiting
// on the one that stopped.
func (r *Relay) contained(name string, loop func(), drain func()) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		r.log.Error("internal error: the session ends; mcpcaged goes on (please report this)", "loop", name, "panic", PanicText(v), "stack", string(debug.Stack()))
		if r.opts.OnInternalError != nil {
			r.opts.OnInternalError()
		}
		r.bug.Store(true)
		r.finish(api.ExitInternal, ErrInternal)
		r.closeServerIn()
		if drain != nil {
			drain()
		}
	}()
	loop()
}

// discard reads in until it ends.
func discard(in io.Reader) func() {
	return func() { _, _ = io.Copy(io.Discard, in) }
}
