package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/bpf/egress"
	"github.com/mcpcage/mcpcage/internal/tcpsockets"
)

// publicDialer dials a host name only at the addresses a server's egress
// would allow it (egress.PublicAnswers): an address its DNS answer gives
// must be one "public" reaches, unless the answer is the host's own word
// (hosts file, localhost) or the name is in a private domain. Whoever
// runs a remote server's zone could otherwise point the name at the
// host's loopback or the LAN, and the daemon (root, outside any sandbox)
// would connect there. An address written in the configuration is
// dialled as it is.
//
// For a user's own server (owner set), every connection is made with the
// user's credentials (dialAs) and checked once made (checkPeer):
// mcpcaged runs as root, so a program of this host that listens on
// loopback, or on one of the host's addresses, would take a user's
// server's requests for root's. An administrator's server's connections
// are checked too, against localUIDs: a program of this host they reach
// must be one of those users' (its local_users, root by default; any
// with anyLocal), or any user who took its port while the service was
// down (a restart, a crash) would receive every user's tokens and calls
// (found by a red-team helper).
type publicDialer struct {
	dialer    *net.Dialer
	dns       *egress.DNS
	owner     *Owner
	localUIDs []uint32
	anyLocal  bool
}

func (p *publicDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return p.dial(ctx, network, addr)
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
		c, err := p.dial(ctx, network, net.JoinHostPort(a.Addr.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, oneLine(errs)
}

// dial connects to addr, and checks the other end for a user's own
// server.
func (p *publicDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	var want peerWanted
	switch {
	case p.owner == nil:
		c, err = p.dialer.DialContext(ctx, network, addr)
		want = peerWanted{uids: p.localUIDs, admin: true}
	case p.owner.UID == 0:
		c, err = p.dialer.DialContext(ctx, network, addr)
		want = peerWanted{uids: []uint32{0}}
	default:
		c, err = dialAs(ctx, addr, *p.owner, p.dialer.Timeout)
		want = peerWanted{uids: []uint32{p.owner.UID}}
	}
	if err != nil {
		return nil, err
	}
	if want.admin && p.anyLocal {
		return c, nil
	}
	if err := checkPeer(c, want); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// peerWanted is who may run a program of this host a connection
// reaches: the user, for a user's own server, or (admin) one of an
// administrator's server's local_users, root by default.
type peerWanted struct {
	uids  []uint32
	admin bool
}

// checkPeer keeps a connection only when its other end is not a program
// of this host, or is one that want's user runs: the kernel's uid for
// the socket at the other end (tcpsockets, the kernel's own socket tables),
// found by the connection's own endpoints after it is made, so no
// program can take the place of the one checked, and a connection
// redirected to a local port is caught too. A destination that is the
// host's own (loopback, an address of its interfaces) must be found,
// but for an administrator's server (see peerAbsent).
func checkPeer(c net.Conn, want peerWanted) error {
	local, lok := c.LocalAddr().(*net.TCPAddr)
	remote, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return fmt.Errorf("mcpcaged cannot tell who is at the other end of a %s connection", c.LocalAddr().Network())
	}
	dest := remote.AddrPort()
	own := isHostAddress(dest.Addr())
	if want.admin && !own {
		// Only root can redirect an administrator's connection to another
		// host to a local port: not looked up.
		return nil
	}
	var s tcpsockets.Socket
	var found bool
	var err error
	// A listener's side of a connection is in the kernel's table from
	// the first SYN, before the connect can return; but one that answers
	// with SYN cookies (a full queue, or net.ipv4.tcp_syncookies = 2)
	// keeps nothing until the last ACK arrives, which the connect may
	// return just before: looked for a few times.
	for try := 0; ; try++ {
		s, found, err = tcpsockets.PeerOf(local.AddrPort(), dest)
		if err != nil || found || !own || try == peerTries {
			break
		}
		time.Sleep(time.Millisecond)
	}
	whose := "a remote server of your own"
	if want.admin {
		whose = "the server"
	}
	switch {
	case err != nil:
		return fmt.Errorf("mcpcaged could not tell whose program %s is (%v), so %s does not reach it", dest, err, whose)
	case !found && own && want.admin:
		return peerAbsent(dest, want)
	case !found && own:
		return fmt.Errorf("%s is this host's, and mcpcaged could not find the program at the other end of its connection, so %s does not reach it", dest, whose)
	case found && !s.State.Open():
		return fmt.Errorf("the program at %s (uid %d) closed or shut its end of the connection (%s) before mcpcaged could check it, so %s does not reach it", dest, s.UID, s.State, whose)
	case found && !slices.Contains(want.uids, s.UID) && want.admin:
		return fmt.Errorf("%s is a program of this host that uid %d runs, not one of the server's local_users (root when unset): anyone who took the port while the service was down would receive every user's tokens and calls; add uid %d (or its user's name) to local_users in the server's configuration if its program is meant", dest, s.UID, s.UID)
	case found && !slices.Contains(want.uids, s.UID):
		return fmt.Errorf("%s is a program of this host that uid %d runs, not you: a remote server of your own reaches programs of this host only when they are your own (mcpcaged connects as root); ask your administrator to add it to the configuration if it is meant", dest, s.UID)
	}
	return nil
}

// peerTries is how many times, 1 ms apart, checkPeer looks again for the
// other end of a connection to this host that it did not find.
const peerTries = 20

// peerAbsent decides an administrator's server's connection to an
// address of this host whose other end the kernel says is no socket of
// this host's network namespace: a container the port is forwarded to
// (DNAT). That is the kernel's exact answer (tcpsockets.PeerOf: its table
// read in one pass, under the lock of each bucket, an answer that also
// held the connection's own socket), not a read of /proc/net/tcp, which
// misses sockets while others come and go (the /proc read a user could
// make miss by churning loopback connections was a way in). It is kept
// unless a program of another user than local_users listens where it
// went: one that answered with SYN cookies and has not yet taken the
// last ACK, or dropped it, would have the connection without being
// found.
func peerAbsent(dest netip.AddrPort, want peerWanted) error {
	ls, err := tcpsockets.Listeners(dest)
	if err != nil {
		return fmt.Errorf("mcpcaged could not tell whose program listens at %s (%v), so the server does not reach it", dest, err)
	}
	for _, l := range ls {
		if !slices.Contains(want.uids, l.UID) {
			return fmt.Errorf("%s is this host's, and no socket of this host is the other end of mcpcaged's connection, yet uid %d, not one of the server's local_users, listens there (at %s): it could take the connection once its handshake completes, so the server does not reach it; stop that program, or add uid %d (or its user's name) to local_users if it is meant", dest, l.UID, l.Local, l.UID)
		}
	}
	return nil
}

// isHostAddress reports whether a is this host's: loopback, unspecified
// (which reaches the host), or an address of one of its interfaces.
func isHostAddress(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: the other end must then be found to be kept
	}
	for _, ia := range addrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
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
