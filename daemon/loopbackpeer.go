package daemon

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// loopbackPeer is the socket that connected to a listener of the daemon
// over loopback.
type loopbackPeer struct {
	uid   uint32 // the uid the kernel keeps for it
	inode uint64 // its socket's inode
}

// loopbackPeerUID is loopbackPeerOf's uid.
func loopbackPeerUID(remote, local string) (uint32, error) {
	p, err := loopbackPeerOf(remote, local)
	return p.uid, err
}

// loopbackPeerOf finds the socket that connected from remote to local
// over IPv4 loopback (the daemon's own listener at local) and the uid
// the kernel keeps for it (/proc/net/tcp), so that an answer a browser
// brings to a listener of the daemon can be bound to the user it is for.
// Loopback is shared by every user of the machine.
func loopbackPeerOf(remote, local string) (loopbackPeer, error) {
	r, err := netip.ParseAddrPort(remote)
	if err != nil {
		return loopbackPeer{}, err
	}
	l, err := netip.ParseAddrPort(local)
	if err != nil {
		return loopbackPeer{}, err
	}
	if !r.Addr().Is4() || !r.Addr().IsLoopback() || !l.Addr().Is4() {
		return loopbackPeer{}, fmt.Errorf("%s is not an IPv4 loopback peer", remote)
	}
	// The connecting socket's line: its local address is remote, its
	// remote address is local.
	want := procNetAddr(r) + " " + procNetAddr(l)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return loopbackPeer{}, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[1]+" "+fields[2] != want {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return loopbackPeer{}, fmt.Errorf("/proc/net/tcp: uid %q: %v", fields[7], err)
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return loopbackPeer{}, fmt.Errorf("/proc/net/tcp: inode %q: %v", fields[9], err)
		}
		if inode == 0 || fields[3] != tcpEstablished {
			// Closed by its program (an orphan, or in TIME_WAIT): the
			// kernel shows such a socket as uid 0's, whoever made it.
			return loopbackPeer{}, fmt.Errorf("the program that connected from %s closed its connection (state %s) before it could be told whose it was", remote, fields[3])
		}
		return loopbackPeer{uid: uint32(uid), inode: inode}, nil
	}
	if err := sc.Err(); err != nil {
		return loopbackPeer{}, err
	}
	return loopbackPeer{}, fmt.Errorf("no socket of this host connected from %s to %s (another network namespace?)", remote, local)
}

// ownSocket reports whether the socket of inode is one of this process's
// open files: a connection the daemon itself made (a remote server's url
// can name the daemon's own loopback listener).
func ownSocket(inode uint64) (bool, error) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return false, err
	}
	defer func() { _ = dir.Close() }()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	for _, n := range names {
		if link, err := os.Readlink("/proc/self/fd/" + n); err == nil && link == want {
			return true, nil
		}
	}
	return false, nil
}

// tcpEstablished is an open connection's state in /proc/net/tcp.
const tcpEstablished = "01"

// procNetAddr writes an IPv4 address and port as /proc/net/tcp does: the
// address's 32 bits in host (little-endian) order, the port big-endian.
func procNetAddr(a netip.AddrPort) string {
	b := a.Addr().As4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], a.Port())
}
