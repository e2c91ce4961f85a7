package tcpsockets

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// State is a TCP socket's state, numbered as the kernel numbers it
// (include/net/tcp_states.h).
type State uint8

// The states of a TCP socket.
const (
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3 // the handshake not yet complete on its side
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
)

var stateNames = [...]string{Established: "ESTABLISHED", SynSent: "SYN_SENT", SynRecv: "SYN_RECV", FinWait1: "FIN_WAIT1",
	FinWait2: "FIN_WAIT2", TimeWait: "TIME_WAIT", Close: "CLOSE", CloseWait: "CLOSE_WAIT", LastAck: "LAST_ACK", Listen: "LISTEN",
	Closing: "CLOSING", newSynRecv: "SYN_RECV"}

func (st State) String() string {
	if int(st) < len(stateNames) && stateNames[st] != "" {
		return stateNames[st]
	}
	return fmt.Sprintf("state %d", uint8(st))
}

// Open reports whether a socket in state st is the live other end of a
// connection (established, or completing its handshake).
func (st State) Open() bool { return st == Established || st == SynRecv }

// Socket is one TCP socket as the kernel describes it.
type Socket struct {
	// UID is whose it is: the uid of the program that made it; not yet
	// accepted, its listener's. The kernel gives 0 for a socket in
	// TIME_WAIT, whoever made it.
	UID   uint32
	Inode uint64 // 0 while it waits to be accepted, and once its program closed it
	State State
	// Local and Remote are its endpoints (an IPv4 one mapped into IPv6,
	// by a dual-stack socket, as IPv4).
	Local, Remote netip.AddrPort

	v6only bool // a listener: IPV6_V6ONLY (takes no IPv4 connection)
}

// ErrAmbiguous: more than one socket has the endpoint as its remote one
// (or, for a connection still completing its handshake, more than one
// user listens where it arrived).
var ErrAmbiguous = errors.New("more than one socket of this host is connected to that endpoint")

// ConnectedTo finds the socket of this host connected to ep (its remote
// endpoint is ep), established or completing its handshake: the other
// end of a connection made from ep, when that end is on this host (its
// loopback, one of its addresses, or a local service a connection was
// redirected to by DNAT or REDIRECT, whose own endpoint is then not the
// one dialled). found is false when no socket of this network namespace
// is.
func ConnectedTo(ep netip.AddrPort) (s Socket, found bool, err error) {
	ep = unmap(ep)
	all, err := dump(ep.Addr(), liveStates, endpoint(opDCond, ep))
	if err != nil {
		return Socket{}, false, err
	}
	return withOwner(choose(all))
}

// PeerOf is the other end of this host's connection from local to dest,
// when it is a socket of this host: the socket whose endpoints are dest
// and local, in whatever state (a program that shut its end of the
// connection is still at it: the caller decides what a state means);
// otherwise the one live socket connected to local (a connection
// redirected to a local port has another endpoint than dest; more than
// one is ambiguous).
//
// found is false only when the kernel's table, read in one pass that
// also listed the connection's own socket (local to dest), has no such
// socket: the other end is not in this network namespace (a container a
// port is forwarded to). Without the connection's own socket in it, an
// answer proves nothing and is an error.
func PeerOf(local, dest netip.AddrPort) (s Socket, found bool, err error) {
	local, dest = unmap(local), unmap(dest)
	if s, found, err := lookup(dest, local); err != nil || found {
		return withOwner(s, found, err)
	}
	prog := or(endpoint(opDCond, local), and(endpoint(opSCond, local), endpoint(opDCond, dest)))
	all, err := dump(local.Addr(), anyStates, prog)
	if err != nil {
		return Socket{}, false, err
	}
	own := false
	var live []Socket
	for _, c := range all {
		switch {
		case c.Local == local && c.Remote == dest:
			own = true
		case c.Local == dest && c.Remote == local:
			// Made, or changed state, since the lookup above.
			return withOwner(c, true, nil)
		case c.State.Open() && c.Remote == local:
			live = append(live, c)
		}
	}
	if !own {
		return Socket{}, false, fmt.Errorf("the kernel's list of this host's sockets (sock_diag) lacks the connection's own (%s to %s), so it cannot tell that nothing of this host is at its other end (is the connection closed, or in another network namespace?)", local, dest)
	}
	return withOwner(choose(live))
}

// Between finds the socket of this host whose local endpoint is local
// and whose remote one is remote, in whatever state (the caller decides
// what a closing one means): the program that connected from local to a
// listener at remote. found is false when no socket of this network
// namespace is.
func Between(local, remote netip.AddrPort) (s Socket, found bool, err error) {
	return withOwner(lookup(unmap(local), unmap(remote)))
}

