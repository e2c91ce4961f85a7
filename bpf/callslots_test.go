package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The two ways of moving a call epoch: a store into the mapped array,
// and the map update of kernels without mmapable arrays.
var epochPaths = []struct {
	name string
	opts Options
}{
	{"mapped", Options{}},
	{"syscall", Options{noMmap: true}},
}

// openPauseOpen runs the test binary in cgroup session: n opens of file,
// then, after between() ran, n more by the same process (within
// cage.c's FOLD_NS of the first: a few ms).
func openPauseOpen(t *testing.T, session string, n int, file string, between func()) {
	t.Helper()
	cmd, stdin, stdout := startChildIn(t, session, "MCPCAGE_BENCH_LOOP=open-pause", "MCPCAGE_BENCH_N="+strconv.Itoa(n), "MCPCAGE_BENCH_ADDR="+file)
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "paused\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("opener said %q (%v), want paused", line, err)
	}
	between()
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	_, _ = out.ReadString('\n') // the loop's timing line
	if err := cmd.Wait(); err != nil {
		t.Fatalf("opener: %v", err)
	}
}

// slotOf reads session cgid's call slot through the map (a syscall: not
// the daemon's mapping).
func slotOf(t *testing.T, c *Cage, cgid uint64) (uint32, cageCallSlot) {
	t.Helper()
	var s cageSession
	if err := c.objs.Sessions.Lookup(cgid, &s); err != nil {
		t.Fatalf("session %d: %v", cgid, err)
	}
	return s.CallSlot, slotAt(t, c, s.CallSlot)
}

func slotAt(t *testing.T, c *Cage, i uint32) cageCallSlot {
	t.Helper()
	var v cageCallSlot
	if err := c.objs.CallSlots.Lookup(i, &v); err != nil {
		t.Fatalf("call slot %d: %v", i, err)
	}
	return v
}

// A process's repeated opens of a file are folded while the session's
// call epoch stays, and recorded again once it moved (a tool call
// started or ended); a slot whose owner is another session (the kernel
// still running for a session whose slot was just handed on) folds
// nothing.
func TestCallEpochFolding(t *testing.T) {
	const n = 20
	tests := []struct {
		name    string
		between func(t *testing.T, c *Cage, cgid uint64, epoch *uint64)
		wantOne bool // one event for the 2n opens; else wantAll or two
		wantAll bool // an event per open
	}{
		{"same call: folded", func(*testing.T, *Cage, uint64, *uint64) {}, true, false},
		{"new call: recorded again", func(t *testing.T, c *Cage, cgid uint64, epoch *uint64) {
			*epoch++
			if err := c.NewCall(cgid, *epoch); err != nil {
				t.Fatal(err)
			}
		}, false, false},
	}
	for _, path := range epochPaths {
		t.Run(path.name, func(t *testing.T) {
			c, parent := loadWith(t, path.opts)
			if mapped, err := c.CallEpochsMapped(); mapped != (path.name == "mapped") {
				t.Fatalf("CallEpochsMapped = %v (%v)", mapped, err)
			}
			session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{}})
			var mu sync.Mutex
			events := map[string]int{}
			if err := c.Events(func(e Event) {
				if e.Cgroup == cgid && e.Kind == KindFileOpen {
					mu.Lock()
					events[e.Path]++
					mu.Unlock()
				}
			}, func(err error) { t.Error(err) }); err != nil {
				t.Fatal(err)
			}
			count := func(file string) int {
				t.Helper()
				if err := c.Sync(2 * time.Second); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				defer mu.Unlock()
				return events[file]
			}
			newFile := func() string {
				f := filepath.Join(t.TempDir(), "f")
				if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				return f
			}
			var epoch uint64
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					file := newFile()
					openPauseOpen(t, session, n, file, func() { tt.between(t, c, cgid, &epoch) })
					got := count(file)
					if tt.wantOne && got != 1 || !tt.wantOne && got != 2 {
						t.Fatalf("%d opens, epoch %d: %d events", 2*n, epoch, got)
					}
					if slot, v := slotOf(t, c, cgid); v.Epoch != epoch || v.Cgid != cgid {
						t.Fatalf("slot %d holds %+v, want epoch %d of session %d", slot, v, epoch, cgid)
					}
				})
			}
			t.Run("slot of another session: never folded", func(t *testing.T) {
				slot, v := slotOf(t, c, cgid)
				if err := c.objs.CallSlots.Put(slot, cageCallSlot{Epoch: v.Epoch, Cgid: cgid + 1}); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := c.objs.CallSlots.Put(slot, v); err != nil {
						t.Fatal(err)
					}
				}()
				file := newFile()
				openPauseOpen(t, session, n, file, func() {})
				if got := count(file); got != 2*n {
					t.Fatalf("%d opens through a slot another session owns: %d events, want one each", 2*n, got)
				}
			})
		})
	}
}

