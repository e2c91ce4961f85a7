// Package heapfloor keeps the Go collector from running every few
// megabytes of allocation when the live heap is small.
//
// The collector's default (GOGC=100) starts the next cycle when the heap
// has grown by as much as was live after the last one. mcpcaged's live
// heap is a few MiB, while every relayed call allocates a few KiB of
// records and messages: at thousands of calls a second that is a
// collection every few tens of milliseconds, about a tenth of the
// daemon's CPU (bench/profile-2026-12-02.md). A floor gives the heap a
// fixed headroom instead: after each cycle the GC percent is set so that
// the next goal is at least live + headroom (and never below GOGC=100),
// which costs at most the headroom in memory and leaves large heaps
// exactly as the default treats them.
//
// An operator's own GOGC (the environment variable) wins: the floor is
// then not started.
package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// defaultPercent is the collector's default GC percent, the floor's
// lowest.
const defaultPercent = 100

// maxPercent bounds the percent the floor sets, whatever the live heap.
const maxPercent = 100_000

// The runtime's goal is live + (live + stacks + globals) × percent / 100:
// the heap the last cycle marked live, and the stacks and globals it
// scanned.
const (
	liveMetric    = "/gc/heap/live:bytes"
	stackMetric   = "/gc/scan/stack:bytes"
	globalsMetric = "/gc/scan/globals:bytes"
)

// Floor is a running floor; Stop ends it.
type Floor struct {
	headroom uint64
	mu       sync.Mutex // orders a cycle's percent against Stop's
	stopped  bool
	sample   []metrics.Sample
	previous int // the percent before Start, restored by Stop
}

// Start keeps the heap goal at least headroom bytes above the live heap
// from now on. It returns nil, and changes nothing, when gogcEnv (the
// value of $GOGC) is set or headroom is 0.
func Start(headroom uint64, gogcEnv string) *Floor {
	if gogcEnv != "" || headroom == 0 {
		return nil
	}
	f := &Floor{headroom: headroom, sample: []metrics.Sample{{Name: liveMetric}, {Name: stackMetric}, {Name: globalsMetric}}}
	f.previous = debug.SetGCPercent(f.percent())
	f.arm()
	return f
}

// Stop ends the floor and gives the collector back the percent it had
// before Start. A nil Floor is stopped already.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(f.previous)
	}
}

// percent is the GC percent that puts the next goal at live + headroom,
// within [defaultPercent, maxPercent].
func (f *Floor) percent() int {
	metrics.Read(f.sample)
	var v [3]uint64
	for i, s := range f.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	return Percent(v[0], v[1]+v[2], f.headroom)
}

// runtimeHeapMinimum is the Go runtime's smallest heap goal at GOGC=100
// (defaultHeapMinimum, 4 MiB); the runtime scales it with the percent,
// so a high percent raises the smallest goal too.
const runtimeHeapMinimum = 4 << 20

// Percent is the GC percent whose goal is live + headroom, given the
// live heap and the stacks and globals (roots) the runtime adds to it
// when it scales by the percent; within [100, 100000]. The runtime's
// smallest goal grows with the percent (runtimeHeapMinimum × percent /
// 100), so the percent is also held to what keeps that under live +
// headroom: with little or nothing live (before the first collection) a
// percent from the ratio alone would put the first collection gigabytes
// away.
func Percent(live, roots, headroom uint64) int {
	p := uint64(maxPercent)
	if live+roots > 0 {
		p = headroom * 100 / (live + roots)
	}
	p = min(p, (live+headroom)*100/runtimeHeapMinimum, maxPercent)
	return int(max(p, defaultPercent))
}

// sentinel is allocated for each cycle: the cleanup that runs once a
// cycle found it unreachable sets the percent for the next one and
// allocates the next sentinel. It holds a pointer so that it is never
// batched with other small objects by the tiny allocator (a cleanup on
// such an object may never run).
type sentinel struct {
	_ *byte
	_ [8]byte
}

// arm allocates this cycle's sentinel.
func (f *Floor) arm() {
	s := new(sentinel)
	runtime.AddCleanup(s, func(f *Floor) { f.cycled() }, f)
}

// cycled runs after a collection: it sets the percent from the live
// heap that collection found, and arms the next sentinel.
func (f *Floor) cycled() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	debug.SetGCPercent(f.percent())
	f.arm()
}
