package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/cilium/ebpf"
)

// EgressRule allows connections to Prefix on Ports (empty: any port).
type EgressRule struct {
	Prefix netip.Prefix
	Ports  []uint16
	Index  int // the rule's position in the server's egress list
	// Public: the rule stands for "public" (a whole address family); its
	// ports do not reach into an Exclude rule's range.
	Public bool
	// Exclude: a range "public" leaves out (the host's own addresses and
	// networks, loopback, private ranges...). It allows nothing itself;
	// rules other than Public ones that hold it still do.
	Exclude bool
}

// Policy is what the kernel enforces for one session.
type Policy struct {
	// Owner is the user the session runs for: the egress entries of one
	// owner's sessions are bounded together (SetEgressBudget).
	Owner       uint32
	HostNetwork bool // egress rules apply (own netns sessions are isolated by the kernel)
	Egress      []EgressRule
	// DenyComponents are path component names whose opening kills the
	// process; the value is the index of the deny_paths rule.
	DenyComponents map[string]int
	// Listen are the local addresses a host-network session may bind and
	// accept on (its server's listen list).
	Listen []netip.AddrPort
	// ChangesWatched: every writable mount of the session is watched with
	// fanotify, whose reader checks its deletions and attribute changes
	// (cage.h's SESSION_CHANGES_WATCHED).
	ChangesWatched bool
}

// maxPorts is how many ports one egress entry holds (cage.c's MAX_PORTS).
const maxPorts = len(cagePorts{}.Port)

// cgidBits is the length of the session's cgroup id that starts every
// egress LPM key, ahead of the address prefix.
const cgidBits = 64

// Register puts a session's policy in the maps, gives it a call epoch
// slot (ErrSessionsFull when none is left), and attaches the observation
// programs when it is the only session. Call it after the task exists
// and before it starts; call Unregister after it failed, too.
func (c *Cage) Register(cgid uint64, p Policy) error {
	slot, err := c.slots.take(cgid)
	if err != nil {
		return err
	}
	c.book.open(cgid, p.Owner)
	if err := c.SetEgress(cgid, p.Egress); err != nil {
		return err
	}
	s := cageSession{CallSlot: slot}
	for name, idx := range p.DenyComponents {
		k := cageDenyKey{Cgid: cgid}
		if len(name) >= len(k.Name) {
			return fmt.Errorf("deny_paths component %q is longer than %d bytes", name, len(k.Name)-1)
		}
		for i := 0; i < len(name); i++ {
			k.Name[i] = int8(name[i])
		}
		if err := c.objs.DenyComponents.Put(&k, uint32(idx)); err != nil {
			return fmt.Errorf("register deny rule: %w", err)
		}
		s.DenyLens |= denyLenBit(len(name))
	}
	if err := c.setListen(cgid, p.Listen); err != nil {
		return err
	}
	if p.ChangesWatched {
		s.Flags |= uint32(cageSessionFlagSESSION_CHANGES_WATCHED)
	}
	if p.HostNetwork {
		s.Flags |= uint32(cageSessionFlagSESSION_HOST_NET)
	}
	if err := c.objs.Sessions.Put(cgid, &s); err != nil {
		return fmt.Errorf("register session: %w", err)
	}
	if err := c.observe(cgid); err != nil {
		return fmt.Errorf("attach the observation programs: %w", err)
	}
	return nil
}

// denyLenBit is a denied component's bit in the session's deny_lens
// (cage.h's deny_len_bit): the walk reads only the names whose length
// some denied name has.
func denyLenBit(n int) uint32 { return 1 << min(n, 31) }

