package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

// hosts are n IPv4 (or IPv6) /32 (/128) rules from base on: n entries.
func hosts(base string, n int) []EgressRule {
	a := netip.MustParseAddr(base)
	out := make([]EgressRule, 0, n)
	for range n {
		out = append(out, EgressRule{Prefix: netip.PrefixFrom(a, a.BitLen()), Ports: []uint16{443}})
		a = a.Next()
	}
	return out
}

// One user's sessions filled the egress tries every session shares (long
// egress lists, many sessions, names answering with many addresses), and
// every other user's host-network sessions then reached nothing (found by
// a red-team helper). The entries of one owner's sessions are bounded
// together, per address family; other owners are not affected.
func TestEgressBudgetPerOwner(t *testing.T) {
	c, _ := loadForTest(t)
	if got := c.objs.Egress4.MaxEntries(); got != EgressTrieEntries {
		t.Fatalf("egress4 holds %d entries, EgressTrieEntries says %d", got, EgressTrieEntries)
	}
	if got := c.objs.Egress6.MaxEntries(); got != EgressTrieEntries {
		t.Fatalf("egress6 holds %d entries, EgressTrieEntries says %d", got, EgressTrieEntries)
	}
	c.SetEgressBudget(10)
	type step struct {
		do      string // register, set, unregister
		cgid    uint64
		owner   uint32
		rules   []EgressRule
		refused bool
	}
	steps := []step{
		{do: "register", cgid: 11, owner: 1, rules: hosts("198.51.100.1", 6)},
		{do: "register", cgid: 12, owner: 1, rules: hosts("198.51.100.101", 6), refused: true}, // 12 > 10
		{do: "unregister", cgid: 12},
		{do: "register", cgid: 21, owner: 2, rules: hosts("198.51.100.1", 6)},                // another user: room of its own
		{do: "register", cgid: 13, owner: 1, rules: hosts("2001:db8::1", 10)},                // IPv6 counts apart
		{do: "set", cgid: 11, rules: hosts("198.51.100.1", 11), refused: true},               // an update past the budget
		{do: "set", cgid: 11, rules: hosts("198.51.100.1", 3)},                               // shrinks: room again
		{do: "register", cgid: 12, owner: 1, rules: hosts("198.51.100.101", 7)},              // 3 + 7
		{do: "set", cgid: 13, rules: hosts("2001:db8::1", 11), refused: true},                // the same in IPv6
		{do: "register", cgid: 22, owner: 2, rules: hosts("198.51.100.1", 5), refused: true}, // 6 + 5
		{do: "unregister", cgid: 22},
	}
	for i, s := range steps {
		var err error
		switch s.do {
		case "register":
			err = c.Register(s.cgid, Policy{Owner: s.owner, HostNetwork: true, Egress: s.rules})
		case "set":
			err = c.SetEgress(s.cgid, s.rules)
		case "unregister":
			err = c.Unregister(s.cgid)
		}
		switch {
		case s.refused && !errors.Is(err, ErrEgressBudget):
			t.Fatalf("step %d (%s %d, %d rules): %v, want it refused over the budget", i, s.do, s.cgid, len(s.rules), err)
		case !s.refused && err != nil:
			t.Fatalf("step %d (%s %d): %v", i, s.do, s.cgid, err)
		}
	}
	held := func(owner uint32) string { v4, v6 := c.egressHeld(owner); return fmt.Sprintf("%d+%d", v4, v6) }
	if got := held(1); got != "10+10" {
		t.Errorf("owner 1 holds %s entries, want 10+10", got)
	}
	if got := held(2); got != "6+0" {
		t.Errorf("owner 2 holds %s entries, want 6+0", got)
	}
	// The book and the tries agree: a refused update left the session's
	// rules as they were, a refused session wrote nothing.
	if _, e, _ := c.Counts(); e != 26 {
		t.Fatalf("the tries hold %d entries, the book 26", e)
	}
	for _, cgid := range []uint64{11, 12, 13, 21} {
		if err := c.Unregister(cgid); err != nil {
			t.Fatal(err)
		}
	}
	if _, e, _ := c.Counts(); e != 0 || held(1) != "0+0" || held(2) != "0+0" {
		t.Fatalf("after every session ended: %d entries in the tries, owners hold %s and %s", e, held(1), held(2))
	}
	if err := c.SetEgress(11, hosts("198.51.100.1", 1)); err == nil {
		t.Fatal("egress rules written for a session that is not registered")
	}
}
