package tcpsockets

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestMarshal(t *testing.T) {
	ne := binary.NativeEndian
	hdr := func(n int, flags uint16) []byte {
		b := make([]byte, 16)
		ne.PutUint32(b, uint32(n))
		ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
		ne.PutUint16(b[6:], flags)
		ne.PutUint32(b[8:], 7)
		return b
	}
	// req is an inet_diag_req_v2 as linux/inet_diag.h lays it out.
	req := func(family byte, states uint32, sport, dport uint16, src, dst []byte) []byte {
		b := make([]byte, sizeofReq)
		b[0], b[1] = family, unix.IPPROTO_TCP
		ne.PutUint32(b[4:], states)
		binary.BigEndian.PutUint16(b[8:], sport)
		binary.BigEndian.PutUint16(b[10:], dport)
		copy(b[12:], src)
		copy(b[28:], dst)
		ne.PutUint32(b[48:], 0xffffffff) // idiag_cookie: INET_DIAG_NOCOOKIE
		ne.PutUint32(b[52:], 0xffffffff)
		return b
	}
	attr := func(p program) []byte {
		b := make([]byte, 4)
		ne.PutUint16(b, uint16(4+len(p)))
		ne.PutUint16(b[2:], 1) // INET_DIAG_REQ_BYTECODE
		return append(b, p...)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	v6 := netip.MustParseAddr("fd00::1").As16()
	mapped := netip.MustParseAddr("::ffff:127.0.0.1").As16()
	filter := endpoint(opDCond, netip.MustParseAddrPort("127.0.0.1:80"))
	tests := []struct {
		name string
		r    request
		want []byte
	}{
		{"exact ipv4", request{family: unix.AF_INET, states: setOf(Established), local: netip.MustParseAddrPort("127.0.0.1:8080"), remote: netip.MustParseAddrPort("127.0.0.2:40000")},
			cat(hdr(72, unix.NLM_F_REQUEST), req(unix.AF_INET, 1<<1, 8080, 40000, []byte{127, 0, 0, 1}, []byte{127, 0, 0, 2}))},
		{"exact ipv6", request{family: unix.AF_INET6, local: netip.MustParseAddrPort("[fd00::1]:443"), remote: netip.MustParseAddrPort("[::ffff:127.0.0.1]:1")},
			cat(hdr(72, unix.NLM_F_REQUEST), req(unix.AF_INET6, 0, 443, 1, v6[:], mapped[:]))},
		{"ipv4 in an ipv6 request is mapped", request{family: unix.AF_INET6, local: netip.MustParseAddrPort("127.0.0.1:1")},
			cat(hdr(72, unix.NLM_F_REQUEST), req(unix.AF_INET6, 0, 1, 0, mapped[:], nil))},
		{"dump with a filter", request{family: unix.AF_INET, dump: true, states: liveStates, filter: filter},
			cat(hdr(72+4+len(filter), unix.NLM_F_REQUEST|unix.NLM_F_DUMP), req(unix.AF_INET, 1<<1|1<<3|1<<12, 0, 0, nil, nil), attr(filter))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.r.marshal(7)); diff != "" {
				t.Errorf("marshal (-want +got):\n%s", diff)
			}
		})
	}
}

