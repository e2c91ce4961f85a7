package daemon

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// loopbackPeerUID finds the user whose socket connected from remote to
// local over IPv4 loopback (the daemon's own listener at local): the uid
// the kernel keeps for that socket (/proc/net/tcp), so that an answer a
// browser brings to a listener of the daemon can be bound to the user it
// is for. Loopback is shared by every user of the machine.
func loopbackPeerUID(remote, local string) (uint32, error) {
	r, err := netip.ParseAddrPort(remote)
	if err != nil {
		return 0, err
	}
	l, err := netip.ParseAddrPort(local)
	if err != nil {
		return 0, err
	}
	if !r.Addr().Is4() || !r.Addr().IsLoopback() || !l.Addr().Is4() {
		return 0, fmt.Errorf("%s is not an IPv4 loopback peer", remote)
	}
	// The connecting socket's line: its local address is remote, its
	// remote address is local.
	want := procNetAddr(r) + " " + procNetAddr(l)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1]+" "+fields[2] != want {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/tcp: uid %q: %v", fields[7], err)
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no socket of this host connected from %s to %s (another network namespace?)", remote, local)
}

// procNetAddr writes an IPv4 address and port as /proc/net/tcp does: the
// address's 32 bits in host (little-endian) order, the port big-endian.
func procNetAddr(a netip.AddrPort) string {
	b := a.Addr().As4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], a.Port())
}