// SetEgress replaces a session's egress rules (e.g. after host names were
// re-resolved). The new entries are written first and the ones no
// longer wanted removed after, so a connection made meanwhile meets the
// old rules or the new ones, never none. On an error the session keeps a
// subset of both (nothing beyond either is ever allowed). Rules that
// would take the session's owner past the egress budget are refused
// before anything is written (ErrEgressBudget). The session must be
// registered.
func (c *Cage) SetEgress(cgid uint64, rules []EgressRule) error {
	entries, err := egressEntries(rules)
	if err != nil {
		return err
	}
	keep4, keep6 := map[cageLpm4]bool{}, map[cageLpm6]bool{}
	type write struct {
		v4   *cageLpm4
		v6   *cageLpm6
		port *cagePorts
	}
	writes := make([]write, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		if p := e.prefix; p.Addr().Is4() {
			k := cageLpm4{Prefixlen: uint32(cgidBits + p.Bits())}
			putCgid(k.Cgid[:], cgid)
			k.Addr = p.Addr().As4()
			keep4[k] = true
			writes = append(writes, write{v4: &k, port: &e.ports})
		} else {
			k := cageLpm6{Prefixlen: uint32(cgidBits + p.Bits())}
			putCgid(k.Cgid[:], cgid)
			k.Addr = p.Addr().As16()
			keep6[k] = true
			writes = append(writes, write{v6: &k, port: &e.ports})
		}
	}
	b := &c.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.sessions[cgid]
	if h == nil {
		return fmt.Errorf("egress rules of session %d: the session is not registered", cgid)
	}
	if err := b.checkRoom(h, len(keep4), len(keep6)); err != nil {
		return err
	}
	for i, w := range writes {
		var err error
		if w.v4 != nil {
			b.set4(h, *w.v4) // booked first: a failed write is removed later too
			err = c.objs.Egress4.Put(w.v4, w.port)
		} else {
			b.set6(h, *w.v6)
			err = c.objs.Egress6.Put(w.v6, w.port)
		}
		if err != nil {
			return fmt.Errorf("egress rule %s: %w", entries[i].prefix, err)
		}
	}
	if err := b.removeWhere(h, c.objs.Egress4, c.objs.Egress6, keep4, keep6); err != nil {
		return fmt.Errorf("delete old egress rules: %w", err)
	}
	return nil
}

// ClearEgress removes every egress entry of cgroup cgid: its session may
// then reach nothing (what a failed SetEgress leaves must not stand).
// Deleting needs no room in the tries.
func (c *Cage) ClearEgress(cgid uint64) error {
	b := &c.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.sessions[cgid]
	if h == nil {
		return nil // nothing written
	}
	return b.removeWhere(h, c.objs.Egress4, c.objs.Egress6, nil, nil)
}

// egressEntry is one entry of the kernel's LPM tries.
type egressEntry struct {
	prefix netip.Prefix
	ports  cagePorts
}

// egressEntries turns rules into LPM entries. The trie answers with the
// longest matching prefix only, so an entry holds the ports of every rule
// whose range holds its prefix, except a Public rule's where an Exclude
// rule narrower than that rule holds the prefix: an excluded range's
// entry (and any entry inside it) gets no port from "public", and an
// address there is refused unless another rule allows it.
func egressEntries(rules []EgressRule) ([]egressEntry, error) {
	type entry struct {
		ports   map[uint16]bool
		any     bool
		rule    int
		allowed bool // rule is one that gives it ports
	}
	merged := map[netip.Prefix]*entry{}
	var order []netip.Prefix
	for _, r := range rules {
		p := r.Prefix.Masked()
		if merged[p] == nil {
			merged[p] = &entry{ports: map[uint16]bool{}, rule: r.Index}
			order = append(order, p)
		}
	}
	holds := func(q, p netip.Prefix) bool {
		return q.Addr().Is4() == p.Addr().Is4() && q.Bits() <= p.Bits() && q.Contains(p.Addr())
	}
	carved := func(p netip.Prefix, public netip.Prefix) bool {
		for _, x := range rules {
			if x.Exclude && x.Prefix.Bits() > public.Bits() && holds(x.Prefix.Masked(), p) {
				return true
			}
		}
		return false
	}
	for p, e := range merged {
		for _, r := range rules {
			q := r.Prefix.Masked()
			if r.Exclude || !holds(q, p) || (r.Public && carved(p, q)) {
				continue
			}
			if !e.allowed {
				// Events name the first rule that allows something here,
				// not a range "public" leaves out.
				e.rule, e.allowed = r.Index, true
			}
			if len(r.Ports) == 0 {
				e.any = true
			}
			for _, port := range r.Ports {
				e.ports[port] = true
			}
		}
	}
	// The narrowest ranges first: should writing them stop half-way (a
	// full map), what "public" leaves out is in before what it allows.
	slices.SortStableFunc(order, func(a, b netip.Prefix) int { return b.Bits() - a.Bits() })
	out := make([]egressEntry, 0, len(order))
	for _, p := range order {
		e := merged[p]
		v := cagePorts{Rule: uint16(e.rule)}
		if e.any {
			v.Any = 1
		} else {
			ports := make([]int, 0, len(e.ports))
			for port := range e.ports {
				ports = append(ports, int(port))
			}
			if len(ports) > maxPorts {
				return nil, fmt.Errorf("egress: %s has %d ports; at most %d per address range", p, len(ports), maxPorts)
			}
			sort.Ints(ports)
			for i, port := range ports {
				v.Port[i] = uint16(port)
			}
			v.N = uint8(len(ports))
		}
		out = append(out, egressEntry{prefix: p, ports: v})
	}
	return out, nil
}