// msg is one netlink message of type typ with body, as the kernel
// writes it (padded to 4 bytes).
func msg(typ, flags uint16, seq uint32, body []byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, 16, nlmAlign(16+len(body)))
	ne.PutUint32(b, uint32(16+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b = append(b, body...)
	return b[:cap(b)]
}

// diagMsg is an inet_diag_msg with attributes attrs.
func diagMsg(family byte, st State, local, remote netip.AddrPort, uid, inode uint32, attrs ...[]byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, sizeofMsg)
	b[0], b[1] = family, byte(st)
	binary.BigEndian.PutUint16(b[4:], local.Port())
	binary.BigEndian.PutUint16(b[6:], remote.Port())
	putAddr(b[8:24], family, local.Addr())
	putAddr(b[24:40], family, remote.Addr())
	ne.PutUint32(b[64:], uid)
	ne.PutUint32(b[68:], inode)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func nlattr(typ uint16, v ...byte) []byte {
	b := make([]byte, 4, nlmAlign(4+len(v)))
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	return b[:cap(b)]
}

func errno(e syscall.Errno) []byte {
	b := make([]byte, 20) // nlmsgerr: error, then the request's header
	binary.NativeEndian.PutUint32(b, uint32(-int32(e)))
	return b
}

func TestDecode(t *testing.T) {
	const seq = 9
	l4, r4 := netip.MustParseAddrPort("127.0.0.1:80"), netip.MustParseAddrPort("127.0.0.1:40000")
	l6, r6 := netip.MustParseAddrPort("[::1]:80"), netip.MustParseAddrPort("[::1]:40000")
	multi := uint16(unix.NLM_F_MULTI)
	sock := diagMsg(unix.AF_INET, Established, l4, r4, 1000, 42)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	tests := []struct {
		name    string
		in      []byte
		want    answer
		wantErr string
	}{
		{"an exact lookup's answer", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, sock),
			answer{sockets: []Socket{{UID: 1000, Inode: 42, State: Established, Local: l4, Remote: r4}}, done: true}, ""},
		{"no such socket", msg(unix.NLMSG_ERROR, 0, seq, errno(unix.ENOENT)), answer{done: true, errno: unix.ENOENT}, ""},
		{"dump, then its end", cat(msg(unix.SOCK_DIAG_BY_FAMILY, multi, seq, sock), msg(unix.SOCK_DIAG_BY_FAMILY, multi, seq, diagMsg(unix.AF_INET6, SynRecv, l6, r6, 0, 0)), msg(unix.NLMSG_DONE, multi, seq, make([]byte, 4))),
			answer{sockets: []Socket{{UID: 1000, Inode: 42, State: Established, Local: l4, Remote: r4}, {State: SynRecv, Local: l6, Remote: r6}}, done: true}, ""},
		{"a dump's first reply", msg(unix.SOCK_DIAG_BY_FAMILY, multi, seq, sock), answer{sockets: []Socket{{UID: 1000, Inode: 42, State: Established, Local: l4, Remote: r4}}}, ""},
		{"a dump's end with an error", msg(unix.NLMSG_DONE, multi, seq, errno(unix.ENOENT)[:4]), answer{done: true, errno: unix.ENOENT}, ""},
		{"ipv4 mapped into ipv6, and IPV6_V6ONLY", msg(unix.SOCK_DIAG_BY_FAMILY, multi, seq, diagMsg(unix.AF_INET6, Listen, netip.MustParseAddrPort("[::ffff:127.0.0.1]:80"), netip.AddrPortFrom(netip.IPv6Unspecified(), 0), 5, 6, nlattr(8, 0), nlattr(attrV6Only, 1))),
			answer{sockets: []Socket{{UID: 5, Inode: 6, State: Listen, Local: l4, Remote: netip.AddrPortFrom(netip.IPv6Unspecified(), 0), v6only: true}}}, ""},
		{"another request's answer", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq+1, sock), answer{}, "sequence 10, not 9"},
		{"a truncated header", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, sock)[:10], answer{}, "truncated netlink header"},
		{"a length past the datagram", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, sock)[:60], answer{}, "netlink message of 88 bytes in 60"},
		{"a length under the header's", func() []byte {
			b := msg(unix.NLMSG_DONE, 0, seq, nil)
			b[0] = 8
			return b
		}(), answer{}, "netlink message of 8 bytes"},
		{"a truncated socket", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, sock[:40]), answer{}, "truncated inet_diag_msg"},
		{"a truncated attribute", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, append(append([]byte{}, sock...), 8, 0)), answer{}, "truncated attribute"},
		{"an attribute past its message", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, append(append([]byte{}, sock...), 9, 0, 1, 0)), answer{}, "attribute of 9 bytes in 4"},
		{"a truncated error", msg(unix.NLMSG_ERROR, 0, seq, []byte{1}), answer{}, "truncated netlink error"},
		{"another family", msg(unix.SOCK_DIAG_BY_FAMILY, 0, seq, diagMsg(unix.AF_UNIX, Established, l4, r4, 0, 0)), answer{}, "address family 1"},
		{"another type", msg(unix.RTM_NEWLINK, 0, seq, nil), answer{}, "type 16"},
		{"interrupted", msg(unix.SOCK_DIAG_BY_FAMILY, multi|unix.NLM_F_DUMP_INTR, seq, sock), answer{}, "NLM_F_DUMP_INTR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got answer
			err := decode(tt.in, seq, &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decode = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(answer{}, Socket{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("decode (-want +got):\n%s", diff)
			}
		})
	}
}

// entry is what the kernel's filter sees of a socket (struct
// inet_diag_entry).
type entry struct{ local, remote netip.AddrPort }

