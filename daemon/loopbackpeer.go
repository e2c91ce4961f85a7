package daemon

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/mcpcage/mcpcage/internal/tcpsockets"
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
// the kernel keeps for it (tcpsockets: the kernel's exact lookup of the
// connection in its socket table), so that an answer a browser
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
	s, found, err := tcpsockets.Between(r, l)
	switch {
	case err != nil:
		return loopbackPeer{}, err
	case !found:
		return loopbackPeer{}, fmt.Errorf("no socket of this host connected from %s to %s (another network namespace?)", remote, local)
	case s.Inode == 0 || s.State != tcpsockets.Established:
		// Closed by its program (an orphan, or in TIME_WAIT): the
		// kernel shows such a socket as uid 0's, whoever made it.
		return loopbackPeer{}, fmt.Errorf("the program that connected from %s closed its connection (state %s) before it could be told whose it was", remote, s.State)
	}
	return loopbackPeer{uid: s.UID, inode: s.Inode}, nil
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