// Listeners are the listening sockets of this network namespace that a
// connection to ep could reach: on ep's port, bound to ep's address or
// to the unspecified one (an IPv6 one not IPV6_V6ONLY takes IPv4 too).
func Listeners(ep netip.AddrPort) ([]Socket, error) {
	ep = unmap(ep)
	all, err := dump(ep.Addr(), listenStates, cond(opSCond, netip.Addr{}, int(ep.Port())))
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		a := s.Local.Addr()
		takes := a == ep.Addr() ||
			a == netip.IPv6Unspecified() && (ep.Addr().Is6() || !s.v6only) ||
			a == netip.IPv4Unspecified() && ep.Addr().Is4()
		if s.Local.Port() == ep.Port() && takes {
			out = append(out, s)
		}
	}
	return out, nil
}

// Check reports whether the kernel answers socket diagnostics for TCP
// (the modules inet_diag and tcp_diag, or built in), with an error that
// says what to do when it does not.
func Check() error {
	// A dump of no state: the kernel's TCP handler answers, with
	// nothing.
	a, err := request{family: unix.AF_INET, dump: true}.run()
	if err == nil && a.errno != 0 {
		err = a.errno
	}
	if err != nil {
		return fmt.Errorf("the kernel does not answer TCP socket diagnostics (NETLINK_SOCK_DIAG: %w); load them: modprobe tcp_diag", err)
	}
	return nil
}

// lookup is the kernel's exact lookup of the socket whose endpoints are
// local and remote, in whatever state.
func lookup(local, remote netip.AddrPort) (Socket, bool, error) {
	if local.Addr().Is4() != remote.Addr().Is4() {
		return Socket{}, false, nil
	}
	// An IPv4 lookup finds a dual-stack socket's IPv4 connection too:
	// the kernel keeps them in one table.
	var family uint8 = unix.AF_INET6
	if local.Addr().Is4() {
		family = unix.AF_INET
	}
	a, err := request{family: family, states: anyStates, local: local, remote: remote}.run()
	switch {
	case err != nil:
		return Socket{}, false, err
	case a.errno == unix.ENOENT:
		// No such socket, or no TCP handler in the kernel to say so.
		if err := Check(); err != nil {
			return Socket{}, false, err
		}
		return Socket{}, false, nil
	case a.errno != 0:
		return Socket{}, false, fmt.Errorf("the kernel's lookup of the TCP socket from %s to %s (sock_diag): %w", local, remote, a.errno)
	}
	// Where no connection has those endpoints, the kernel's lookup
	// answers with a listener at local, if any: not it.
	for _, s := range a.sockets {
		if s.Local == local && s.Remote == remote && s.State != Listen {
			return s, true, nil
		}
	}
	return Socket{}, false, nil
}

// dump is every socket in states that prog accepts, of the families an
// address like addr can be in (an IPv4 one, mapped, in IPv6 sockets'
// too).
func dump(addr netip.Addr, states stateSet, prog program) ([]Socket, error) {
	families := []uint8{unix.AF_INET6}
	if addr.Is4() {
		families = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	var all []Socket
	for _, f := range families {
		a, err := request{family: f, dump: true, states: states, filter: prog}.run()
		if err == nil && a.errno != 0 {
			err = fmt.Errorf("the kernel's list of TCP sockets (sock_diag): %w", a.errno)
			if cerr := Check(); a.errno == unix.ENOENT && cerr != nil {
				err = cerr
			}
		}
		if err != nil {
			return nil, err
		}
		all = append(all, a.sockets...)
	}
	return all, nil
}

// choose is the one socket of all.
func choose(all []Socket) (s Socket, found bool, err error) {
	switch {
	case len(all) == 0:
		return Socket{}, false, nil
	case len(all) == 1:
		return all[0], true, nil
	}
	return Socket{}, false, ErrAmbiguous
}

// withOwner gives a connection still completing its handshake, which
// the kernel's answer shows as no one's (uid 0, as /proc/net/tcp does
// not), its listener's uid: that of every listener at its local
// endpoint, which must be one user's.
func withOwner(s Socket, found bool, err error) (Socket, bool, error) {
	if err != nil || !found || s.State != SynRecv {
		return s, found, err
	}
	ls, err := Listeners(s.Local)
	if err != nil {
		return Socket{}, false, fmt.Errorf("whose listener took the connection from %s to %s: %w", s.Remote, s.Local, err)
	}
	if len(ls) == 0 {
		return Socket{}, false, fmt.Errorf("the connection from %s to %s is completing its handshake, and no listener of this host is at %s any more to tell whose it is", s.Remote, s.Local, s.Local)
	}
	if slices.ContainsFunc(ls, func(l Socket) bool { return l.UID != ls[0].UID }) {
		return Socket{}, false, fmt.Errorf("the connection from %s to %s is completing its handshake, and listeners of more than one user are at %s: %w", s.Remote, s.Local, s.Local, ErrAmbiguous)
	}
	s.UID = ls[0].UID
	return s, true, nil
}

func unmap(ep netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
}