// runProgram is the kernel's inet_diag_bc_run for the operations built
// here: true when p accepts e.
func runProgram(t *testing.T, p program, e entry) bool {
	t.Helper()
	ne := binary.NativeEndian
	for off := 0; off < len(p); {
		code, yesJ, noJ := opCode(p[off]), int(p[off+1]), int(ne.Uint16(p[off+2:]))
		yes := false
		switch code {
		case opJmp:
		case opSCond, opDCond:
			ep := e.local
			if code == opDCond {
				ep = e.remote
			}
			family, plen, port := p[off+4], int(p[off+5]), int32(ne.Uint32(p[off+8:]))
			yes = port == anyPort || int(port) == int(ep.Port())
			switch {
			case !yes || family == unix.AF_UNSPEC || plen == 0:
			case family == unix.AF_INET:
				yes = ep.Addr().Unmap().Is4() && ep.Addr().Unmap() == netip.AddrFrom4([4]byte(p[off+12:off+16]))
			default:
				yes = ep.Addr() == netip.AddrFrom16([16]byte(p[off+12:off+28]))
			}
		default:
			t.Fatalf("operation %d at %d", code, off)
		}
		if yes {
			off += yesJ
		} else {
			off += noJ
		}
		if off == len(p)+4 {
			return false
		}
	}
	return true
}

// auditProgram is the kernel's inet_diag_bc_audit: what it refuses to
// run.
func auditProgram(p program) bool {
	ne := binary.NativeEndian
	validCC := func(cc int) bool { // a jump lands on an operation
		for off := 0; off <= len(p); off += int(p[off+1]) {
			if off == len(p)-cc {
				return true
			}
			if off == len(p) || p[off+1] < 4 || p[off+1]&3 != 0 {
				return false
			}
		}
		return false
	}
	for off := 0; off < len(p); {
		rest := len(p) - off
		if rest < sizeofOp {
			return false
		}
		minLen := sizeofOp
		if c := opCode(p[off]); c == opSCond || c == opDCond {
			minLen += 8
			switch p[off+4] {
			case unix.AF_INET:
				minLen += 4
			case unix.AF_INET6:
				minLen += 16
			}
			if rest < minLen {
				return false
			}
		}
		yes, no := int(p[off+1]), int(ne.Uint16(p[off+2:]))
		if no < minLen || no > rest+4 || no&3 != 0 || no < rest && !validCC(rest-no) {
			return false
		}
		if yes < minLen || yes > rest+4 || yes&3 != 0 {
			return false
		}
		off += yes
	}
	return true
}

func TestProgram(t *testing.T) {
	a, b := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:8080")
	c := netip.MustParseAddrPort("[fd00::1]:8080")
	aMapped := netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
	peerOf := or(endpoint(opDCond, a), and(endpoint(opSCond, a), endpoint(opDCond, b))) // PeerOf's
	tests := []struct {
		name string
		p    program
		e    entry
		want bool
	}{
		{"remote is it", endpoint(opDCond, a), entry{b, a}, true},
		{"remote mapped is it", endpoint(opDCond, a), entry{b, aMapped}, true},
		{"remote's port differs", endpoint(opDCond, a), entry{b, netip.AddrPortFrom(a.Addr(), 1)}, false},
		{"remote's address differs", endpoint(opDCond, a), entry{b, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), a.Port())}, false},
		{"ipv6", endpoint(opSCond, c), entry{c, a}, true},
		{"ipv6, another", endpoint(opSCond, c), entry{b, a}, false},
		{"port only", cond(opSCond, netip.Addr{}, 8080), entry{c, a}, true},
		{"port only, another", cond(opSCond, netip.Addr{}, 8081), entry{c, a}, false},
		{"and, both", and(endpoint(opSCond, b), endpoint(opDCond, a)), entry{b, a}, true},
		{"and, the first only", and(endpoint(opSCond, b), endpoint(opDCond, a)), entry{b, b}, false},
		{"and, the second only", and(endpoint(opSCond, b), endpoint(opDCond, a)), entry{a, a}, false},
		{"or, the first", or(endpoint(opSCond, b), endpoint(opDCond, a)), entry{b, c}, true},
		{"or, the second", or(endpoint(opSCond, b), endpoint(opDCond, a)), entry{c, a}, true},
		{"or, neither", or(endpoint(opSCond, b), endpoint(opDCond, a)), entry{c, c}, false},
		{"PeerOf's: a socket connected to local", peerOf, entry{c, a}, true},
		{"PeerOf's: the connection's own", peerOf, entry{a, b}, true},
		{"PeerOf's: another from local", peerOf, entry{a, c}, false},
		{"PeerOf's: another", peerOf, entry{b, c}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !auditProgram(tt.p) {
				t.Fatalf("the kernel would refuse the program % x", []byte(tt.p))
			}
			if got := runProgram(t, tt.p, tt.e); got != tt.want {
				t.Errorf("run on %v = %v, want %v (program % x)", tt.e, got, tt.want, []byte(tt.p))
			}
		})
	}
}
