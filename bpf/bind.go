package bpf

import (
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

// listenKey is bind.c's listen_key for one allowed address of a session.
func listenKey(cgid uint64, ap netip.AddrPort) bindListenKey {
	return bindListenKey{Cgid: cgid, Addr: ap.Addr().Unmap().As16(), Port: ap.Port()} // As16 maps IPv4
}

// setListen puts a session's listen allow-list in the kernel (nothing to
// do before EnableBind: without the bind hooks no bind is checked).
func (c *Cage) setListen(cgid uint64, allowed []netip.AddrPort) error {
	if c.bind == nil {
		return nil
	}
	for i, ap := range allowed {
		k := listenKey(cgid, ap)
		if err := c.bind.ListenAllow.Put(&k, uint32(i)); err != nil {
			return fmt.Errorf("register listen address %s: %w", ap, err)
		}
	}
	return nil
}

// deleteListen removes a session's listen allow-list.
func (c *Cage) deleteListen(cgid uint64) error {
	if c.bind == nil {
		return nil
	}
	if err := deleteWhere(c.bind.ListenAllow, func(k *bindListenKey) bool { return k.Cgid == cgid }); err != nil {
		return fmt.Errorf("delete listen addresses: %w", err)
	}
	return nil
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
		"sessions": c.objs.Sessions, "events": c.objs.Events,
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
	release := func() error {
		err := closeLinks(links, c.pinDir != "")
		if err != nil {
			err = fmt.Errorf("detach bind programs: %w", err)
		}
		if cerr := objs.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close bind objects: %w", cerr))
		}
		return err
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
			if rerr := release(); rerr != nil {
				err = errors.Join(err, rerr)
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, ebpf.ErrNotSupported) {
				err = fmt.Errorf("%w (this kernel has no cgroup bind hooks)", err)
			}
			return nil, err
		}
	}
	ingressErr = attach("listen_ingress", ebpf.AttachCGroupInetIngress, objs.CageListenIngress)
	c.bind = &objs
	c.onClose = append(c.onClose, release)
	return ingressErr, nil
}
