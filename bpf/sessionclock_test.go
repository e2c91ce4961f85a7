package bpf

import (
	"bufio"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/mcpcage/mcpcage/internal/testenv"
	"golang.org/x/sys/unix"
)

// sessionClocks are the two clocks the fold window can be timed by.
var sessionClocks = []struct {
	name string
	opts Options
}{
	{"ticks", Options{}},
	{"monotonic clock", Options{noTicks: true}},
}

// The loader's measured tick is the kernel's: 1/CONFIG_HZ, from the
// kernel's own configuration (snapTick makes it exact). Told not to use it, the cage says so.
func TestSessionClockIsTheKernelsTick(t *testing.T) {
	hz, err := kernelHZ()
	testenv.Require(t, err == nil, "the kernel's configuration (/proc/config.gz or /boot/config-RELEASE) with CONFIG_HZ")
	want := time.Second / time.Duration(hz)
	for _, fc := range sessionClocks {
		t.Run(fc.name, func(t *testing.T) {
			c, _ := loadWith(t, fc.opts)
			tick, err := c.SessionClock()
			if fc.opts.noTicks {
				if !errors.Is(err, errTurnedOff) || tick != 0 {
					t.Fatalf("SessionClock() = %v, %v; want 0 and %v", tick, err, errTurnedOff)
				}
				return
			}
			if err != nil {
				t.Fatalf("FoldClock: %v", err)
			}
			if tick != want {
				t.Fatalf("measured a tick of %v; CONFIG_HZ=%d makes it %v", tick, hz, want)
			}
			t.Logf("tick %v (CONFIG_HZ=%d: %v); fold window %d ticks, budget window %d", tick, hz, want, inTicks(foldWindow, tick), inTicks(budgetWindow, tick))
		})
	}
}

// A file opened again and again by one process is recorded once a
// second, by either clock: never sooner than the fold window (a second,
// less a tick) after its last record, and again at the first open after
// it, carrying the repeats folded in between.
func TestRepeatedOpensRecordedEverySecond(t *testing.T) {
	for _, fc := range sessionClocks {
		t.Run(fc.name, func(t *testing.T) {
			c, parent := loadWith(t, fc.opts)
			session, cgid := sessionForTest(t, c, parent, Policy{})
			file := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var records []Event
			if err := c.Events(func(e Event) {
				// The name the opener gave (the kernel's path cuts the
				// test directory's long name).
				if e.Cgroup == cgid && e.Kind == KindFileOpen && e.Hint == file {
					mu.Lock()
					records = append(records, e)
					mu.Unlock()
				}
			}, func(err error) { t.Error(err) }); err != nil {
				t.Fatal(err)
			}
			// Opens without a pause for 2.6 s: records at about 0, 1 and
			// 2 s.
			if err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-for", "MCPCAGE_BENCH_N=2600", "MCPCAGE_BENCH_ADDR="+file); err != nil {
				t.Fatal(err)
			}
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			tick, _ := c.SessionClock() // 0 on the monotonic clock
			mu.Lock()
			defer mu.Unlock()
			if len(records) != 3 {
				t.Fatalf("2.6 s of opens made %d records, want 3 (one a second)", len(records))
			}
			// The lower bound is the window's promise (less a tick more:
			// the record's time is the monotonic clock's, the window's
			// the tick counter's, which may lag it by a tick); the upper
			// allows for the opener being descheduled on a loaded
			// machine.
			least, most := foldWindow-2*tick-time.Millisecond, foldWindow+tick+400*time.Millisecond
			for i := 1; i < len(records); i++ {
				gap := records[i].Time.Sub(records[i-1].Time)
				if gap < least || gap > most {
					t.Errorf("record %d came %v after the one before, want %v..%v", i, gap, least, most)
				}
				if records[i].Repeats == 0 {
					t.Errorf("record %d carries no repeats: the opens folded in the second before it are lost", i)
				}
				t.Logf("record %d: %v after the one before, %d repeats", i, gap, records[i].Repeats)
			}
		})
	}
}

// A session's events are held to its budget of 2000 per 100 ms window
// by either clock: a process that fails opens without a pause for a
// second (each failed open an event) has about ten windows' worth
// recorded and the rest throttled. A window the clock never ended would
// record 2000 in all; one that ended at every event, all of them.
func TestEventBudgetWindowsByEitherClock(t *testing.T) {
	for _, sc := range sessionClocks {
		t.Run(sc.name, func(t *testing.T) {
			got, throttled, ring, _ := failedOpensRecorded(t, sc.opts, "open-for", 1000)
			t.Logf("a second of failed opens: %d recorded, %d throttled, %d lost to a full ring", got, throttled, ring)
			// Ten or eleven windows of 2000 (a window starts at the first
			// event after the last one ended); as few as five where the
			// reader fell behind and the ring took no more.
			if throttled == 0 || got < 5*2000 || got > 12*2000 {
				t.Fatalf("%d events recorded and %d throttled in a second of failed opens; want 10000..24000 recorded (2000 per 100 ms) and the rest throttled", got, throttled)
			}
		})
	}
}

