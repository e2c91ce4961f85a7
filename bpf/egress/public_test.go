package egress

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// contains reports whether any of ps holds a.
func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func TestPublicPrefixes(t *testing.T) {
	pub := PublicPrefixes()
	tests := []struct {
		addr   string
		public bool
	}{
		{"1.1.1.1", true},
		{"8.8.8.8", true},
		{"140.82.112.3", true},   // github.com
		{"9.255.255.255", true},  // just below 10/8
		{"11.0.0.0", true},       // just above it
		{"100.63.255.255", true}, // below carrier-grade NAT
		{"100.128.0.0", true},    // above it
		{"172.15.255.255", true},
		{"172.32.0.0", true},
		{"192.167.255.255", true},
		{"192.169.0.0", true},
		{"223.255.255.255", true}, // the last unicast address
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"10.0.0.1", false},
		{"10.255.255.255", false},
		{"100.64.0.1", false},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"169.254.169.254", false}, // cloud metadata
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"198.18.0.1", false},
		{"224.0.0.251", false}, // mDNS
		{"239.255.255.250", false},
		{"255.255.255.255", false},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001:80b::200e", true},
		{"2001:4860:4860::8888", true}, // in 2001::/16, outside Teredo's /32
		{"3fff:ffff::1", true},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"fc00::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false}, // mapped: the kernel checks the IPv4 rules
		{"64:ff9b::a00:1", false},   // NAT64 of 10.0.0.1
		{"2001:0:4136:e378::1", false},
		{"2002:c0a8:101::1", false}, // 6to4 of 192.168.1.1
		{"4000::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := contains(pub, netip.MustParseAddr(tt.addr)); got != tt.public {
				t.Fatalf("public = %v, want %v", got, tt.public)
			}
		})
	}
}

// TestPublicPrefixesExact: the ranges are the universe without the ranges
// left out, no more, no less: none overlaps another or a left-out range,
// and the addresses on both sides of every boundary fall where they should.
func TestPublicPrefixesExact(t *testing.T) {
	pub := PublicPrefixes()
	if len(pub) != 59+29 {
		t.Errorf("%d ranges, want 88 (59 IPv4 + 29 IPv6): update the count in the comment and the README", len(pub))
	}
	for i, p := range pub {
		if p != p.Masked() {
			t.Errorf("%v is not masked", p)
		}
		for _, q := range pub[i+1:] {
			if p.Overlaps(q) {
				t.Errorf("%v overlaps %v", p, q)
			}
		}
		for _, n := range notPublic {
			if p.Overlaps(n.prefix) {
				t.Errorf("%v overlaps %v (%s)", p, n.prefix, n.why)
			}
		}
	}
	inUniverse := func(a netip.Addr) bool { return contains(publicUniverse, a) }
	left := func(a netip.Addr) bool {
		for _, n := range notPublic {
			if n.prefix.Contains(a) {
				return true
			}
		}
		return false
	}
	edges := func(p netip.Prefix) []netip.Addr {
		first := p.Masked().Addr()
		last := lastAddr(p)
		return []netip.Addr{first.Prev(), first, last, last.Next()}
	}
	var check []netip.Prefix
	check = append(check, publicUniverse...)
	check = append(check, pub...)
	for _, n := range notPublic {
		check = append(check, n.prefix)
	}
	for _, p := range check {
		for _, a := range edges(p) {
			if !a.IsValid() {
				continue
			}
			want := inUniverse(a) && !left(a)
			if got := contains(pub, a); got != want {
				t.Errorf("%v (edge of %v): public = %v, want %v", a, p, got, want)
			}
		}
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestTrackerPublic: "public" becomes one rule per range, with the
// entry's port and index, beside the other entries' rules.
func TestTrackerPublic(t *testing.T) {
	entries, err := ParseAll([]string{"10.1.2.3:22", "public:443"})
	if err != nil {
		t.Fatal(err)
	}
	rules, next, err := NewTracker(entries, nil).Refresh(context.Background(), time.Now())
	if err != nil || !next.IsZero() {
		t.Fatalf("Refresh: %v (next %v)", err, next)
	}
	if len(rules) != 1+len(PublicPrefixes()) {
		t.Fatalf("%d rules, want %d", len(rules), 1+len(PublicPrefixes()))
	}
	if r := rules[0]; r.Prefix != netip.MustParsePrefix("10.1.2.3/32") || r.Index != 0 {
		t.Fatalf("first rule %+v", r)
	}
	for i, r := range rules[1:] {
		if r.Prefix != PublicPrefixes()[i] || r.Index != 1 || len(r.Ports) != 1 || r.Ports[0] != 443 {
			t.Fatalf("rule %d: %+v", i+1, r)
		}
	}
}
