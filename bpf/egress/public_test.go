package egress

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPublicRules: "public" is its ports on all of IPv4 and on IPv6's
// global unicast space, and every range it leaves out, with no ports.
func TestPublicRules(t *testing.T) {
	entries, err := ParseAll([]string{"10.1.2.3:22", "public:443"})
	if err != nil {
		t.Fatal(err)
	}
	rules, next, err := NewTracker(entries, nil).Refresh(context.Background(), time.Now())
	if err != nil || !next.IsZero() {
		t.Fatalf("Refresh: %v (next %v)", err, next)
	}
	if r := rules[0]; r.Prefix != netip.MustParsePrefix("10.1.2.3/32") || r.Index != 0 || r.Public || r.Exclude {
		t.Fatalf("first rule %+v", r)
	}
	var public, excluded []string
	for _, r := range rules[1:] {
		if r.Index != 1 {
			t.Fatalf("rule %+v: want index 1", r)
		}
		switch {
		case r.Public && !r.Exclude && slices.Equal(r.Ports, []uint16{443}):
			public = append(public, r.Prefix.String())
		case r.Exclude && !r.Public && len(r.Ports) == 0:
			excluded = append(excluded, r.Prefix.String())
		default:
			t.Fatalf("rule %+v", r)
		}
	}
	if !slices.Equal(public, []string{"0.0.0.0/0", "2000::/3"}) {
		t.Fatalf("public ranges %v", public)
	}
	for _, want := range []string{"10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
		"0.0.0.0/8", "224.0.0.0/3", "192.0.2.0/24", "2001::/23", "2002::/16", "2001:db8::/32", "168.63.129.16/32"} {
		if !slices.Contains(excluded, want) {
			t.Errorf("%s is not left out of public (%v)", want, excluded)
		}
	}
	for _, n := range notPublic {
		for _, u := range publicRanges {
			if u.Addr().Is4() == n.prefix.Addr().Is4() && !u.Contains(n.prefix.Addr()) {
				t.Errorf("%s (%s) lies outside %s: leaving it out means nothing", n.prefix, n.why, u)
			}
		}
	}
}

func TestHostPrefixes(t *testing.T) {
	ipnet := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	got := HostPrefixes([]net.Addr{
		ipnet("127.0.0.1/8"),
		ipnet("203.0.113.7/24"),
		ipnet("2001:db8:1::7/64"),
		&net.IPNet{IP: net.ParseIP("198.51.100.9"), Mask: net.CIDRMask(120, 128)}, // IPv4 in a 16-byte form
		&net.IPAddr{IP: net.ParseIP("1.2.3.4")},                                   // not an interface address: skipped
	}, []netip.Prefix{
		netip.MustParsePrefix("2a01:4f8:1::/64"), // on-link, the address a /128 of DHCPv6
		netip.MustParsePrefix("44.140.3.3/16"),   // a local route for a whole range (masked)
	})
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	want := []string{"44.140.0.0/16", "127.0.0.0/8", "127.0.0.1/32", "198.51.100.0/24", "198.51.100.9/32", "203.0.113.0/24", "203.0.113.7/32",
		"2001:db8:1::/64", "2001:db8:1::7/128", "2a01:4f8:1::/64"}
	if !slices.Equal(s, want) {
		t.Fatalf("HostPrefixes = %v, want %v", s, want)
	}
}

// TestHostRoutes reads this host's routes: its loopback range is among
// them (a local route), and no default route is.
func TestHostRoutes(t *testing.T) {
	routes, err := HostRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(routes, netip.MustParsePrefix("127.0.0.0/8")) {
		t.Errorf("no local route for 127.0.0.0/8 in %v", routes)
	}
	for _, p := range routes {
		if p.Bits() == 0 {
			t.Errorf("a default route among the host's: %v", routes)
		}
	}
}

func TestWithHost(t *testing.T) {
	host := []netip.Prefix{
		netip.MustParsePrefix("8.8.4.0/24"),
		netip.MustParsePrefix("127.0.0.1/32"), // already left out: no entry
		netip.MustParsePrefix("fe80::/64"),    // outside 2000::/3: no entry
		netip.MustParsePrefix("2a01:4f8::/32"),
	}
	plain := []Rule{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Index: 0}}
	if got := WithHost(plain, host); len(got) != 1 {
		t.Fatalf("without public: %+v", got)
	}
	base := append(plain, publicRules([]uint16{443}, 1)...)
	got := WithHost(base, host)[len(base):]
	var added []string
	for _, r := range got {
		if !r.Exclude || r.Index != 1 || len(r.Ports) != 0 {
			t.Fatalf("the host's range: %+v", r)
		}
		added = append(added, r.Prefix.String())
	}
	if !slices.Equal(added, []string{"8.8.4.0/24", "2a01:4f8::/32"}) {
		t.Fatalf("left out for the host: %v", added)
	}
}

// TestPublicAnswers: a DNS server's answer for a name is allowed only
// where "public" reaches; the host's own answers (Answer.Trusted) and
// entries that name addresses pass as they are.
func TestPublicAnswers(t *testing.T) {
	host := []netip.Prefix{netip.MustParsePrefix("44.130.7.1/32"), netip.MustParsePrefix("44.130.7.0/30")}
	answer := func(a string) Rule {
		addr := netip.MustParseAddr(a)
		return Rule{Prefix: netip.PrefixFrom(addr, addr.BitLen()), Ports: []uint16{443}, Answer: true, Name: "api.vendor.test"}
	}
	tests := []struct {
		name    string
		rule    Rule
		refused string // a word of the reason; "" when kept
	}{
		{"a public IPv4 address", answer("1.1.1.1"), ""},
		{"a public IPv6 address", answer("2606:4700::1111"), ""},
		{"loopback", answer("127.0.0.1"), "loopback"},
		{"loopback elsewhere in 127/8", answer("127.3.2.1"), "loopback"},
		{"0.0.0.0, which reaches the host", answer("0.0.0.0"), "this network"},
		{"IPv6 loopback", answer("::1"), "2000::/3"},
		{"a private network", answer("10.0.0.1"), "RFC 1918"},
		{"the home router", answer("192.168.1.1"), "RFC 1918"},
		{"the cloud metadata service", answer("169.254.169.254"), "metadata"},
		{"carrier-grade NAT", answer("100.64.1.1"), "carrier-grade"},
		{"unique local IPv6", answer("fd12::1"), "2000::/3"},
		{"link-local IPv6", answer("fe80::1"), "2000::/3"},
		{"6to4 of a private address", answer("2002:c0a8:101::1"), "6to4"},
		{"the host's own public address", answer("44.130.7.1"), "host's own"},
		{"the host's network", answer("44.130.7.2"), "host's own"},
		{"next to the host's network", answer("44.130.7.4"), ""},
		{"a trusted answer on loopback (hosts file, localhost)", Rule{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Name: "localhost"}, ""},
		{"an entry naming a private range", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, refused := PublicAnswers([]Rule{tt.rule}, host)
			if tt.refused == "" {
				if len(kept) != 1 || len(refused) != 0 {
					t.Fatalf("kept %v, refused %v; want it kept", kept, refused)
				}
				return
			}
			if len(kept) != 0 || len(refused) != 1 || refused[0].Rule.Prefix != tt.rule.Prefix {
				t.Fatalf("kept %v, refused %v; want it refused", kept, refused)
			}
			if !strings.Contains(refused[0].Why, tt.refused) {
				t.Fatalf("refused because %q, want a reason mentioning %q", refused[0].Why, tt.refused)
			}
		})
	}
}