// A session that keeps within its budget (bursts of 1800 events, 100 ms
// apart) loses none, by either clock: a budget window never outlasts
// 100 ms, so none straddles two bursts (with the tick counter and a
// strict comparison, windows of 100-104 ms throttled about 15% of such a
// session's events).
func TestEventBudgetKeepsEverythingWithinIt(t *testing.T) {
	for _, sc := range sessionClocks {
		t.Run(sc.name, func(t *testing.T) {
			const n = 10 * 1800
			// A loaded machine can stretch a burst (preempted in its
			// middle, one burst's tail and the next one's head share a
			// window): a run that lost events is run again, and the test
			// fails when every one of 5 did. A window that is too long
			// loses events in every run (2625 of 18000 at fbf57e6).
			for attempt := 1; ; attempt++ {
				got, throttled, ring, said := failedOpensRecorded(t, sc.opts, "open-paced", n)
				lines := strings.Split(strings.TrimSpace(said), "\n") // the figure is the last line
				longest, err := strconv.Atoi(strings.TrimPrefix(lines[len(lines)-1], longestBurst))
				if err != nil {
					t.Fatalf("the child said %q, want %s and microseconds", said, longestBurst)
				}
				if got == n && throttled == 0 && ring == 0 {
					t.Logf("run %d: all %d recorded (the longest burst %d µs)", attempt, n, longest)
					break
				}
				if attempt == 5 {
					t.Fatalf("%d failed opens in bursts within the budget, 5 runs: the last %d recorded, %d throttled, %d lost to a full ring (its longest burst %d µs); want all recorded in one run", n, got, throttled, ring, longest)
				}
				t.Logf("run %d: %d of %d recorded, %d throttled, %d lost to a full ring (the longest burst %d µs); again", attempt, got, n, throttled, ring, longest)
			}
		})
	}
}

