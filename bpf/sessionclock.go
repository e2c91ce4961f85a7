package bpf

import (
	"errors"
	"fmt"
	"slices"
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

// tickEdges is how many moves of the tick counter measureTick times.
const tickEdges = 6

// tickSpinLimit bounds measureTick's wait: six ticks of CONFIG_HZ=100
// take 60 ms.
const tickSpinLimit = 250 * time.Millisecond

// tightEdge is the widest gap between the samples before and after a
// move of the tick counter that measureTick takes as the move's time: a
// wider one (the loader preempted between them, on a loaded machine) is
// skipped. 50 µs is 5% of the shortest tick (CONFIG_HZ=1000), within
// snapTick's 8%.
const tightEdge = 50 * time.Microsecond

// clockSample is one reading of cage.c's calib_clock.
type clockSample struct {
	Jiffies uint64
	NS      uint64
}

// measureTick measures the kernel's tick: sample calls the calibration
// program (which reads the tick counter and the monotonic clock together
// into clock), again and again until the counter has moved tickEdges
// times; each span between two moves, divided by the ticks it covers, is
// one estimate. A move is seen at the first sample after it, so an
// estimate is off by a sample's time (a few µs); a move seen more than
// tightEdge after the sample before it (the loader preempted in between)
// is not used. Where the estimates agree, the tick is the time from the
// first move to the last divided by the ticks between; else their
// median.
func measureTick(sample func(), clock *ebpf.Map) (time.Duration, error) {
	read := func() (clockSample, error) {
		sample()
		var c clockSample
		if err := clock.Lookup(uint32(0), &c); err != nil {
			return c, fmt.Errorf("read the calibration clocks: %w", err)
		}
		return c, nil
	}
	prev, err := read()
	if err != nil {
		return 0, err
	}
	if prev.NS == 0 {
		return 0, errors.New("the calibration program did not run")
	}
	var edges []clockSample
	late := 0 // moves seen too long after the sample before them
	deadline := time.Now().Add(tickSpinLimit)
	for len(edges) < tickEdges {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the kernel's tick counter moved %d times in %v between samples at most %v apart, and %d times between samples further apart (want %d)",
				len(edges), tickSpinLimit, tightEdge, late, tickEdges)
		}
		c, err := read()
		if err != nil {
			return 0, err
		}
		if c.Jiffies != prev.Jiffies {
			if time.Duration(c.NS-prev.NS) <= tightEdge {
				edges = append(edges, c)
			} else {
				late++
			}
		}
		prev = c
	}
	var spans []time.Duration
	for i := 1; i < len(edges); i++ {
		if edges[i].Jiffies < edges[i-1].Jiffies || edges[i].NS < edges[i-1].NS {
			return 0, errors.New("the kernel's tick counter or clock went backwards")
		}
		ticks := edges[i].Jiffies - edges[i-1].Jiffies
		spans = append(spans, time.Duration((edges[i].NS-edges[i-1].NS)/ticks))
	}
	sorted := slices.Sorted(slices.Values(spans))
	tick := sorted[len(sorted)/2]
	// Spans that agree (none sampled late): the whole stretch divided
	// by its ticks, where a sample's lateness counts once, not per span.
	if sorted[0] > tick*9/10 && sorted[len(sorted)-1] < tick*11/10 {
		first, last := edges[0], edges[len(edges)-1]
		tick = time.Duration((last.NS - first.NS) / (last.Jiffies - first.Jiffies))
	}
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
