package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// publicDialer dials a host name only at the addresses a server's egress
// would allow it (egress.PublicAnswers): an address its DNS answer gives
// must be one "public" reaches, unless the answer is the host's own word
// (hosts file, localhost) or the name is in a private domain. Whoever
// runs a remote server's zone could otherwise point the name at the
// host's loopback or the LAN, and the daemon (root, outside any sandbox)
// would connect there. An address written in the configuration is
// dialled as it is.
type publicDialer struct {
	dialer *net.Dialer
	dns    *egress.DNS
}

func (p *publicDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return p.dialer.DialContext(ctx, network, addr)
	}
	answers, err := p.dns.LookupTTL(ctx, host)
	if err != nil {
		// As Go's resolver says it (describe).
		return nil, &net.DNSError{Err: err.Error(), Name: host, IsNotFound: errors.Is(err, egress.ErrNoSuchHost),
			IsTimeout: errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)}
	}
	var own []netip.Prefix
	ifAddrs, aerr := net.InterfaceAddrs()
	routes, rerr := egress.HostRoutes()
	hostErr := errors.Join(aerr, rerr)
	if hostErr == nil {
		own = egress.HostPrefixes(ifAddrs, routes)
	}
	var errs []error
	for _, a := range answers {
		if !a.Trusted {
			why := egress.NotPublic(a.Addr, own)
			if hostErr != nil {
				why = "the host's addresses could not be read to tell whether it is one of them (" + hostErr.Error() + ")"
			}
			if why != "" {
				errs = append(errs, fmt.Errorf("%s resolved to %s, which is refused: %s; a host name reaches public addresses only (against DNS rebinding): list the name's domain in private_domains if the address is meant", host, a.Addr, why))
				continue
			}
		}
		c, err := p.dialer.DialContext(ctx, network, net.JoinHostPort(a.Addr.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, oneLine(errs)
}

// oneLine joins errors on one line (a client shows the first line).
func oneLine(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}
