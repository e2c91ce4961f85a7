package bpf

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// lpmAllows answers as the kernel's tries do: the entry with the longest
// prefix holding addr (IPv4-mapped addresses in the IPv4 trie) decides.
func lpmAllows(entries []egressEntry, addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	var best *egressEntry
	for i, e := range entries {
		if e.prefix.Addr().Is4() == addr.Is4() && e.prefix.Contains(addr) && (best == nil || e.prefix.Bits() > best.prefix.Bits()) {
			best = &entries[i]
		}
	}
	if best == nil {
		return false
	}
	return best.ports.Any == 1 || slices.Contains(best.ports.Port[:best.ports.N], port)
}

// TestEgressEntriesPublic: "public" allows its ports on the internet and
// nowhere it leaves out (the host's own networks among them), while
// other rules still allow what they name there.
func TestEgressEntriesPublic(t *testing.T) {
	entries, err := egress.ParseAll([]string{"public:443", "10.0.0.0/8:22", "140.82.112.3:22", "8.8.4.4:8443", "[fd00::/8]:53"})
	if err != nil {
		t.Fatal(err)
	}
	var rules []egress.Rule
	for _, e := range entries {
		if e.Public {
			rules = append(rules, egress.WithHost(publicOf(t, e), []netip.Prefix{netip.MustParsePrefix("8.8.4.0/24"), netip.MustParsePrefix("8.8.4.4/32"), netip.MustParsePrefix("2a01:4f8::/32")})...)
			continue
		}
		rules = append(rules, egress.Rule{Prefix: e.Prefix, Ports: []uint16{e.Port}, Index: e.Index})
	}
	var kernel []EgressRule
	for _, r := range rules {
		kernel = append(kernel, EgressRule{Prefix: r.Prefix, Ports: r.Ports, Index: r.Index, Public: r.Public, Exclude: r.Exclude})
	}
	got, err := egressEntries(kernel)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr  string
		port  uint16
		allow bool
	}{
		{"1.1.1.1", 443, true},
		{"1.1.1.1", 80, false},
		{"2606:4700:4700::1111", 443, true},
		{"140.82.112.3", 443, true}, // its own rule's 22, and public's 443
		{"140.82.112.3", 22, true},
		{"140.82.112.4", 22, false},
		{"10.1.2.3", 22, true}, // the private rule
		{"10.1.2.3", 443, false},
		{"127.0.0.1", 443, false},
		{"::ffff:127.0.0.1", 443, false},
		{"169.254.169.254", 443, false},
		{"192.168.1.1", 443, false},
		{"8.8.8.8", 443, true},
		{"8.8.4.1", 443, false},     // the host's network
		{"8.8.4.4", 443, false},     // the host's own address
		{"8.8.4.4", 8443, true},     // named by its own rule
		{"2a01:4f8::1", 443, false}, // the host's IPv6 network
		{"fd00::1", 443, false},
		{"fd00::1", 53, true},
		{"fe80::1", 443, false},
		{"2001:db8::1", 443, false},
		{"2002:c0a8:101::1", 443, false},
	}
	for _, tt := range tests {
		if a := netip.MustParseAddr(tt.addr); lpmAllows(got, a, tt.port) != tt.allow {
			t.Errorf("%s port %d: allowed = %v, want %v", tt.addr, tt.port, !tt.allow, tt.allow)
		}
	}
	// Events name the rule that allows: 10.1.2.3:22 is the private
	// range's (index 1), not "public"'s, whose exclusion shares the prefix.
	for _, e := range got {
		if e.prefix == netip.MustParsePrefix("10.0.0.0/8") && e.ports.Rule != 1 {
			t.Errorf("10.0.0.0/8 names rule %d, want 1", e.ports.Rule)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].prefix.Bits() > got[i-1].prefix.Bits() {
			t.Fatalf("entry %d (%v) is narrower than the one before it: the narrowest go first", i, got[i].prefix)
		}
	}
}

// publicOf resolves a "public" entry through a tracker (no host names).
func publicOf(t *testing.T, e egress.Entry) []egress.Rule {
	t.Helper()
	rules, _, err := egress.NewTracker([]egress.Entry{e}, nil).Refresh(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rules
}
