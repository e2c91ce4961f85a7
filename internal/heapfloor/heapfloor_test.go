package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		live, roots, headroom uint64
		want                  int
	}{
		{"small heap gets the headroom", 3 * mib, 0, 8 * mib, 266},
		{"stacks and globals count", 3 * mib, 1 * mib, 8 * mib, 200},
		{"held to the runtime's scaled minimum", 2 * mib, 0, 32 * mib, 850},
		{"the headroom is the live heap", 32 * mib, 0, 32 * mib, 100},
		{"a large heap keeps the default", 256 * mib, 0, 32 * mib, 100},
		{"nothing live yet: the first goal is the headroom", 0, 0, 8 * mib, 200},
		{"a tiny heap: the goal is about the headroom", 100, 0, 8 * mib, 200},
		{"a headroom under the runtime's minimum", 1 * mib, 0, 2 * mib, 100},
		{"large stacks, little heap", 2 * mib, 4 * mib, 8 * mib, 133},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, tc.roots, tc.headroom); got != tc.want {
				t.Fatalf("Percent(%d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.headroom, got, tc.want)
			}
		})
	}
}

func TestStartRespectsTheOperatorsGOGC(t *testing.T) {
	before := readPercent(t)
	for _, tc := range []struct {
		name     string
		headroom uint64
		gogc     string
	}{
		{"GOGC set", 32 * mib, "50"},
		{"GOGC off", 32 * mib, "off"},
		{"no headroom", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f := Start(tc.headroom, tc.gogc); f != nil {
				f.Stop()
				t.Fatal("the floor started")
			}
			runtime.GC()
			if got := readPercent(t); got != before {
				t.Fatalf("GC percent %d, want it left at %d", got, before)
			}
		})
	}
}

// retained keeps a large allocation live across collections.
var retained []byte

// TestFloorFollowsTheLiveHeap: with a small live heap the goal sits the
// headroom above it; once the live heap is larger than the headroom the
// default percent is back; Stop restores the percent from before Start.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	const headroom = 64 * mib
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	f := Start(headroom, "")
	if f == nil {
		t.Fatal("the floor did not start")
	}
	t.Cleanup(f.Stop)

	// The test binary's live heap is far below 64 MiB.
	waitPercent(t, "a small live heap", func(p int) bool { return p > 200 })
	// About live + headroom: not less, and not the runtime's minimum
	// scaled far past it (its stacks and globals count in its goal).
	if live, goal := read(t, liveMetric), read(t, "/gc/heap/goal:bytes"); goal < live+headroom*9/10 || goal > live+headroom*3/2 {
		t.Fatalf("heap goal %d with %d live: want about %d (live + headroom)", goal, live, live+headroom)
	}

	retained = make([]byte, 4*headroom)
	for i := range retained {
		retained[i] = 1 // touched: really live
	}
	waitPercent(t, "a live heap 4× the headroom", func(p int) bool { return p == defaultPercent })

	retained = nil
	waitPercent(t, "the large heap released", func(p int) bool { return p > 200 })

	f.Stop()
	if got := readPercent(t); got != 100 {
		t.Fatalf("after Stop the GC percent is %d, want 100 (the percent before Start)", got)
	}
	runtime.GC()
	runtime.GC()
	if got := readPercent(t); got != 100 {
		t.Fatalf("a collection after Stop set the GC percent to %d", got)
	}
}

// waitPercent collects until the GC percent satisfies ok (the floor
// sets it from a cleanup that runs after a cycle, on its own goroutine).
func waitPercent(t *testing.T, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		p := readPercent(t)
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: GC percent still %d after 10 s of collections (live heap %d bytes)", what, p, read(t, liveMetric))
		}
		runtime.Gosched()
	}
}

func readPercent(t *testing.T) int { return int(read(t, "/gc/gogc:percent")) }

func read(t *testing.T, name string) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("metric %s is not available", name)
	}
	return s[0].Value.Uint64()
}
