// Package procnet finds a TCP socket of this host's network namespace by
// its remote endpoint, in /proc/net/tcp and /proc/net/tcp6, with the uid
// the kernel keeps for it: whose program is at the other end of a
// connection the daemon made, when that end is on this host.
package procnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
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

// Socket is one line of /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	UID   uint32 // whose it is: the uid of the program that made it (or, not yet accepted, its listener's)
	Inode uint64 // 0 while it waits to be accepted
	State State
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
	ep = netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())
	type table struct{ file, rem string }
	var tables []table
	if ep.Addr().Is4() {
		tables = append(tables, table{Tables.V4, v4(ep)},
			table{Tables.V6, v6(netip.AddrPortFrom(netip.AddrFrom16(ep.Addr().As16()), ep.Port()))}) // a dual-stack listener's
	} else {
		tables = append(tables, table{Tables.V6, v6(ep)})
	}
	for _, t := range tables {
		got, ok, err := scan(t.file, t.rem)
		if err != nil {
			return Socket{}, false, err
		}
		if ok {
			if found {
				return Socket{}, false, ErrAmbiguous
			}
			s, found = got, true
		}
	}
	return s, found, nil
}

// scan finds the line whose remote address is rem in file.
func scan(file, rem string) (s Socket, found bool, err error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return Socket{}, false, nil // no IPv6 on this host
	}
	if err != nil {
		return Socket{}, false, err
	}
	defer func() { _ = f.Close() }()
	return scanTable(f, file, rem)
}

func scanTable(r io.Reader, file, rem string) (s Socket, found bool, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[2] != rem {
			continue
		}
		st := State(fields[3])
		if st != Established && st != SynRecv {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return Socket{}, false, fmt.Errorf("%s: uid %q: %v", file, fields[7], err)
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return Socket{}, false, fmt.Errorf("%s: inode %q: %v", file, fields[9], err)
		}
		if found {
			return Socket{}, false, ErrAmbiguous
		}
		s, found = Socket{UID: uint32(uid), Inode: inode, State: st}, true
	}
	if err := sc.Err(); err != nil {
		return Socket{}, false, fmt.Errorf("%s: %w", file, err)
	}
	return s, found, nil
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
