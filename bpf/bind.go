package bpf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Denials of a listening socket arrive as KindNetDenied events with one of
// these in Flags (bind.c).
const (
	NetDeniedBind   = 1 // bind(2) to a port not in the listen list: EPERM
	NetDeniedListen = 2 // a packet to a listening socket not in the list: dropped
)

// ListenDenial says which listen control produced a net.denied event:
// "bind", "listen", or "" for an egress denial.
func (e Event) ListenDenial() string {
	if e.Kind != KindNetDenied {
		return ""
	}
	switch e.Flags {
	case NetDeniedBind:
		return "bind"
	case NetDeniedListen:
		return "listen"
	}
	return ""
}

// ListenNames returns the kernel entries of a listen allow-list, to merge
// into Policy.DenyComponents: bind.c looks a session's allowed addresses up
// in the deny_components map under names no path component can have
// (they start with '/'), so Register and Unregister carry them with the
// session. The value is the address's index in allowed.
func ListenNames(allowed []netip.AddrPort) map[string]int {
	out := make(map[string]int, len(allowed))
	for i, ap := range allowed {
		name := listenName(ap)
		if _, dup := out[name]; !dup {
			out[name] = i
		}
	}
	return out
}

// listenName is bind.c's listen_key: "/l", the address as 16 bytes
// (IPv4 as ::ffff:a.b.c.d) and the port, in lower-case hex.
func listenName(ap netip.AddrPort) string {
	a16 := ap.Addr().Unmap().As16() // As16 maps IPv4
	port := []byte{byte(ap.Port() >> 8), byte(ap.Port())}
	return "/l" + hex.EncodeToString(a16[:]) + hex.EncodeToString(port)
}

// EnableBind loads bind.c, sharing the cage's maps, and attaches it to the
// parent cgroup: cgroup/bind4 and bind6 refuse a host-network session's
// bind to a port its listen list does not allow, and cgroup_skb/ingress
// drops packets to its listening sockets outside the list (a listener on
// an ephemeral port). An error from the bind hooks means the cage cannot
// keep a session from listening: callers treat it as network enforcement
// missing. ingressErr alone (the kernel refused cgroup_skb) leaves the
// bind hooks in force but ephemeral listeners reachable.
func (c *Cage) EnableBind() (ingressErr, err error) {
	spec, err := loadBind()
	if err != nil {
		return nil, fmt.Errorf("load the bind object: %w", err)
	}
	if err := spec.Variables["session_level"].Set(c.level); err != nil {
		return nil, fmt.Errorf("set session_level: %w", err)
	}
	var objs bindObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		"sessions": c.objs.Sessions, "deny_components": c.objs.DenyComponents, "events": c.objs.Events,
		"lost": c.objs.Lost, "parent_cgroup": c.objs.ParentCgroup,
	}})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the eBPF verifier rejected the bind programs: %+v", ve)
		}
		return nil, fmt.Errorf("load the bind programs: %w", err)
	}
	var links []link.Link
	release := func() {
		for _, l := range links {
			if c.pinDir != "" {
				l.Unpin()
			}
			l.Close()
		}
		objs.Close()
	}
	attach := func(name string, at ebpf.AttachType, prog *ebpf.Program) error {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: c.parent, Attach: at, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", name, c.parent, err)
		}
		links = append(links, l)
		if c.pinDir != "" {
			// Pinned like the connect hooks: in force until a restarted
			// daemon has reaped the sandboxes.
			if err := l.Pin(filepath.Join(c.pinDir, name)); err != nil {
				return fmt.Errorf("pin %s: %w", name, err)
			}
		}
		return nil
	}
	for _, h := range []struct {
		name string
		at   ebpf.AttachType
		prog *ebpf.Program
	}{
		{"bind4", ebpf.AttachCGroupInet4Bind, objs.CageBind4},
		{"bind6", ebpf.AttachCGroupInet6Bind, objs.CageBind6},
	} {
		if err := attach(h.name, h.at, h.prog); err != nil {
			release()
			if errors.Is(err, unix.EINVAL) || errors.Is(err, ebpf.ErrNotSupported) {
				err = fmt.Errorf("%w (this kernel has no cgroup bind hooks)", err)
			}
			return nil, err
		}
	}
	ingressErr = attach("listen_ingress", ebpf.AttachCGroupInetIngress, objs.CageListenIngress)
	c.onClose = append(c.onClose, release)
	return ingressErr, nil
}
