package egress

import (
	"net/netip"
	"sync"
)

// notPublic are the ranges "public" leaves out: the host's own addresses,
// its local networks', and those that carry traffic to either. A server
// allowed "public:443" reaches any web site, not the admin page of the
// router, a service on the host's loopback, or the cloud's metadata
// service.
var notPublic = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network (0.0.0.0 reaches the host)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local, and cloud metadata services"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (RFC 2544), local proxies' fake addresses"},
	{netip.MustParsePrefix("224.0.0.0/3"), "multicast, reserved and broadcast"},
	{netip.MustParsePrefix("2001::/32"), "Teredo: IPv4 tunnelled in IPv6"},
	{netip.MustParsePrefix("2002::/16"), "6to4: an IPv4 address, private ones too, inside"},
}

// publicUniverse are the ranges "public" is cut from: all of IPv4, and
// IPv6's global unicast space (loopback, link-local, unique local,
// multicast, IPv4-mapped and the NAT64 prefix lie outside it; IPv4-mapped
// addresses follow the IPv4 rules in the kernel).
var publicUniverse = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/0"),
	netip.MustParsePrefix("2000::/3"),
}

// PublicPrefixes are the address ranges of the egress target "public":
// publicUniverse without notPublic, as the fewest ranges that cover it
// exactly (59 for IPv4, 29 for IPv6), ordered by address.
var PublicPrefixes = sync.OnceValue(func() []netip.Prefix {
	var out []netip.Prefix
	var cut func(p netip.Prefix)
	cut = func(p netip.Prefix) {
		overlaps := false
		for _, n := range notPublic {
			if !n.prefix.Overlaps(p) {
				continue
			}
			if n.prefix.Bits() <= p.Bits() {
				return // p lies inside a range left out
			}
			overlaps = true
		}
		if !overlaps {
			out = append(out, p)
			return
		}
		lo, hi := halves(p)
		cut(lo)
		cut(hi)
	}
	for _, u := range publicUniverse {
		cut(u)
	}
	return out
})

// halves splits p into its two ranges one bit longer.
func halves(p netip.Prefix) (lo, hi netip.Prefix) {
	bits := p.Bits()
	b := p.Addr().AsSlice()
	lo = netip.PrefixFrom(p.Addr(), bits+1)
	b[bits/8] |= 0x80 >> (bits % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits+1)
}
