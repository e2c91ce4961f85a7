// Package procnet finds a TCP socket of this host's network namespace by
// its endpoints, in /proc/net/tcp and /proc/net/tcp6, with the uid the
// kernel keeps for it: whose program is at the other end of a connection
// the daemon made, when that end is on this host, or whose program
// connected to a listener of the daemon.
package procnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// State is a socket's state as /proc/net/tcp writes it.
type State string

// The states of the other end of a connection just made.
const (
	Established State = "01"
	SynRecv     State = "03" // the handshake not yet complete on its side
)

// open reports whether a socket in state st is the live other end of a
// connection (established, or completing its handshake).
func (st State) open() bool { return st == Established || st == SynRecv }

// Socket is one line of /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	UID   uint32 // whose it is: the uid of the program that made it (or, not yet accepted, its listener's)
	Inode uint64 // 0 while it waits to be accepted
	State State

	preferred bool   // its local endpoint is the one PeerOf prefers
	local     string // its local endpoint as the table writes it
}

// Tables are the files ConnectedTo reads (a test may point them
// elsewhere).
var Tables = struct{ V4, V6 string }{"/proc/net/tcp", "/proc/net/tcp6"}

// ErrAmbiguous: more than one socket has the endpoint as its remote one.
var ErrAmbiguous = errors.New("more than one socket of this host is connected to that endpoint")

// ConnectedTo finds the socket of this host connected to ep (its remote
// endpoint is ep), established or completing its handshake: the other
// end of a connection made from ep, when that end is on this host (its
// loopback, one of its addresses, or a local service a connection was
// redirected to). found is false when no socket of this network
// namespace is.
func ConnectedTo(ep netip.AddrPort) (s Socket, found bool, err error) {
	return find(match{rem: ep})
}

// PeerOf is ConnectedTo for the connection from local to dest: when more
// than one live socket of this host is connected to local (the kernel
// gives one local port to connections to different destinations), the
// one whose own endpoint is dest is it. Another (a connection redirected
// to a local port has another endpoint) is then ambiguous.
func PeerOf(local, dest netip.AddrPort) (s Socket, found bool, err error) {
	return find(match{rem: local, prefer: dest})
}

// Between finds the socket of this host whose local endpoint is local
// and whose remote one is remote, in whatever state (the caller decides
// what a closing one means): the program that connected from local to a
// listener at remote. found is false when no socket of this network
// namespace is.
func Between(local, remote netip.AddrPort) (s Socket, found bool, err error) {
	return find(match{local: local, rem: remote, any: true})
}

// match is what find looks for: a socket whose remote endpoint is rem
// and, when local is valid, whose local endpoint is local; live ones
// only unless any.
type match struct {
	local, rem netip.AddrPort
	any        bool
	prefer     netip.AddrPort // of several, the one whose local endpoint this is (PeerOf)
}

// find looks for m in both tables (an IPv4 endpoint is also written,
// mapped, in tcp6 by a dual-stack socket).
func find(m match) (s Socket, found bool, err error) {
	unmap := func(ep netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port()) }
	m.rem = unmap(m.rem)
	if m.local.IsValid() {
		m.local = unmap(m.local)
	}
	type table struct {
		file               string
		local, rem, prefer string
	}
	mapped := func(ep netip.AddrPort) string {
		return v6(netip.AddrPortFrom(netip.AddrFrom16(ep.Addr().As16()), ep.Port()))
	}
	var tables []table
	if m.prefer.IsValid() {
		m.prefer = unmap(m.prefer)
	}
	switch {
	case m.rem.Addr().Is4():
		t4, t6 := table{file: Tables.V4, rem: v4(m.rem)}, table{file: Tables.V6, rem: mapped(m.rem)}
		if m.prefer.IsValid() && m.prefer.Addr().Is4() {
			t4.prefer, t6.prefer = v4(m.prefer), mapped(m.prefer)
		}
		if m.local.IsValid() {
			if !m.local.Addr().Is4() {
				return Socket{}, false, nil
			}
			t4.local, t6.local = v4(m.local), mapped(m.local)
		}
		tables = []table{t4, t6}
	default:
		t := table{file: Tables.V6, rem: v6(m.rem)}
		if m.prefer.IsValid() && !m.prefer.Addr().Is4() {
			t.prefer = v6(m.prefer)
		}
		if m.local.IsValid() {
			if m.local.Addr().Is4() {
				return Socket{}, false, nil
			}
			t.local = v6(m.local)
		}
		tables = []table{t}
	}
	var all []Socket
	for _, t := range tables {
		got, err := scan(t.file, t.local, t.rem, t.prefer, m.any)
		if err != nil {
			return Socket{}, false, err
		}
		all = append(all, got...)
	}
	return choose(all)
}