// Unregister removes every trace of a session from the maps. After the
// last session the observation programs are detached, so the rest of the
// host stops paying for the syscall tracepoints. It goes on past errors
// and returns them all: an entry left behind keeps a policy in the maps,
// and an observer left attached keeps costing the host.
func (c *Cage) Unregister(cgid uint64) error {
	var errs []error
	if err := c.unobserve(cgid); err != nil {
		errs = append(errs, err)
	}
	if err := c.objs.Sessions.Delete(cgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("delete session: %w", err))
	}
	if err := c.deleteEgress(cgid); err != nil {
		errs = append(errs, err)
	}
	if err := deleteWhere(c.objs.DenyComponents, func(k *cageDenyKey) bool { return k.Cgid == cgid }); err != nil {
		errs = append(errs, fmt.Errorf("delete deny rules: %w", err))
	}
	if err := c.deleteListen(cgid); err != nil {
		errs = append(errs, err)
	}
	if err := deleteWhere(c.objs.UdpSeen, func(k *cageUdpKey) bool { return k.Cgid == cgid }); err != nil {
		errs = append(errs, fmt.Errorf("delete udp peers: %w", err))
	}
	// recent_opens is left to age out: an LRU of 65536 entries whose keys
	// carry the cgroup id (never reused), walked here it would cost a
	// syscall per entry on every session's end.
	// After the session entry is gone: the programs no longer find the
	// slot, but for those already running, which see it change owner.
	if err := c.slots.release(cgid); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unregister session %d: %w", cgid, err)
	}
	return nil
}

// NewCall tells the kernel that the session started its n-th tool call
// (n grows): the files the call opens are recorded for it, not folded
// into an earlier call's records (see cage.c's recent_opens). Where the
// kernel maps the epochs into memory (CallEpochsMapped) it is one atomic
// store, no syscall. A session not registered, or no longer, has no
// epoch: nothing is done.
func (c *Cage) NewCall(cgid, n uint64) error {
	if err := c.slots.set(cgid, n); err != nil {
		return fmt.Errorf("session %d: call epoch: %w", cgid, err)
	}
	return nil
}

// OpensFolded is how many opens of the session's files were folded into
// a recorded one (see cage.c's recent_opens): deny-checked, not recorded
// one by one. Read it before Unregister.
func (c *Cage) OpensFolded(cgid uint64) (uint64, error) {
	n, err := c.SessionCounts(cgid)
	return n.OpensFolded, err
}

// SessionCounts are a session's counters in the kernel.
type SessionCounts struct {
	OpensFolded uint64 // see OpensFolded
	// Throttled: events (opens, execs, connections, denials) the
	// session's budget of events a second refused: not recorded, and
	// counted for the session, not only for the host.
	Throttled uint64
}

// SessionCounts reads the session's counters.
func (c *Cage) SessionCounts(cgid uint64) (SessionCounts, error) {
	var s cageSession
	if err := c.objs.Sessions.Lookup(cgid, &s); err != nil {
		return SessionCounts{}, fmt.Errorf("read session %d: %w", cgid, err)
	}
	return SessionCounts{OpensFolded: s.OpensFolded, Throttled: s.Throttled}, nil
}

