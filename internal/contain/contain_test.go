package contain

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fn        func(deferred *bool)
		wantOK    bool
		wantValue string
	}{
		{"returns", func(deferred *bool) { defer func() { *deferred = true }() }, true, ""},
		{"panics with a string", func(deferred *bool) { defer func() { *deferred = true }(); panic("boom") }, false, "boom"},
		{"panics with an error", func(deferred *bool) {
			defer func() { *deferred = true }()
			panic(errors.New("an error value"))
		}, false, "an error value"},
		{"panics with a long value", func(deferred *bool) {
			defer func() { *deferred = true }()
			panic(strings.Repeat("x", 10000))
		}, false, strings.Repeat("x", maxValue) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var deferred, deferredFirst bool
			var got *Panic
			ok := Run(func() { tc.fn(&deferred) }, func(p Panic) {
				deferredFirst = deferred
				got = &p
			})
			if ok != tc.wantOK || !deferred {
				t.Fatalf("Run = %v (fn's deferred call ran: %v), want %v", ok, deferred, tc.wantOK)
			}
			if tc.wantOK {
				if got != nil {
					t.Fatalf("onPanic called for a normal return: %+v", got)
				}
				return
			}
			if got == nil || !strings.Contains(got.Value, tc.wantValue) || len(got.Value) > maxValue+len("…") {
				t.Fatalf("reported %+v, want a value with %q, bounded", got, tc.wantValue)
			}
			if !deferredFirst {
				t.Fatal("onPanic ran before fn's own deferred calls")
			}
			if !strings.Contains(got.Stack, "contain.TestRun") {
				t.Fatalf("the stack is not the panicking goroutine's:\n%s", got.Stack)
			}
		})
	}
}

func TestGo(t *testing.T) {
	reported := make(chan Panic, 1)
	Go(func() { panic("in a goroutine") }, func(p Panic) { reported <- p })
	select {
	case p := <-reported:
		if p.Value != "in a goroutine" {
			t.Fatalf("reported %q", p.Value)
		}
	case <-time.After(time.Minute):
		t.Fatal("the goroutine's panic was not reported")
	}
}

func TestLoop(t *testing.T) {
	fast := Restart{First: time.Millisecond, Most: 4 * time.Millisecond}
	t.Run("starts again after each panic until the loop returns", func(t *testing.T) {
		var runs, panics atomic.Int32
		Loop(context.Background(), fast, func() {
			if runs.Add(1) < 4 {
				panic("again")
			}
		}, func(Panic) { panics.Add(1) })
		if runs.Load() != 4 || panics.Load() != 3 {
			t.Fatalf("%d runs, %d panics; want 4 and 3", runs.Load(), panics.Load())
		}
	})
	t.Run("stops when its context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var panics atomic.Int32
		Loop(ctx, Restart{First: time.Hour, Most: time.Hour}, func() { panic("always") }, func(Panic) {
			panics.Add(1)
			cancel()
		})
		if panics.Load() != 1 {
			t.Fatalf("%d panics, want the loop ended after the first", panics.Load())
		}
	})
}