// A session's slot is reset when it is unregistered: a late NewCall
// writes nothing, and the next session to get the slot starts at epoch 0,
// owning it before its session entry names it.
func TestCallSlotReused(t *testing.T) {
	for _, path := range epochPaths {
		t.Run(path.name, func(t *testing.T) {
			c, _ := loadWith(t, path.opts)
			const old, next = 1001, 1002
			if err := c.Register(old, Policy{}); err != nil {
				t.Fatal(err)
			}
			if err := c.NewCall(old, 7); err != nil {
				t.Fatal(err)
			}
			slot, v := slotOf(t, c, old)
			if v != (cageCallSlot{Epoch: 7, Cgid: old}) {
				t.Fatalf("slot %d after NewCall(7): %+v", slot, v)
			}
			if err := c.Unregister(old); err != nil {
				t.Fatal(err)
			}
			if v := slotAt(t, c, slot); v != (cageCallSlot{}) {
				t.Fatalf("slot %d after Unregister: %+v, want zero", slot, v)
			}
			if err := c.NewCall(old, 8); err != nil {
				t.Fatalf("late NewCall: %v", err)
			}
			if v := slotAt(t, c, slot); v != (cageCallSlot{}) {
				t.Fatalf("slot %d after a late NewCall: %+v, want zero", slot, v)
			}
			if err := c.Register(next, Policy{}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Unregister(next); err != nil {
					t.Error(err)
				}
			}()
			reused, v := slotOf(t, c, next)
			if reused != slot || v != (cageCallSlot{Cgid: next}) {
				t.Fatalf("next session: slot %d holding %+v, want slot %d at epoch 0", reused, v, slot)
			}
			if err := c.NewCall(old, 9); err != nil {
				t.Fatalf("late NewCall: %v", err)
			}
			if v := slotAt(t, c, slot); v != (cageCallSlot{Cgid: next}) {
				t.Fatalf("a late NewCall of the slot's last owner wrote %+v into its next owner's", v)
			}
		})
	}
}

// Sessions are bounded by the slots (the kernel maps' size): one more is
// refused with ErrSessionsFull, and a released slot serves again.
func TestCallSlotsExhausted(t *testing.T) {
	c, _ := loadForTest(t)
	limit := uint64(c.objs.CallSlots.MaxEntries())
	if limit != uint64(c.objs.Sessions.MaxEntries()) {
		t.Fatalf("%d call slots for %d sessions", limit, c.objs.Sessions.MaxEntries())
	}
	const base = 1 << 40 // cgroup ids no real session has here
	registered := uint64(0)
	defer func() {
		for i := uint64(0); i < registered; i++ {
			if err := c.Unregister(base + i); err != nil {
				t.Error(err)
			}
		}
		if n := c.slots.inUse(); n != 0 {
			t.Errorf("%d call slots held after every session left", n)
		}
	}()
	for ; registered < limit; registered++ {
		if err := c.Register(base+registered, Policy{}); err != nil {
			t.Fatalf("session %d of %d: %v", registered+1, limit, err)
		}
	}
	err := c.Register(base+limit, Policy{})
	if !errors.Is(err, ErrSessionsFull) {
		t.Fatalf("session %d: %v, want ErrSessionsFull", limit+1, err)
	}
	t.Log(err)
	if err := c.Unregister(base + limit); err != nil {
		t.Fatal(err)
	}
	if err := c.NewCall(base+3, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.Unregister(base + 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(base+3, Policy{}); err != nil {
		t.Fatalf("a released slot: %v", err)
	}
	if _, v := slotOf(t, c, base+3); v != (cageCallSlot{Cgid: base + 3}) {
		t.Fatalf("re-registered session's slot: %+v, want epoch 0", v)
	}
}

// BenchmarkNewCall: moving a call epoch, by store and by syscall.
func BenchmarkNewCall(b *testing.B) {
	for _, path := range epochPaths {
		b.Run(path.name, func(b *testing.B) {
			c, _ := loadWith(b, path.opts)
			const cgid = 4242
			if err := c.Register(cgid, Policy{}); err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := c.Unregister(cgid); err != nil {
					b.Error(err)
				}
			}()
			for i := 0; b.Loop(); i++ {
				if err := c.NewCall(cgid, uint64(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Moving an epoch while the slots are closed (a daemon closing its eBPF
// layer while a session still ends a call) never stores into the
// unmapped array: run with -race, it reports no race, and no store faults.
func TestCallSlotsSetWhileClosing(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: uint32(callSlotSize), MaxEntries: 64, Flags: unix.BPF_F_MMAPABLE})
	testenv.Require(t, err == nil, fmt.Sprintf("an mmapable BPF array (root, Linux 5.5+): %v", err))
	defer func() { _ = m.Close() }()
	s, err := newCallSlots(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.take(42); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		close(started)
		for n := uint64(1); n < 200000; n++ {
			_ = s.set(42, n) // after close: a map update that fails, never a store
		}
	}()
	<-started
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if s.mem != nil {
		t.Fatal("the array is still mapped after close")
	}
}

// share is session cgid's count of urgent events put in the ring and read
// from it (0, 0 without a mapped slot).
func (s *callSlots) share(cgid uint64) (put, read uint64) {
	v, ok := s.owned.Load(cgid)
	if !ok {
		return 0, 0
	}
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if s.mem == nil {
		return 0, 0
	}
	i := v.(*callSlot).index
	return s.word(i, callSlotPut).Load(), s.word(i, callSlotRead).Load()
}
