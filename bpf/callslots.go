package bpf

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ErrSessionsFull is returned by Register when every call epoch slot is
// taken: as many sessions are registered as the kernel maps hold
// (cage.h's MAX_SESSIONS).
var ErrSessionsFull = errors.New("too many sessions registered")

// A call slot's layout in cage.c's call_slots array: the kernel lays
// array values out on 8-byte boundaries, and struct call_slot is two
// 64-bit words, so slot i's epoch is at i*callSlotSize.
const (
	callSlotSize  = unsafe.Sizeof(cageCallSlot{})
	callSlotEpoch = unsafe.Offsetof(cageCallSlot{}.Epoch)
	callSlotOwner = unsafe.Offsetof(cageCallSlot{}.Cgid)
	callSlotPut   = unsafe.Offsetof(cageCallSlot{}.Urgent)
	callSlotRead  = unsafe.Offsetof(cageCallSlot{}.Read)
)

// callSlots hands out cage.c's call_slots entries, one per registered
// session, and moves their epochs. With the array mapped into this
// process (BPF_F_MMAPABLE), moving an epoch is one atomic 64-bit store;
// without, a map update (a syscall), as before.
//
// A slot is reset and taken from its owner under the slot's lock, so a
// late NewCall of an unregistered session never writes into a slot that
// went to another session.
type callSlots struct {
	m *ebpf.Map
	// memMu guards mem: held shared by every store into the mapping, and
	// exclusively by close, so no store lands after the unmap (a daemon
	// closing while a session still ends a call).
	memMu sync.RWMutex
	mem   []byte // the array, mapped; nil: updated by syscall (or closed)
	slots []callSlot
	owned sync.Map // session cgroup id -> *callSlot

	mu   sync.Mutex // guards free and next
	free []uint32   // released slots
	next uint32     // slots from here on were never handed out
}

// callSlot is the Go side of one call_slots entry.
type callSlot struct {
	mu    sync.Mutex
	index uint32
	owner uint64 // session cgroup id; 0: free
}

// mmapCallSlots reports whether this kernel maps BPF arrays into user
// space (BPF_F_MMAPABLE, Linux 5.5+); nil if it does.
func mmapCallSlots() error {
	if err := features.HaveMapFlag(features.BPF_F_MMAPABLE); err != nil {
		return fmt.Errorf("mmapable BPF arrays: %w", err)
	}
	return nil
}

// newCallSlots maps m into memory when mapped is set; every slot is free
// and zero (a new array).
func newCallSlots(m *ebpf.Map, mapped bool) (*callSlots, error) {
	s := &callSlots{m: m, slots: make([]callSlot, m.MaxEntries())}
	for i := range s.slots {
		s.slots[i].index = uint32(i)
	}
	if !mapped {
		return s, nil
	}
	// Our own mapping, not ebpf.Map.Memory: that one offers only copies
	// (ReadAt, WriteAt), and an epoch is written with one atomic store.
	size := int(callSlotSize) * len(s.slots)
	size = (size + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map call epochs into memory: %w", err)
	}
	s.mem = mem
	return s, nil
}

// close unmaps the array.
func (s *callSlots) close() error {
	if s == nil {
		return nil
	}
	s.memMu.Lock()
	defer s.memMu.Unlock()
	if s.mem == nil {
		return nil
	}
	mem := s.mem
	s.mem = nil
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("unmap call epochs: %w", err)
	}
	return nil
}

// take gives session cgid a slot, clean (epoch 0, as a session without
// a call yet), or the one it holds already.
func (s *callSlots) take(cgid uint64) (uint32, error) {
	if sl, ok := s.owned.Load(cgid); ok {
		return sl.(*callSlot).index, nil
	}
	s.mu.Lock()
	var i uint32
	switch {
	case len(s.free) > 0:
		i = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
	case int(s.next) < len(s.slots):
		i = s.next
		s.next++
	default:
		s.mu.Unlock()
		return 0, fmt.Errorf("session %d: all %d call epoch slots taken: %w", cgid, len(s.slots), ErrSessionsFull)
	}
	s.mu.Unlock()
	sl := &s.slots[i]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	// Released slots are reset already; a new owner's first epoch is 0
	// all the same, before the kernel can see the owner.
	if err := s.write(sl, 0, cgid); err != nil {
		s.mu.Lock()
		s.free = append(s.free, i)
		s.mu.Unlock()
		return 0, err
	}
	sl.owner = cgid
	s.owned.Store(cgid, sl)
	return i, nil
}

// release frees session cgid's slot: no owner, epoch 0. A session
// without a slot is no error.
func (s *callSlots) release(cgid uint64) error {
	v, ok := s.owned.LoadAndDelete(cgid)
	if !ok {
		return nil
	}
	sl := v.(*callSlot)
	sl.mu.Lock()
	err := s.write(sl, 0, 0)
	sl.owner = 0
	sl.mu.Unlock()
	if err != nil {
		// Not handed out again: the kernel might read a stale epoch.
		return fmt.Errorf("reset call epoch slot %d: %w", sl.index, err)
	}
	s.mu.Lock()
	s.free = append(s.free, sl.index)
	s.mu.Unlock()
	return nil
}

// set moves session cgid's epoch to n; a session that holds no slot (not
// registered, or no longer) has no epoch to move.
func (s *callSlots) set(cgid, n uint64) error {
	v, ok := s.owned.Load(cgid)
	if !ok {
		return nil
	}
	sl := v.(*callSlot)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.owner != cgid {
		return nil // released since it was looked up
	}
	return s.write(sl, n, cgid)
}

// write sets a slot's epoch and owner. The order is cage.c's call_epoch's
// contract: the owner is cleared before the epoch, and set after it.
func (s *callSlots) write(sl *callSlot, epoch, owner uint64) error {
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if s.mem == nil {
		return s.m.Put(sl.index, cageCallSlot{Epoch: epoch, Cgid: owner})
	}
	if owner == 0 {
		s.word(sl.index, callSlotOwner).Store(0)
		s.word(sl.index, callSlotEpoch).Store(epoch)
		return nil
	}
	if sl.owner != owner {
		// A new owner: its share of the ring starts empty.
		s.word(sl.index, callSlotRead).Store(0)
		s.word(sl.index, callSlotPut).Store(0)
	}
	s.word(sl.index, callSlotEpoch).Store(epoch)
	s.word(sl.index, callSlotOwner).Store(owner)
	return nil
}

// read counts one of session cgid's urgent events (struct event's
// counted) as read from the ring, which gives its share back. Only with
// the array mapped (the kernel counts them only then).
func (s *callSlots) read(cgid uint64) {
	v, ok := s.owned.Load(cgid)
	if !ok {
		return // released: a new owner starts from zero
	}
	sl := v.(*callSlot)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.owner != cgid {
		return
	}
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if s.mem != nil {
		s.word(sl.index, callSlotRead).Add(1)
	}
}

// word is a 64-bit field of slot i in the mapped array (8-byte aligned:
// the mapping starts on a page).
func (s *callSlots) word(i uint32, field uintptr) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&s.mem[uintptr(i)*callSlotSize+field]))
}

// inUse is how many slots sessions hold.
func (s *callSlots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.next) - len(s.free)
}
