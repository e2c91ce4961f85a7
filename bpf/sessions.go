package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf"
)

// EgressRule allows connections to Prefix on Ports (empty: any port).
type EgressRule struct {
	Prefix netip.Prefix
	Ports  []uint16
	Index  int // the rule's position in the server's egress list
}

// Policy is what the kernel enforces for one session.
type Policy struct {
	HostNetwork bool // egress rules apply (own netns sessions are isolated by the kernel)
	Egress      []EgressRule
	// DenyComponents are path component names whose opening kills the
	// process; the value is the index of the deny_paths rule.
	DenyComponents map[string]int
}

const maxPorts = 8

// Register puts a session's policy in the maps. Call it after the task
// exists and before it starts.
func (c *Cage) Register(cgid uint64, p Policy) error {
	if err := c.SetEgress(cgid, p.Egress); err != nil {
		return err
	}
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
	}
	s := cageSession{}
	if p.HostNetwork {
		s.Flags = 1
	}
	if err := c.objs.Sessions.Put(cgid, &s); err != nil {
		return fmt.Errorf("register session: %w", err)
	}
	return nil
}

// SetEgress replaces a session's egress rules (e.g. after host names were
// re-resolved). Rules for a prefix inherit the ports of every rule whose
// prefix contains it, since the LPM trie answers with the longest match
// only.
func (c *Cage) SetEgress(cgid uint64, rules []EgressRule) error {
	c.deleteEgress(cgid)
	type entry struct {
		ports map[uint16]bool
		any   bool
		rule  int
	}
	merged := map[netip.Prefix]*entry{}
	for _, r := range rules {
		p := r.Prefix.Masked()
		if merged[p] == nil {
			merged[p] = &entry{ports: map[uint16]bool{}, rule: r.Index}
		}
	}
	for p, e := range merged {
		for _, r := range rules {
			q := r.Prefix.Masked()
			if q.Addr().Is4() != p.Addr().Is4() || q.Bits() > p.Bits() || !q.Contains(p.Addr()) {
				continue
			}
			if len(r.Ports) == 0 {
				e.any = true
			}
			for _, port := range r.Ports {
				e.ports[port] = true
			}
		}
	}
	for p, e := range merged {
		v := cagePorts{Rule: uint16(e.rule)}
		if e.any {
			v.Any = 1
		} else {
			ports := make([]int, 0, len(e.ports))
			for port := range e.ports {
				ports = append(ports, int(port))
			}
			if len(ports) > maxPorts {
				return fmt.Errorf("egress: %s has %d ports; at most %d per address range", p, len(ports), maxPorts)
			}
			sort.Ints(ports)
			for i, port := range ports {
				v.Port[i] = uint16(port)
			}
			v.N = uint8(len(ports))
		}
		var err error
		if p.Addr().Is4() {
			k := cageLpm4{Prefixlen: uint32(64 + p.Bits())}
			putCgid(k.Cgid[:], cgid)
			k.Addr = p.Addr().As4()
			err = c.objs.Egress4.Put(&k, &v)
		} else {
			k := cageLpm6{Prefixlen: uint32(64 + p.Bits())}
			putCgid(k.Cgid[:], cgid)
			k.Addr = p.Addr().As16()
			err = c.objs.Egress6.Put(&k, &v)
		}
		if err != nil {
			return fmt.Errorf("egress rule %s: %w", p, err)
		}
	}
	return nil
}

// Unregister removes every trace of a session from the maps.
func (c *Cage) Unregister(cgid uint64) {
	c.objs.Sessions.Delete(cgid)
	c.deleteEgress(cgid)
	var k cageDenyKey
	var v uint32
	var del []cageDenyKey
	it := c.objs.DenyComponents.Iterate()
	for it.Next(&k, &v) {
		if k.Cgid == cgid {
			del = append(del, k)
		}
	}
	for _, k := range del {
		c.objs.DenyComponents.Delete(&k)
	}
	var uk cageUdpKey
	var one uint8
	var udel []cageUdpKey
	uit := c.objs.UdpSeen.Iterate()
	for uit.Next(&uk, &one) {
		if uk.Cgid == cgid {
			udel = append(udel, uk)
		}
	}
	for _, k := range udel {
		c.objs.UdpSeen.Delete(&k)
	}
}

func (c *Cage) deleteEgress(cgid uint64) {
	var k4 cageLpm4
	var v cagePorts
	var del4 []cageLpm4
	it := c.objs.Egress4.Iterate()
	for it.Next(&k4, &v) {
		if binary.NativeEndian.Uint64(k4.Cgid[:]) == cgid {
			del4 = append(del4, k4)
		}
	}
	for _, k := range del4 {
		c.objs.Egress4.Delete(&k)
	}
	var k6 cageLpm6
	var del6 []cageLpm6
	it6 := c.objs.Egress6.Iterate()
	for it6.Next(&k6, &v) {
		if binary.NativeEndian.Uint64(k6.Cgid[:]) == cgid {
			del6 = append(del6, k6)
		}
	}
	for _, k := range del6 {
		c.objs.Egress6.Delete(&k)
	}
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
	if ringbuf, err = sum(0); err != nil {
		return 0, 0, errors.Join(errors.New("read lost counter"), err)
	}
	throttled, err = sum(1)
	return ringbuf, throttled, err
}

func putCgid(b []byte, cgid uint64) { binary.NativeEndian.PutUint64(b, cgid) }
