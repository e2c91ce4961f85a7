package egress

import (
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HostRoutes are the ranges the host's routing tables say are the host's
// own or on its links: every local route (its addresses, and ranges it
// answers for as a whole), every route without a gateway (the networks
// its interfaces are on, point-to-point peers, a VPN's on-link subnets)
// and every gateway (the router), from every table. Default routes are
// left out: "default dev wg0" sends everything through a link, it does
// not make the internet the host's network.
func HostRoutes() ([]netip.Prefix, error) {
	b, err := syscall.NetlinkRIB(unix.RTM_GETROUTE, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("dump routes: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("parse routes: %w", err)
	}
	var out []netip.Prefix
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < syscall.SizeofRtMsg {
			continue
		}
		rt := (*syscall.RtMsg)(unsafe.Pointer(&m.Data[0]))
		if rt.Family != unix.AF_INET && rt.Family != unix.AF_INET6 {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			continue
		}
		var dst []byte
		gateway := false
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.RTA_DST:
				dst = a.Value
			case unix.RTA_GATEWAY:
				gateway = true
				if p, ok := routePrefix(a.Value, 8*len(a.Value)); ok {
					out = append(out, p)
				}
			case unix.RTA_MULTIPATH, unix.RTA_VIA:
				gateway = true
			}
		}
		local := rt.Type == unix.RTN_LOCAL
		onLink := rt.Type == unix.RTN_UNICAST && !gateway
		if rt.Dst_len == 0 || dst == nil || (!local && !onLink) {
			continue
		}
		if p, ok := routePrefix(dst, int(rt.Dst_len)); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// routePrefix makes a route's destination and length a prefix.
func routePrefix(dst []byte, bits int) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(dst)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := a.Unmap().Prefix(bits)
	return p, err == nil
}
