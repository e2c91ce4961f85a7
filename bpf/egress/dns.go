package egress

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Answer is one address a name resolved to, valid for TTL.
type Answer struct {
	Addr netip.Addr
	TTL  time.Duration
	// Trusted: the host's own word for the name (its hosts file, or
	// localhost), or a name in one of DNS.PrivateDomains. Any other
	// answer comes from whoever runs the name's zone, who can point it at
	// loopback or the LAN (DNS rebinding): such answers are allowed only
	// where "public" reaches (PublicAnswers).
	Trusted bool
}

// HostsTTL is how long an /etc/hosts answer is trusted before the file
// is read again (the file has no TTLs).
const HostsTTL = 30 * time.Second

// DNS is a stub resolver that reports record TTLs, which Go's resolver
// does not: egress rules for host names follow the records' lifetimes.
// Names are looked up in the hosts file first, then asked of the servers
// in order (UDP, TCP when the answer is truncated). Names are absolute:
// no search domains are applied.
type DNS struct {
	// Servers are "host:port" addresses; empty: the nameservers of
	// /etc/resolv.conf (127.0.0.1:53 when it names none).
	Servers []string
	// HostsFile defaults to /etc/hosts; "-" disables it.
	HostsFile string
	// Timeout per query and server (default 2 s).
	Timeout time.Duration
	// PrivateDomains are the domains whose names the host's own DNS
	// answers (an intranet's "corp.example"): their answers are trusted
	// whatever the address, as unbound's private-domain and dnsmasq's
	// rebind-domain-ok. Lower case, no trailing dot.
	PrivateDomains []string
}

// ErrNoSuchHost is returned for a name with no addresses (NXDOMAIN or no
// A/AAAA records).
var ErrNoSuchHost = errors.New("no such host")

// LookupTTL returns the IPv4 and IPv6 addresses of host with their TTLs
// (the smallest TTL along a CNAME chain).
func (r *DNS) LookupTTL(ctx context.Context, host string) ([]Answer, error) {
	host = strings.TrimSuffix(host, ".")
	if a := r.fromHosts(host); len(a) > 0 {
		return a, nil
	}
	if InDomain(host, "localhost") {
		// RFC 6761: loopback, whatever a DNS server would say.
		return []Answer{{netip.AddrFrom4([4]byte{127, 0, 0, 1}), HostsTTL, true}, {netip.IPv6Loopback(), HostsTTL, true}}, nil
	}
	servers := r.Servers
	if len(servers) == 0 {
		servers = resolvConfServers("/etc/resolv.conf")
	}
	var out []Answer
	var errs []error
	found := false
	for _, qtype := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		ans, err := r.query(ctx, servers, host, qtype)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		found = true
		out = append(out, ans...)
	}
	if !found {
		if !slices.ContainsFunc(errs, func(err error) bool { return !errors.Is(err, ErrNoSuchHost) }) {
			return nil, errs[0] // NXDOMAIN for A and AAAA: said once
		}
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", host, ErrNoSuchHost)
	}
	return out, nil
}

// private reports whether name is in one of the private domains.
func (r *DNS) private(name string) bool {
	return slices.ContainsFunc(r.PrivateDomains, func(d string) bool { return InDomain(name, d) })
}

// InDomain reports whether name is domain or a name under it, ignoring
// case and a trailing dot.
func InDomain(name, domain string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	return domain != "" && (name == domain || strings.HasSuffix(name, "."+domain))
}

