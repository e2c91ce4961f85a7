package tcpsockets

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Numbers of linux/inet_diag.h and linux/netlink.h that x/sys/unix
// lacks.
const (
	reqBytecode  = 1  // INET_DIAG_REQ_BYTECODE
	attrV6Only   = 11 // INET_DIAG_SKV6ONLY
	sizeofReq    = 56 // struct inet_diag_req_v2
	sizeofMsg    = 72 // struct inet_diag_msg
	sizeofNlattr = 4
	noCookie     = ^uint32(0) // INET_DIAG_NOCOOKIE
	nlaTypeMask  = 0x3fff     // NLA_TYPE_MASK: an attribute type without its flags
)

// stateSet is a set of states (idiag_states: bit n is state n).
type stateSet uint32

func setOf(sts ...State) stateSet {
	var s stateSet
	for _, st := range sts {
		s |= 1 << st
	}
	return s
}

// newSynRecv is TCP_NEW_SYN_RECV: a connection still completing its
// handshake, as the kernel keeps it in its table (shown as SynRecv).
const newSynRecv State = 12

var (
	liveStates   = setOf(Established, SynRecv, newSynRecv)
	listenStates = setOf(Listen)
	// anyStates is every state a connection's socket can be in (not
	// Listen, not the kernel's bound-but-inactive sockets).
	anyStates = setOf(Established, SynSent, SynRecv, FinWait1, FinWait2, TimeWait, Close, CloseWait, LastAck, Closing, newSynRecv)
)

// request is one inet_diag_req_v2 for TCP: an exact lookup of the
// socket whose endpoints are local and remote, or (dump) every socket
// of family in states that filter accepts (local's and remote's ports,
// when not 0, narrow it further).
type request struct {
	family        uint8 // unix.AF_INET or unix.AF_INET6
	dump          bool
	states        stateSet
	local, remote netip.AddrPort
	filter        program
}

// marshal is r as a netlink message with sequence number seq.
func (r request) marshal(seq uint32) []byte {
	n := unix.NLMSG_HDRLEN + sizeofReq
	if len(r.filter) > 0 {
		n += sizeofNlattr + len(r.filter)
	}
	b := make([]byte, n)
	flags := uint16(unix.NLM_F_REQUEST)
	if r.dump {
		flags |= unix.NLM_F_DUMP
	}
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	q := b[unix.NLMSG_HDRLEN:]
	q[0] = r.family
	q[1] = unix.IPPROTO_TCP
	ne.PutUint32(q[4:], uint32(r.states))
	id := q[8:]
	binary.BigEndian.PutUint16(id[0:], r.local.Port())
	binary.BigEndian.PutUint16(id[2:], r.remote.Port())
	putAddr(id[4:20], r.family, r.local.Addr())
	putAddr(id[20:36], r.family, r.remote.Addr())
	ne.PutUint32(id[40:], noCookie)
	ne.PutUint32(id[44:], noCookie)
	if len(r.filter) > 0 {
		a := q[sizeofReq:]
		ne.PutUint16(a[0:], uint16(sizeofNlattr+len(r.filter)))
		ne.PutUint16(a[2:], reqBytecode)
		copy(a[sizeofNlattr:], r.filter)
	}
	return b
}

// putAddr writes a into an inet_diag_sockid address field: four bytes
// for AF_INET, sixteen (an IPv4 address mapped) for AF_INET6; nothing
// for an invalid (unset) address.
func putAddr(dst []byte, family uint8, a netip.Addr) {
	switch {
	case !a.IsValid():
	case family == unix.AF_INET && a.Is4():
		b := a.As4()
		copy(dst, b[:])
	default:
		b := a.As16()
		copy(dst, b[:])
	}
}

// answer is what the kernel said to one request.
type answer struct {
	sockets []Socket
	done    bool          // the dump's end, or an exact lookup's one reply
	errno   syscall.Errno // the kernel's error (NLMSG_ERROR, or NLMSG_DONE's)
}

// decode reads one datagram of the kernel's answer to request seq into
// a. It refuses what is not a well-formed answer to that request.
func decode(b []byte, seq uint32, a *answer) error {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return fmt.Errorf("a truncated netlink header (%d bytes)", len(b))
		}
		n := int(ne.Uint32(b[0:]))
		typ, flags, s := ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:])
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return fmt.Errorf("a netlink message of %d bytes in %d", n, len(b))
		}
		if s != seq {
			return fmt.Errorf("a netlink message of sequence %d, not %d (the request's)", s, seq)
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			return fmt.Errorf("the kernel's list changed while it was written (NLM_F_DUMP_INTR)")
		}
		body := b[unix.NLMSG_HDRLEN:n]
		switch typ {
		case unix.NLMSG_NOOP:
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return fmt.Errorf("a truncated netlink error (%d bytes)", len(body))
			}
			a.done = true
			if e := int32(ne.Uint32(body)); e < 0 {
				a.errno = syscall.Errno(-e)
			}
		case unix.NLMSG_DONE:
			a.done = true
			if len(body) >= 4 {
				if e := int32(ne.Uint32(body)); e < 0 {
					a.errno = syscall.Errno(-e)
				}
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			s, err := decodeSocket(body)
			if err != nil {
				return err
			}
			a.sockets = append(a.sockets, s)
			if flags&unix.NLM_F_MULTI == 0 {
				a.done = true // an exact lookup's one reply
			}
		default:
			return fmt.Errorf("a netlink message of type %d, which does not answer a socket diagnostics request", typ)
		}
		// Messages are aligned to 4 bytes; the last may end unpadded.
		b = b[min(len(b), nlmAlign(n)):]
	}
	return nil
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// decodeSocket reads one inet_diag_msg and its attributes.
func decodeSocket(b []byte) (Socket, error) {
	if len(b) < sizeofMsg {
		return Socket{}, fmt.Errorf("a truncated inet_diag_msg (%d bytes, want %d)", len(b), sizeofMsg)
	}
	family := b[0]
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return Socket{}, fmt.Errorf("an inet_diag_msg of address family %d", family)
	}
	id := b[4:]
	ne := binary.NativeEndian
	s := Socket{
		State:  State(b[1]),
		Local:  netip.AddrPortFrom(getAddr(id[4:20], family), binary.BigEndian.Uint16(id[0:])),
		Remote: netip.AddrPortFrom(getAddr(id[20:36], family), binary.BigEndian.Uint16(id[2:])),
		UID:    ne.Uint32(b[64:]),
		Inode:  uint64(ne.Uint32(b[68:])),
	}
	for attrs := b[sizeofMsg:]; len(attrs) > 0; {
		if len(attrs) < sizeofNlattr {
			return Socket{}, fmt.Errorf("a truncated attribute of an inet_diag_msg (%d bytes)", len(attrs))
		}
		n, typ := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if n < sizeofNlattr || n > len(attrs) {
			return Socket{}, fmt.Errorf("an attribute of %d bytes in %d", n, len(attrs))
		}
		if typ&nlaTypeMask == attrV6Only && n > sizeofNlattr {
			s.v6only = attrs[sizeofNlattr] != 0
		}
		attrs = attrs[min(len(attrs), nlmAlign(n)):]
	}
	return s, nil
}

// getAddr reads an inet_diag_sockid address field; an IPv4 address
// mapped into IPv6 is returned as IPv4.
func getAddr(b []byte, family uint8) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16])).Unmap()
}
