package tcpsockets

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A program is inet_diag bytecode (INET_DIAG_REQ_BYTECODE): the filter
// the kernel runs on each socket of a dump, so that only those it
// accepts are written. Each operation is a code, then how far to jump
// when its test holds (yes) and when it does not (no); a run that ends
// exactly at the program's end accepts, one that jumps 4 bytes past it
// rejects. The kernel checks a program before it runs it
// (inet_diag_bc_audit): every yes jump must lead to the next operation.
// The builders below keep that shape, as ss(8) builds its filters.
type program []byte

// Operation codes (enum of linux/inet_diag.h).
type opCode uint8

const (
	opJmp   opCode = 1 // INET_DIAG_BC_JMP: always no
	opSCond opCode = 7 // INET_DIAG_BC_S_COND: the local endpoint
	opDCond opCode = 8 // INET_DIAG_BC_D_COND: the remote endpoint
)

// sizeofOp is struct inet_diag_bc_op: code, yes (u8), no (u16).
const sizeofOp = 4

// anyPort, as a condition's port, matches every port.
const anyPort = -1

// cond is one operation that holds for a socket whose local (opSCond)
// or remote (opDCond) endpoint has address addr and port port. An
// invalid addr matches every address, anyPort every port. An IPv4
// address matches it mapped into IPv6 too (the kernel's rule).
func cond(code opCode, addr netip.Addr, port int) program {
	var family uint8 = unix.AF_UNSPEC
	var a []byte
	switch {
	case !addr.IsValid():
	case addr.Is4():
		family = unix.AF_INET
		b := addr.As4()
		a = b[:]
	default:
		family = unix.AF_INET6
		b := addr.As16()
		a = b[:]
	}
	n := sizeofOp + 8 + len(a) // struct inet_diag_hostcond: family, prefix_len, int port, address
	p := make(program, n)
	ne := binary.NativeEndian
	p[0], p[1] = byte(code), byte(n)
	ne.PutUint16(p[2:], uint16(n+4))
	p[4], p[5] = family, byte(8*len(a))
	ne.PutUint32(p[8:], uint32(int32(port)))
	copy(p[12:], a)
	return p
}

// endpoint is cond for the endpoint ep, address and port.
func endpoint(code opCode, ep netip.AddrPort) program {
	return cond(code, ep.Addr().Unmap(), int(ep.Port()))
}

// and holds when both a and b do.
func and(a, b program) program {
	p := append(append(program{}, a...), b...)
	p.relocate(len(a), len(b))
	return p
}

// or holds when a or b does: a, then a jump past b (a's failures land on
// b).
func or(a, b program) program {
	p := append(program{}, a...)
	jmp := make([]byte, sizeofOp)
	jmp[0], jmp[1] = byte(opJmp), sizeofOp
	binary.NativeEndian.PutUint16(jmp[2:], uint16(len(b)+sizeofOp))
	return append(append(p, jmp...), b...)
}

// relocate moves the rejections of the first n bytes' operations (a
// jump to 4 past n) by by bytes: to 4 past the program that now follows.
func (p program) relocate(n, by int) {
	ne := binary.NativeEndian
	for off := 0; off < n; off += int(p[off+1]) {
		if no := int(ne.Uint16(p[off+2:])); no == n-off+4 {
			ne.PutUint16(p[off+2:], uint16(no+by))
		}
	}
}
