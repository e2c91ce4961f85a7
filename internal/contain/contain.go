// Package contain keeps a bug of mcpcaged's (a panic in one goroutine)
// from ending the daemon and every session with it.
//
// A panic caught here has already run the goroutine's own deferred
// calls; what is left to the caller is to fail closed for the work the
// goroutine did not finish (end its session, stop its server, fail its
// request) and to say so. What cannot be left in a known state after a
// panic (the audit log's writer, which holds the chain) is deliberately
// not contained: the daemon ends and its restart resumes from the file.
package contain

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"
)

// maxValue bounds a panic's value as reported: it may quote what a peer
// sent.
const maxValue = 256

// Panic is what a contained panic reports.
type Panic struct {
	Value string // the panic's value as text, cut to a bounded length
	Stack string // the stack of the goroutine where it panicked
}

// Text is the reported text of panic value v, cut to a bounded length.
func Text(v any) string {
	text := fmt.Sprint(v)
	if len(text) > maxValue {
		text = text[:maxValue] + "…"
	}
	return text
}

// Recovered turns v, a value recover returned, into a Panic; ok is false
// when v is nil (nothing panicked). Call it in the deferred function that
// called recover, so that the stack is the panicking goroutine's.
func Recovered(v any) (p Panic, ok bool) {
	if v == nil {
		return Panic{}, false
	}
	return Panic{Value: Text(v), Stack: string(debug.Stack())}, true
}

// Run runs fn and reports whether it returned normally. When fn panics,
// onPanic is told (after fn's deferred calls have run) and Run returns
// false.
func Run(fn func(), onPanic func(Panic)) (ok bool) {
	defer func() {
		if p, panicked := Recovered(recover()); panicked {
			ok = false
			onPanic(p)
		}
	}()
	fn()
	return true
}

// Go runs fn on a goroutine of its own, contained: see Run.
func Go(fn func(), onPanic func(Panic)) {
	go Run(fn, onPanic)
}

// Restart bounds how soon Loop starts a loop again after a panic: from
// First, doubled at each panic in a row up to Most.
type Restart struct {
	First, Most time.Duration
}

// DefaultRestart restarts a loop after 100 ms, then up to every 10 s
// while it keeps panicking.
var DefaultRestart = Restart{First: 100 * time.Millisecond, Most: 10 * time.Second}

// Loop runs loop until it returns normally or ctx ends, starting it
// again after each panic (reported to onPanic first). It is for a
// daemon-wide loop whose one item at hand when it panicked may be lost,
// but which every session needs to go on (sweepers, watchers). A loop
// that panics again soon is started again later each time (r), so that
// a bug on every item costs log lines, not a core; one that ran for
// longer than r.Most before it panicked starts again after r.First.
func Loop(ctx context.Context, r Restart, loop func(), onPanic func(Panic)) {
	wait := r.First
	for {
		began := time.Now()
		if Run(loop, onPanic) {
			return
		}
		if time.Since(began) > r.Most {
			wait = r.First
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, r.Most)
	}
}