// query asks each server in turn until one answers authoritatively for
// the name (an answer or NXDOMAIN).
func (r *DNS) query(ctx context.Context, servers []string, host string, qtype dnsmessage.Type) ([]Answer, error) {
	name, err := dnsmessage.NewName(host + ".")
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid host name: %w", host, err)
	}
	var errs []error
	for _, server := range servers {
		ans, err := r.exchange(ctx, server, name, qtype)
		if err == nil || errors.Is(err, ErrNoSuchHost) {
			if err != nil {
				return nil, err
			}
			return ans, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return nil, fmt.Errorf("resolve %s %s: %w", host, qtype, errors.Join(errs...))
}

func (r *DNS) exchange(ctx context.Context, server string, name dnsmessage.Name, qtype dnsmessage.Type) ([]Answer, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var idb [2]byte
	crand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q := dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, fmt.Errorf("build dns query: %w", err)
	}
	if err := b.Question(q); err != nil {
		return nil, fmt.Errorf("build dns query for %s: %w", name, err)
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	resp, err := roundTrip(ctx, "udp", server, msg)
	if err != nil {
		return nil, err
	}
	ans, truncated, err := parseAnswer(resp, id, q, r.private)
	if truncated {
		if resp, err = roundTrip(ctx, "tcp", server, msg); err != nil {
			return nil, err
		}
		ans, _, err = parseAnswer(resp, id, q, r.private)
	}
	return ans, err
}

func roundTrip(ctx context.Context, network, server string, msg []byte) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil { // a read without it could wait forever
			return nil, err
		}
	}
	if network == "udp" {
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf) // a connected UDP socket: only the server's datagrams
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
	if _, err := c.Write(append(framed, msg...)); err != nil {
		return nil, err
	}
	rd := bufio.NewReader(c)
	var n uint16
	if err := binary.Read(rd, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(rd, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// parseAnswer checks the response belongs to the query and follows the
// CNAME chain from the question's name to its addresses. An address is
// trusted (Answer.Trusted) when the question's name and every name the
// chain went through are private (a private domain's name that is an
// alias of a vendor's name gets the addresses the vendor chose).
func parseAnswer(resp []byte, id uint16, q dnsmessage.Question, private func(name string) bool) (_ []Answer, truncated bool, _ error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, false, fmt.Errorf("malformed DNS response: %w", err)
	}
	if h.ID != id || !h.Response {
		return nil, false, errors.New("DNS response does not match the query")
	}
	if h.Truncated {
		return nil, true, nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) || qs[0].Type != q.Type {
		return nil, false, errors.New("DNS response answers another question")
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, false, fmt.Errorf("%s: %w", strings.TrimSuffix(q.Name.String(), "."), ErrNoSuchHost)
	default:
		return nil, false, fmt.Errorf("DNS server answered %s", h.RCode)
	}
	type rec struct {
		cname string
		addr  netip.Addr
		ttl   uint32
	}
	byName := map[string][]rec{}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("malformed DNS answer: %w", err)
		}
		owner := strings.ToLower(rh.Name.String())
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, false, err
			}
			byName[owner] = append(byName[owner], rec{addr: netip.AddrFrom4(r.A), ttl: rh.TTL})
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, false, err
			}
			byName[owner] = append(byName[owner], rec{addr: netip.AddrFrom16(r.AAAA).Unmap(), ttl: rh.TTL})
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, false, err
			}
			byName[owner] = append(byName[owner], rec{cname: strings.ToLower(r.CNAME.String()), ttl: rh.TTL})
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, false, err
			}
		}
	}
	var out []Answer
	name, ttl := strings.ToLower(q.Name.String()), uint32(1<<31)
	trusted := private(name)
	for hops := 0; hops < 10; hops++ {
		next := ""
		for _, r := range byName[name] {
			switch {
			case r.cname != "":
				next, ttl = r.cname, min(ttl, r.ttl)
			case r.addr.Is4() == (q.Type == dnsmessage.TypeA):
				out = append(out, Answer{Addr: r.addr, TTL: time.Duration(min(ttl, r.ttl)) * time.Second, Trusted: trusted})
			}
		}
		if next == "" || len(out) > 0 {
			break
		}
		name = next
		trusted = trusted && private(name)
	}
	return out, false, nil
}

// fromHosts looks host up in the hosts file.
func (r *DNS) fromHosts(host string) []Answer {
	path := r.HostsFile
	if path == "-" {
		return nil
	}
	if path == "" {
		path = "/etc/hosts"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []Answer
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		for _, n := range f[1:] {
			if strings.EqualFold(strings.TrimSuffix(n, "."), host) {
				out = append(out, Answer{Addr: a.Unmap().WithZone(""), TTL: HostsTTL, Trusted: true})
				break
			}
		}
	}
	return out
}

// resolvConfServers returns the nameservers of a resolv.conf as
// host:port, 127.0.0.1:53 when it names none (as the C library does).
func resolvConfServers(path string) []string {
	var out []string
	for _, a := range resolvConfAddrs(path) {
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	if len(out) == 0 {
		out = []string{"127.0.0.1:53"}
	}
	return out
}

// resolvConfAddrs returns the addresses of a resolv.conf's nameservers,
// IPv4-mapped ones as IPv4; none when it cannot be read.
func resolvConfAddrs(path string) []netip.Addr {
	var out []netip.Addr
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// CheckDomain checks a private domain (DNS.PrivateDomains): a host name,
// with or without a trailing dot.
func CheckDomain(domain string) error {
	if d := strings.TrimSuffix(domain, "."); d == "" || len(d) > 253 || !hostname.MatchString(d) {
		return fmt.Errorf("%q is not a domain name (e.g. \"corp.example\")", domain)
	}
	return nil
}
