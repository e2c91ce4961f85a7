package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// The sessions' clock (cage.h's session_clock): cage.c folds a process's
// repeated opens of a file within a second of its last record
// (recent_opens), and every event is taken from its session's budget for
// a 100 ms window. Reading the time for those costs what the kernel's
// clock source costs: on a virtual machine whose clock reads are slow,
// about 100 ns of a folded open's 400. The kernel's tick counter
// (jiffies) is a load, but its unit is the tick, 1/CONFIG_HZ, which no
// interface gives a program: the loader measures it while the
// calibration program is attached, and the windows are then set in
// ticks. Where the measurement fails, the programs keep the monotonic
// clock. Every program sharing the sessions map (cage.c's two builds,
// bind.c, lsm.c) gets the same clock: setSessionClock.

// tickMoves is how many moves of the tick counter measureTick watches
// at each end of its measurement, to time the one seen soonest.
const tickMoves = 4

// tickStretch is the pause between the two ends of measureTick's
// measurement: a move seen late by d puts the tick off by d over the
// ticks in between (25 at CONFIG_HZ=250, 10 at 100).
const tickStretch = 100 * time.Millisecond

// tickSpinLimit bounds measureTick's wait for the moves at one end:
// four ticks of CONFIG_HZ=100 take 40 ms.
const tickSpinLimit = 250 * time.Millisecond

// clockSample is one reading of cage.c's calib_clock.
type clockSample struct {
	Jiffies uint64
	NS      uint64
}

// tickMove is a move of the tick counter to Jiffies, which happened
// between two samples: after the one at From and by the one at To.
type tickMove struct {
	Jiffies  uint64
	From, To uint64 // monotonic ns
}

// measureTick measures the kernel's tick: sample calls the calibration
// program (which reads the tick counter and the monotonic clock together
// into clock). It samples again and again until the counter has moved
// tickMoves times, and keeps the move whose samples before and after are
// closest (a sample is a few µs; a loader preempted between two, on a
// loaded machine, sees a move milliseconds late); then, after pause
// (time.Sleep; tickStretch), again. The tick is the time between the two
// moves' midpoints divided by the ticks between them: a move's
// uncertainty counts once over some 25 ticks, not over each one.
func measureTick(sample func(), clock *ebpf.Map, pause func(time.Duration)) (time.Duration, error) {
	read := func() (clockSample, error) {
		sample()
		var c clockSample
		if err := clock.Lookup(uint32(0), &c); err != nil {
			return c, fmt.Errorf("read the calibration clocks: %w", err)
		}
		return c, nil
	}
	// soonest watches tickMoves moves and returns the one seen soonest.
	soonest := func() (tickMove, error) {
		prev, err := read()
		if err != nil {
			return tickMove{}, err
		}
		if prev.NS == 0 {
			return tickMove{}, errors.New("the calibration program did not run")
		}
		var best tickMove
		deadline := time.Now().Add(tickSpinLimit)
		for moves := 0; moves < tickMoves; {
			if time.Now().After(deadline) {
				return tickMove{}, fmt.Errorf("the kernel's tick counter moved %d times in %v (want %d)", moves, tickSpinLimit, tickMoves)
			}
			c, err := read()
			if err != nil {
				return tickMove{}, err
			}
			if c.Jiffies < prev.Jiffies || c.NS < prev.NS {
				return tickMove{}, errors.New("the kernel's tick counter or clock went backwards")
			}
			if c.Jiffies != prev.Jiffies {
				m := tickMove{Jiffies: c.Jiffies, From: prev.NS, To: c.NS}
				if moves == 0 || m.To-m.From < best.To-best.From {
					best = m
				}
				moves++
			}
			prev = c
		}
		return best, nil
	}
	first, err := soonest()
	if err != nil {
		return 0, err
	}
	pause(tickStretch)
	last, err := soonest()
	if err != nil {
		return 0, err
	}
	if last.Jiffies <= first.Jiffies || last.From+last.To <= first.From+first.To {
		return 0, errors.New("the kernel's tick counter or clock went backwards")
	}
	mid := func(m tickMove) uint64 { return m.From/2 + m.To/2 }
	tick := time.Duration((mid(last) - mid(first)) / (last.Jiffies - first.Jiffies))
	exact, ok := snapTick(tick)
	if !ok {
		return 0, fmt.Errorf("measured a tick of %v, within 8%% of no CONFIG_HZ this architecture offers (%v)", tick, kernelHZs)
	}
	return exact, nil
}

// kernelHZs are the CONFIG_HZ values Linux offers on x86 and arm64, the
// architectures the programs are built for.
var kernelHZs = []int{100, 250, 300, 1000}

// snapTick is the tick of the CONFIG_HZ in kernelHZs within 8% of a
// measured tick (the tick's edges jitter by tens of µs on a virtual
// machine; the nearest two, 250 and 300, are 20% apart). A measurement
// near none is wrong: ok is false.
func snapTick(measured time.Duration) (tick time.Duration, ok bool) {
	for _, hz := range kernelHZs {
		exact := time.Second / time.Duration(hz)
		if d := measured - exact; d > -exact*8/100 && d < exact*8/100 {
			return exact, true
		}
	}
	return 0, false
}

// The windows session_clock times: cage.c's FOLD_NS and cage.h's
// WINDOW_NS.
const (
	foldWindow   = time.Second
	budgetWindow = 100 * time.Millisecond
)

// inTicks is d in ticks of length tick, rounded to the nearest.
func inTicks(d, tick time.Duration) uint64 {
	return uint64((d + tick/2) / tick)
}

// setSessionClock sets the clock of spec's programs: the tick counter
// where tick is known (not 0), else the monotonic clock. A spec without
// the fold window (a program that folds nothing) needs only the rest.
func setSessionClock(spec *ebpf.CollectionSpec, tick time.Duration) error {
	vars := map[string]any{"clock_in_ticks": false, "window_span": uint64(budgetWindow)}
	fold := uint64(foldWindow)
	if tick > 0 {
		vars["clock_in_ticks"], vars["window_span"] = true, inTicks(budgetWindow, tick)
		fold = inTicks(foldWindow, tick)
	}
	if _, ok := spec.Variables["fold_span"]; ok {
		vars["fold_span"] = fold
	}
	for name, v := range vars {
		sv, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set the sessions' clock: the eBPF object has no %s", name)
		}
		if err := sv.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}