// Unchecked says whether a rename, link or change (see cage.c's
// name_may_hit) of the session went unreported because the event ring buffer was full (cage.h's
// SESSION_UNCHECKED): its names were never checked against deny_paths,
// so the kernel kills every later opener in the session and the session
// must end.
func (c *Cage) Unchecked(cgid uint64) (bool, error) {
	var s cageSession
	if err := c.objs.Sessions.Lookup(cgid, &s); err != nil {
		return false, fmt.Errorf("read session %d: %w", cgid, err)
	}
	return s.Flags&uint32(cageSessionFlagSESSION_UNCHECKED) != 0, nil
}

// deleteEgress removes session cgid's egress entries and its book.
func (c *Cage) deleteEgress(cgid uint64) error {
	b := &c.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.sessions[cgid]
	if h == nil {
		return nil
	}
	if err := b.removeWhere(h, c.objs.Egress4, c.objs.Egress6, nil, nil); err != nil {
		return fmt.Errorf("delete egress rules: %w", err)
	}
	b.close(cgid)
	return nil
}

// deleteWhere removes the entries of m whose key matches. Keys are
// collected first: deleting while iterating restarts hash iteration. It
// goes on past a failed delete; an entry already gone is not an error.
func deleteWhere[K any](m *ebpf.Map, match func(*K) bool) error {
	var k K
	v := make([]byte, m.ValueSize())
	var del []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(&k) {
			del = append(del, k)
		}
	}
	var errs []error
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("iterate: %w", err))
	}
	for i := range del {
		if err := m.Delete(&del[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Counts reports map occupancy, for leak checks and status.
func (c *Cage) Counts() (sessions, egress, deny int) {
	count := func(m *ebpf.Map) int {
		n := 0
		it := m.Iterate()
		k := make([]byte, m.KeySize())
		v := make([]byte, m.ValueSize())
		for it.Next(&k, &v) {
			n++
		}
		return n
	}
	return count(c.objs.Sessions), count(c.objs.Egress4) + count(c.objs.Egress6), count(c.objs.DenyComponents)
}

// Lost returns the events lost to a full ring buffer and those throttled
// by the per-session rate, summed over CPUs.
func (c *Cage) Lost() (ringbuf, throttled uint64, err error) {
	sum := func(key uint32) (uint64, error) {
		var per []uint64
		if err := c.objs.Lost.Lookup(key, &per); err != nil {
			return 0, err
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	if ringbuf, err = sum(uint32(cageLostCounterLOST_RINGBUF)); err != nil {
		return 0, 0, errors.Join(errors.New("read lost counter"), err)
	}
	throttled, err = sum(uint32(cageLostCounterLOST_THROTTLED))
	return ringbuf, throttled, err
}

func putCgid(b []byte, cgid uint64) { binary.NativeEndian.PutUint64(b, cgid) }

// KillSession kills every process of a session at once: it finds the
// session's cgroup among the parent's children by its id and writes "1"
// to its cgroup.kill (cgroup v2, Linux 5.14+), which SIGKILLs the whole
// subtree, including tasks forked while the kill runs.
func (c *Cage) KillSession(cgid uint64) (string, error) {
	dir, err := c.sessionDir(cgid)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return dir, fmt.Errorf("kill session cgroup: %w", err)
	}
	return dir, nil
}

// sessionDir is the cgroup v2 directory of session cgid: a child of the
// parent cgroup whose inode is the id.
func (c *Cage) sessionDir(cgid uint64) (string, error) {
	ents, err := os.ReadDir(c.parent)
	if err != nil {
		return "", fmt.Errorf("list session cgroups: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(c.parent, e.Name())
		if id, err := CgroupID(dir); err == nil && id == cgid {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no cgroup with id %d under %s", cgid, c.parent)
}

// Changer returns the session (cgroup id) of thread tid, a thread that
// changed a file by name in a session (cage.c's changers), if it is
// known. Thread ids are reused: an entry outlives its thread until the
// map evicts it, so a caller that acts on a hit confirms the thread.
func (c *Cage) Changer(tid uint32) (uint64, bool) {
	var cgid uint64
	if err := c.objs.Changers.Lookup(tid, &cgid); err != nil {
		return 0, false
	}
	return cgid, true
}
