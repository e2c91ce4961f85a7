// Package tcpsockets finds a TCP socket of this host's network namespace by
// its endpoints, with the uid the kernel keeps for it: whose program is
// at the other end of a connection the daemon made, when that end is on
// this host, or whose program connected to a listener of the daemon.
//
// It asks the kernel over NETLINK_SOCK_DIAG (inet_diag, the interface
// ss(8) uses), which answers from its socket hash tables:
//
//   - where both endpoints are known (Between, and PeerOf's first
//     question) by an exact lookup of the 4-tuple, as the kernel looks
//     up the socket an arriving packet belongs to;
//   - otherwise by a dump that an in-kernel filter (inet_diag bytecode)
//     narrows to the sockets whose endpoint is the one asked for. The
//     kernel locks each bucket of its table while it reads it, and a
//     socket keeps its bucket for life (a connection that completes its
//     handshake, or enters TIME_WAIT, is replaced in its bucket under
//     that lock), so a socket that exists while the dump runs is listed
//     exactly once, provided the answer fits one reply: an answer that
//     would need a second pass over the table is refused, not read.
//
// Unlike a read of /proc/net/tcp, which the kernel writes a page at a
// time while sockets come and go (a socket can be listed twice, or
// missed), "not found" is therefore the kernel's word that no such
// socket exists in this network namespace. PeerOf checks that word
// against a socket it knows exists (the connection's own end) in the
// same answer.
//
// Caveats:
//   - A connection still completing its handshake on the listener's side
//     (SynRecv) has no owner in the kernel's answer; its uid is its
//     listener's, found among the listeners of its port (ErrAmbiguous
//     when they are not all one user's).
//   - The kernel's TCP diagnostics may be a module (tcp_diag, inet_diag),
//     which the kernel loads on first use for root; without them every
//     lookup fails with an error that says so (Check), never "not found".
//   - Only the network namespace of the calling thread is seen: a socket
//     of a container's namespace is not (not found).
package tcpsockets