// choose is the one socket of all; of several, the one preferred. A
// read of the table is no snapshot (the kernel writes it a page at a
// time while sockets come and go), so one socket can be listed twice,
// once still waiting to be accepted: lines with the same endpoints and
// owner are one connection (two live sockets cannot share both ends).
func choose(all []Socket) (s Socket, found bool, err error) {
	all = dedupe(all)
	var preferred []Socket
	for _, c := range all {
		if c.preferred {
			preferred = append(preferred, c)
		}
	}
	switch {
	case len(all) == 0:
		return Socket{}, false, nil
	case len(all) == 1:
		return all[0], true, nil
	case len(preferred) == 1:
		return preferred[0], true, nil
	}
	return Socket{}, false, ErrAmbiguous
}

// dedupe keeps one line of each connection (local endpoint and owner;
// the remote endpoint is the one looked for), the accepted one where a
// line still waiting to be accepted (inode 0) lists it too.
func dedupe(all []Socket) []Socket {
	out := all[:0:0]
	for _, c := range all {
		i := slices.IndexFunc(out, func(o Socket) bool { return o.local == c.local && o.UID == c.UID })
		switch {
		case i < 0:
			out = append(out, c)
		case out[i].Inode == 0:
			out[i] = c
		}
	}
	return out
}

// scan finds the lines whose remote address is rem (and local address
// local, unless empty) in file: live sockets', or any's if anyState;
// those whose local address is prefer are marked preferred.
func scan(file, local, rem, prefer string, anyState bool) ([]Socket, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no IPv6 on this host
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return scanTable(f, file, local, rem, prefer, anyState)
}

// maxMatches bounds the sockets one scan keeps: more than a few connected
// to one endpoint is ambiguous anyway.
const maxMatches = 16

func scanTable(r io.Reader, file, local, rem, prefer string, anyState bool) ([]Socket, error) {
	var out []Socket
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[2] != rem || (local != "" && fields[1] != local) {
			continue
		}
		st := State(fields[3])
		if !anyState && !st.open() {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: uid %q: %v", file, fields[7], err)
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: inode %q: %v", file, fields[9], err)
		}
		if len(out) == maxMatches {
			return nil, ErrAmbiguous
		}
		out = append(out, Socket{UID: uint32(uid), Inode: inode, State: st, preferred: prefer != "" && fields[1] == prefer, local: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// v4 is ep as /proc/net/tcp writes it: the address's four bytes read as
// one 32-bit number in the host's byte order, in hex, and the port.
func v4(ep netip.AddrPort) string {
	b := ep.Addr().As4()
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(b[:]), ep.Port())
}

// v6 is ep as /proc/net/tcp6 writes it: four 32-bit words, each read in
// the host's byte order.
func v6(ep netip.AddrPort) string {
	b := ep.Addr().As16()
	var sb strings.Builder
	for w := 0; w < 16; w += 4 {
		fmt.Fprintf(&sb, "%08X", binary.NativeEndian.Uint32(b[w:w+4]))
	}
	fmt.Fprintf(&sb, ":%04X", ep.Port())
	return sb.String()
}
