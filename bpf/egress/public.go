package egress

import (
	"net"
	"net/netip"
	"slices"
)

// publicRanges are what the target "public" starts from: all of IPv4,
// and IPv6's global unicast space (loopback, link-local, unique local,
// multicast, IPv4-mapped and NAT64 addresses lie outside it;
// IPv4-mapped ones follow the IPv4 rules in the kernel).
var publicRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/0"),
	netip.MustParsePrefix("2000::/3"),
}

// notPublic are the ranges "public" always leaves out: those IANA marks
// as not globally reachable, and those that carry traffic to them. A
// server allowed "public:443" reaches web sites, not the admin page of
// the router, a service on the host's loopback, or the cloud's metadata
// service. The host's own addresses and networks are left out too
// (HostPrefixes), whatever their range.
var notPublic = []leftOut{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network (0.0.0.0 reaches the host)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	// Azure's WireServer answers each VM on a public address (VM agent,
	// extensions and their settings, health); found by a red-team helper.
	{netip.MustParsePrefix("168.63.129.16/32"), "Azure's WireServer (the VM's platform endpoint)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local, and cloud metadata services"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (TEST-NET-1)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private networks (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking, and local proxies' fake addresses"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (TEST-NET-2)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (TEST-NET-3)"},
	{netip.MustParsePrefix("224.0.0.0/3"), "multicast, reserved and broadcast"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignments, Teredo (IPv4 inside IPv6), benchmarking"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("2002::/16"), "6to4: an IPv4 address, private ones too, inside"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
}

// leftOut is a range "public" leaves out, and why.
type leftOut struct {
	prefix netip.Prefix
	why    string
}

// publicRules are the rules of an entry "public": its ports on every
// public range, and the ranges left out (notPublic); the host's own
// (HostPrefixes) are added where the rules meet the host (WithHost).
func publicRules(ports []uint16, index int) []Rule {
	out := make([]Rule, 0, len(publicRanges)+len(notPublic))
	for _, p := range publicRanges {
		out = append(out, Rule{Prefix: p, Ports: ports, Index: index, Public: true})
	}
	for _, n := range notPublic {
		out = append(out, Rule{Prefix: n.prefix, Index: index, Exclude: true})
	}
	return out
}

// HostPrefixes are the host's own addresses and the networks it is on:
// each interface address and its prefix (203.0.113.7/24 gives
// 203.0.113.7/32 and 203.0.113.0/24), from addrs as net.InterfaceAddrs
// returns them, and the ranges of routes (HostRoutes), sorted. They are
// left out of "public": a host with a global IPv6 address or a public
// IPv4 one would otherwise reach itself and its neighbours through it.
func HostPrefixes(addrs []net.Addr, routes []netip.Prefix) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	for _, p := range routes {
		seen[p.Masked()] = true
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := ipn.Mask.Size()
		if ip.Is4() && ones > 32 {
			ones -= 96
		}
		seen[netip.PrefixFrom(ip, ip.BitLen())] = true
		if p, err := ip.Prefix(ones); err == nil {
			seen[p] = true
		}
	}
	out := make([]netip.Prefix, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// WithHost adds, when rules hold "public", the host's prefixes as ranges
// it leaves out: those that "public" would otherwise reach (a host
// prefix outside its ranges, or inside one it always leaves out, would
// only take room in the kernel's tries).
func WithHost(rules []Rule, host []netip.Prefix) []Rule {
	idx := slices.IndexFunc(rules, func(r Rule) bool { return r.Public })
	if idx < 0 {
		return rules
	}
	for _, p := range host {
		if publicReaches(p) {
			rules = append(rules, Rule{Prefix: p, Index: rules[idx].Index, Exclude: true})
		}
	}
	return rules
}

// publicReaches reports whether some address of p is in "public"'s
// ranges and not in a range it always leaves out.
func publicReaches(p netip.Prefix) bool {
	return notPublicWhy(p, nil) == ""
}

// Refused is a DNS answer (Rule.Answer) that its entry may not reach,
// and why.
type Refused struct {
	Rule Rule
	Why  string
}

// PublicAnswers keeps of the rules' DNS answers (Rule.Answer) those
// "public" reaches, and refuses the others: an address in a range it
// always leaves out (loopback, the private networks, link-local with the
// cloud metadata service...) or one of the host's own addresses and
// networks (host, as HostPrefixes gives them). Whoever runs a name's
// zone (often the vendor of the server allowed to reach it) chooses its
// addresses; without this, pointing the name at 127.0.0.1 or a router
// would open the entry's port there (DNS rebinding). Other rules pass
// as they are: an entry that names a range or address, or a name the
// host's own files or private domains resolve (Answer.Trusted), still
// allows what it names.
func PublicAnswers(rules []Rule, host []netip.Prefix) (kept []Rule, refused []Refused) {
	kept = make([]Rule, 0, len(rules))
	for _, r := range rules {
		if !r.Answer {
			kept = append(kept, r)
			continue
		}
		if why := notPublicWhy(r.Prefix, host); why != "" {
			refused = append(refused, Refused{Rule: r, Why: why})
			continue
		}
		kept = append(kept, r)
	}
	return kept, refused
}

// notPublicWhy says why "public" does not reach p (an address as a
// prefix), or "" when it does.
func notPublicWhy(p netip.Prefix, host []netip.Prefix) string {
	if !slices.ContainsFunc(publicRanges, func(u netip.Prefix) bool { return u.Overlaps(p) }) {
		return "outside IPv6's global unicast space 2000::/3 (loopback, link-local, unique local, multicast or NAT64)"
	}
	for _, n := range notPublic {
		if n.prefix.Bits() <= p.Bits() && n.prefix.Contains(p.Addr()) {
			return n.prefix.String() + ", " + n.why
		}
	}
	for _, h := range host {
		if h.Bits() <= p.Bits() && h.Contains(p.Addr()) {
			return "the host's own address or one of its networks (" + h.String() + ")"
		}
	}
	return ""
}

// NotPublic says why "public" does not reach address a, given the host's
// prefixes (HostPrefixes), or "" when it does: the check of PublicAnswers
// for one address, for those who dial a name themselves (the remote
// bridge).
func NotPublic(a netip.Addr, host []netip.Prefix) string {
	a = a.Unmap().WithZone("")
	return notPublicWhy(netip.PrefixFrom(a, a.BitLen()), host)
}