// failedOpensRecorded runs the child loop (n: its MCPCAGE_BENCH_N) on
// missingPath in a session of a cage loaded with o, and says how many of
// its failed opens were recorded, and the cage's throttled and ring
// losses.
func failedOpensRecorded(t *testing.T, o Options, loop string, n int) (recorded int64, throttled, ring uint64, said string) {
	t.Helper()
	c, parent := loadWith(t, o)
	session, cgid := sessionForTest(t, c, parent, Policy{})
	var events atomic.Int64
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind == KindFileOpen && e.Hint == missingPath {
			events.Add(1)
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	cmd, release := loopChild(t, session, "MCPCAGE_BENCH_LOOP="+loop, "MCPCAGE_BENCH_N="+strconv.Itoa(n), "MCPCAGE_BENCH_ADDR="+missingPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	release()
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	ring, throttled, err = c.Lost()
	if err != nil {
		t.Fatal(err)
	}
	return events.Load(), throttled, ring, stderr.String()
}

// longestBurst starts the open-paced loop's last line on stderr: its
// longest burst of 1800 opens, in µs.
const longestBurst = "longest burst µs: "

// The loaded programs that share the sessions map run on one clock: the
// cage's and the bind programs' constants agree (BPF LSM, the third, is
// refused by this kernel).
func TestLoadedProgramsShareTheClock(t *testing.T) {
	for _, sc := range sessionClocks {
		t.Run(sc.name, func(t *testing.T) {
			c, _ := loadWith(t, sc.opts)
			if _, err := c.EnableBind(); err != nil {
				t.Fatal(err)
			}
			tick, _ := c.SessionClock()
			var cageTicks, bindTicks bool
			var cageSpan, bindSpan uint64
			for _, get := range []error{c.objs.ClockInTicks.Get(&cageTicks), c.bind.ClockInTicks.Get(&bindTicks),
				c.objs.WindowSpan.Get(&cageSpan), c.bind.WindowSpan.Get(&bindSpan)} {
				if get != nil {
					t.Fatal(get)
				}
			}
			wantSpan := uint64(budgetWindow)
			if tick > 0 {
				wantSpan = inTicks(budgetWindow, tick)
			}
			if cageTicks != (tick > 0) || bindTicks != cageTicks || cageSpan != wantSpan || bindSpan != cageSpan {
				t.Fatalf("clock_in_ticks cage %v bind %v, window_span cage %d bind %d; want %v and %d in both (tick %v)",
					cageTicks, bindTicks, cageSpan, bindSpan, tick > 0, wantSpan, tick)
			}
		})
	}
}

// Every object whose programs share the sessions map takes the sessions'
// clock: a session's budget window started by one program and read by
// another is then in one unit.
func TestEverySessionsProgramTakesTheClock(t *testing.T) {
	for _, obj := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{
		{"cage", loadCage}, {"cageDirect", loadCageDirect}, {"bind", loadBind}, {"lsm", loadLsm},
	} {
		t.Run(obj.name, func(t *testing.T) {
			spec, err := obj.load()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := spec.Maps["sessions"]; !ok {
				t.Fatalf("%s has no sessions map", obj.name)
			}
			if err := setSessionClock(spec, 4*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			var ticks bool
			if err := spec.Variables["clock_in_ticks"].Get(&ticks); err != nil || !ticks {
				t.Fatalf("clock_in_ticks = %v, %v after setSessionClock with a tick", ticks, err)
			}
		})
	}
	// The one object that loads no sessions' program: the stamper.
	spec, err := loadStamp()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Maps["sessions"]; ok {
		t.Fatal("stamp.c shares the sessions map: give its loader setSessionClock and list it above")
	}
}

// snapTick takes a measurement to the CONFIG_HZ it is within 8% of, and
// refuses one that is near none.
func TestSnapTick(t *testing.T) {
	for _, tc := range []struct {
		measured, want time.Duration
		ok             bool
	}{
		{3991447 * time.Nanosecond, 4 * time.Millisecond, true},
		{4300 * time.Microsecond, 4 * time.Millisecond, true},
		{1070 * time.Microsecond, time.Millisecond, true},
		{3200 * time.Microsecond, time.Second / 300, true},
		{9300 * time.Microsecond, 10 * time.Millisecond, true},
		{3650 * time.Microsecond, 0, false}, // 8.75% off 250 Hz, 9.5% off 300 Hz
		{5 * time.Millisecond, 0, false},    // 200 Hz: no x86 or arm64 kernel
		{20 * time.Millisecond, 0, false},
		{0, 0, false},
	} {
		if got, ok := snapTick(tc.measured); got != tc.want || ok != tc.ok {
			t.Errorf("snapTick(%v) = %v, %v; want %v, %v", tc.measured, got, ok, tc.want, tc.ok)
		}
	}
}

// kernelHZ reads CONFIG_HZ from the running kernel's configuration.
func kernelHZ() (int, error) {
	var r io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer func() { _ = f.Close() }()
		z, err := gzip.NewReader(f)
		if err != nil {
			return 0, err
		}
		r = z
	} else {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return 0, err
		}
		f, err := os.Open("/boot/config-" + unix.ByteSliceToString(u.Release[:]))
		if err != nil {
			return 0, err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			return strconv.Atoi(v)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CONFIG_HZ")
}

// A move of the tick counter seen late (the loader preempted between
// two samples, on a loaded machine) is not taken for the move's time. A
// simulated clock with a 4 ms tick, whose moves are seen up to 2.4 ms
// late: the old measurement (six moves in a row, timed at the first
// sample after each) gave 4.8 ms when the first four were seen 0-2.4 ms
// late, one more each time, which no CONFIG_HZ is near (in CI beside
// the integration tests: 4.83 ms), and a rule that took only moves seen
// within 50 µs found too few of them in CI. Now each end of the
// measurement times the move seen soonest of four, 100 ms apart.
func TestMeasureTickSkipsLateMoves(t *testing.T) {
	testenv.RequireRoot(t)
	clock, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = clock.Close() }()
	const tick = 4 * time.Millisecond
	for _, tc := range []struct {
		name string
		late func(move int) time.Duration // how late the sample after each move comes
	}{
		{"the first four late, one more each time", func(m int) time.Duration {
			if m < 4 {
				return time.Duration(m) * 800 * time.Microsecond
			}
			return 0
		}},
		{"three of every four late, none within 50 µs", func(m int) time.Duration {
			return time.Duration(m%4)*600*time.Microsecond + 80*time.Microsecond
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Second
			moves := 0
			put := func() {
				if err := clock.Put(uint32(0), clockSample{Jiffies: uint64(now / tick), NS: uint64(now)}); err != nil {
					t.Fatal(err)
				}
			}
			sample := func() {
				next := now + 5*time.Microsecond
				if next/tick != now/tick { // the counter moves before this sample
					next += tc.late(moves)
					moves++
				}
				now = next
				put()
			}
			pause := func(d time.Duration) { now += d }
			got, err := measureTick(sample, clock, pause)
			if err != nil || got != tick {
				t.Fatalf("measureTick = %v, %v; want %v", got, err, tick)
			}
		})
	}
}
