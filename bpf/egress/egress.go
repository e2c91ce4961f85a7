// Package egress parses a server's egress allow-list and resolves it to
// address prefixes for the kernel.
//
// Grammar of one entry:
//
//	entry  = target ":" port
//	target = IPv4 | IPv4 "/" bits | "[" IPv6 "]" | "[" IPv6 "/" bits "]" | "public" | hostname
//	port   = 1..65535 | "*"
//
// Examples: "10.0.0.0/8:443", "api.github.com:443", "127.0.0.1:*",
// "[::1]:8080", "[2001:db8::/32]:*", "public:443". Host names are
// resolved when a session starts (DNS, a stub resolver that reports
// TTLs); every address a name resolves to is allowed on the entry's port
// until its record's TTL runs out, and the name is looked up again then
// (Tracker). A DNS server's answers are allowed only where "public"
// reaches (PublicAnswers: against DNS rebinding); the host's hosts file,
// localhost and private domains are trusted (Answer.Trusted). "public"
// is every address on the internet, IPv4 and IPv6, and none of the
// host's own or its networks' (publicRules, WithHost).
package egress

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Entry is one parsed allow-list entry.
type Entry struct {
	Raw    string
	Index  int
	Prefix netip.Prefix // zero when Host is set
	Host   string
	Public bool   // the target is "public" (publicRules)
	Port   uint16 // 0 with AnyPort
	Any    bool
}

// publicTarget is the target that stands for every public address.
const publicTarget = "public"

var hostname = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// Parse parses one entry.
func Parse(s string) (Entry, error) {
	e := Entry{Raw: s}
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return e, fmt.Errorf("egress %q: want TARGET:PORT, e.g. \"api.example.com:443\" or \"10.0.0.0/8:*\"", s)
	}
	target, port := s[:i], s[i+1:]
	if port == "*" {
		e.Any = true
	} else {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return e, fmt.Errorf("egress %q: port must be 1-65535 or *, got %q", s, port)
		}
		e.Port = uint16(n)
	}
	bracketed := strings.HasPrefix(target, "[") && strings.HasSuffix(target, "]")
	if bracketed {
		target = target[1 : len(target)-1]
	}
	if strings.Contains(target, "/") {
		p, err := netip.ParsePrefix(target)
		if err != nil {
			return e, fmt.Errorf("egress %q: %v", s, err)
		}
		if p.Addr().Is6() && !bracketed {
			return e, fmt.Errorf("egress %q: write IPv6 ranges in brackets, e.g. \"[2001:db8::/32]:443\"", s)
		}
		e.Prefix = p.Masked()
		return e, nil
	}
	if !bracketed && strings.EqualFold(target, publicTarget) {
		e.Public = true
		return e, nil
	}
	if a, err := netip.ParseAddr(target); err == nil {
		if a.Is6() && !bracketed {
			return e, fmt.Errorf("egress %q: write IPv6 addresses in brackets, e.g. \"[::1]:443\"", s)
		}
		e.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return e, nil
	}
	if bracketed || !hostname.MatchString(target) {
		return e, fmt.Errorf("egress %q: %q is not an address, a range or a host name", s, target)
	}
	e.Host = strings.ToLower(target)
	return e, nil
}

// ParseAll parses a list, numbering entries by position.
func ParseAll(list []string) ([]Entry, error) {
	out := make([]Entry, 0, len(list))
	for i, s := range list {
		e, err := Parse(s)
		if err != nil {
			return nil, err
		}
		e.Index = i
		out = append(out, e)
	}
	return out, nil
}

// Rule is a resolved rule.
type Rule struct {
	Prefix netip.Prefix
	Ports  []uint16 // empty: any
	Index  int
	// Public: part of "public", whose ports stop at the Exclude ranges.
	Public bool
	// Exclude: a range "public" leaves out; it allows nothing itself.
	Exclude bool
	// Answer: an address a DNS server gave for the entry's host name
	// (Name), which its zone's owner chose: allowed only where "public"
	// reaches (PublicAnswers). Addresses from the host's own files and
	// private domains are not answers in this sense (Answer.Trusted).
	Answer bool
	Name   string // the host name the address is for
}

// rules are the entry's rules when it names no host (Tracker resolves
// those): its range, or "public"'s ranges and those it leaves out.
func (e Entry) rules() []Rule {
	if e.Public {
		return publicRules(e.ports(), e.Index)
	}
	return []Rule{{Prefix: e.Prefix, Ports: e.ports(), Index: e.Index}}
}

// ports are the entry's ports as a rule holds them: none for any.
func (e Entry) ports() []uint16 {
	if e.Any {
		return nil
	}
	return []uint16{e.Port}
}

// HasHosts reports whether any entry needs resolving.
func HasHosts(entries []Entry) bool {
	for _, e := range entries {
		if e.Host != "" {
			return true
		}
	}
	return false
}

// maxNameservers is how many nameservers of resolv.conf the C library
// uses (MAXNS).
const maxNameservers = 3

// ResolvConf is the resolver configuration of the host, which a server
// sharing the host's network reads through its view of the host's root.
const ResolvConf = "/etc/resolv.conf"

// DNSRules are the rules every host-network session gets: DNS (port 53)
// to a resolver on loopback (systemd-resolved, dnsmasq) and to the
// nameservers resolvConf names (the router's or the network's resolver
// when nothing on loopback answers), and nothing else on those addresses.
func DNSRules(resolvConf string) []Rule {
	rules := []Rule{
		{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Ports: []uint16{53}, Index: -1},
		{Prefix: netip.MustParsePrefix("::1/128"), Ports: []uint16{53}, Index: -1},
	}
	addrs := resolvConfAddrs(resolvConf)
	if len(addrs) > maxNameservers {
		addrs = addrs[:maxNameservers] // the C library asks no other
	}
	for _, a := range addrs {
		if a.IsLoopback() {
			continue // the loopback rules hold it
		}
		// fe80::1%eth0: the hook sees the address, not the interface, so
		// fe80::1 port 53 is allowed on every interface.
		a = a.WithZone("")
		rules = append(rules, Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Ports: []uint16{53}, Index: -1})
	}
	return rules
}
