package bpf

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The host socket test's children: MCPCAGE_HOSTSOCK_CHILD is "make" (in
// a host-network session: make the sockets of hostSocketOps and pass
// them over fd 3 with SCM_RIGHTS) or "use" (in an isolated session, in a
// network namespace of its own: use those sockets, received as fds 3 on,
// then sockets of its own; print "NAME ok" or "NAME ERRNO" for each).
func init() {
	switch os.Getenv("MCPCAGE_HOSTSOCK_CHILD") {
	case "make":
		hostSocketsMake()
	case "use":
		hostSocketsUse()
	default:
		return
	}
	os.Exit(0)
}

// hostSocketOp is one use of a socket: connect, sendto or bind to addr.
type hostSocketOp struct {
	name, op string
	family   int
	sotype   int
	env      string // the variable holding addr ("" for binds: port 0 on loopback)
}

var hostSocketOps = []hostSocketOp{
	{"connect4", "connect", unix.AF_INET, unix.SOCK_STREAM, "MCPCAGE_HOSTSOCK_TCP4"},
	{"connect6", "connect", unix.AF_INET6, unix.SOCK_STREAM, "MCPCAGE_HOSTSOCK_TCP6"},
	{"sendto4", "sendto", unix.AF_INET, unix.SOCK_DGRAM, "MCPCAGE_HOSTSOCK_UDP4"},
	{"sendto6", "sendto", unix.AF_INET6, unix.SOCK_DGRAM, "MCPCAGE_HOSTSOCK_UDP6"},
	{"bind4", "bind", unix.AF_INET, unix.SOCK_STREAM, ""},
	{"bind6", "bind", unix.AF_INET6, unix.SOCK_STREAM, ""},
}

func hostSocketsMake() {
	var fds []int
	for _, o := range hostSocketOps {
		fd, err := unix.Socket(o.family, o.sotype, 0)
		if err != nil {
			fmt.Println("socket", err)
			os.Exit(1)
		}
		fds = append(fds, fd)
	}
	if err := unix.Sendmsg(3, []byte{0}, unix.UnixRights(fds...), nil, 0); err != nil {
		fmt.Println("sendmsg", err)
		os.Exit(1)
	}
}

// sockaddr is ap as a socket address of family.
func sockaddr(family int, ap netip.AddrPort) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// use does o on fd; loopback port 0 for a bind.
func (o hostSocketOp) use(fd int, addr string) error {
	if o.op == "bind" {
		lo := netip.MustParseAddrPort("127.0.0.1:0")
		if o.family == unix.AF_INET6 {
			lo = netip.MustParseAddrPort("[::1]:0")
		}
		return unix.Bind(fd, sockaddr(o.family, lo))
	}
	sa := sockaddr(o.family, netip.MustParseAddrPort(addr))
	if o.op == "sendto" {
		return unix.Sendto(fd, []byte("x"), 0, sa)
	}
	return unix.Connect(fd, sa)
}

func report(name string, err error) {
	if err == nil {
		fmt.Println(name, "ok")
		return
	}
	if errno, ok := err.(syscall.Errno); ok {
		fmt.Println(name, unix.ErrnoName(errno))
		return
	}
	fmt.Println(name, err)
}

func hostSocketsUse() {
	for i, o := range hostSocketOps {
		report("host "+o.name, o.use(3+i, os.Getenv(o.env)))
	}
	// Sockets of its own, in its own network namespace (loopback up):
	// what an isolated session does every day.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err == nil {
		var ifr *unix.Ifreq
		if ifr, err = unix.NewIfreq("lo"); err == nil {
			ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
			err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
		}
	}
	if err != nil {
		report("loopback up", err)
		return
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		report("own listen", err)
		return
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		report("own udp", err)
		return
	}
	own := map[string]string{"MCPCAGE_HOSTSOCK_TCP4": ln.Addr().String(), "MCPCAGE_HOSTSOCK_UDP4": udp.LocalAddr().String()}
	for _, o := range hostSocketOps {
		if o.family != unix.AF_INET {
			continue
		}
		fd, err := unix.Socket(o.family, o.sotype, 0)
		if err == nil {
			err = o.use(fd, own[o.env])
		}
		report("own "+o.name, err)
	}
}

// A socket of the host's network namespace, made in a host-network
// session and passed (SCM_RIGHTS) to a process of an isolated session
// (network = "none"), is refused there: connect, sendto and bind fail
// with EPERM and each is reported as net.denied with HostNetnsRule. Its
// own sockets, in its own namespace, still go anywhere in it. Before, the
// hooks saw an isolated session and let the host's socket go anywhere the
// host reaches.
func TestHostSocketInIsolatedSession(t *testing.T) {
	c, parent := loadForTest(t)
	if _, err := c.EnableBind(); err != nil {
		t.Fatal(err)
	}
	env := []string{"MCPCAGE_HOSTSOCK_CHILD=use"}
	for _, l := range []struct{ network, addr, env string }{
		{"tcp", "127.0.0.1:0", "MCPCAGE_HOSTSOCK_TCP4"}, {"tcp", "[::1]:0", "MCPCAGE_HOSTSOCK_TCP6"},
		{"udp", "127.0.0.1:0", "MCPCAGE_HOSTSOCK_UDP4"}, {"udp", "[::1]:0", "MCPCAGE_HOSTSOCK_UDP6"},
	} {
		var addr string
		if l.network == "tcp" {
			ln, err := net.Listen(l.network, l.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			go acceptAndClose(ln)
			addr = ln.Addr().String()
		} else {
			pc, err := net.ListenPacket(l.network, l.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pc.Close() })
			addr = pc.LocalAddr().String()
		}
		env = append(env, l.env+"="+addr)
	}
	// A may reach nothing of these; B is isolated.
	a, _ := sessionForTest(t, c, parent, Policy{HostNetwork: true, Egress: []EgressRule{{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Ports: []uint16{443}}}})
	b, bID := namedSessionForTest(t, c, parent, "s2", Policy{})
	var mu sync.Mutex
	var denied []Event
	if err := c.Events(func(e Event) {
		if e.Cgroup == bID && e.Kind == KindNetDenied {
			mu.Lock()
			denied = append(denied, e)
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}

	// The sockets, made in A (the host's network namespace) and received here.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "ours"), os.NewFile(uintptr(pair[1]), "theirs")
	defer func() { _ = ours.Close() }()
	maker, release := loopChild(t, a, "MCPCAGE_HOSTSOCK_CHILD=make")
	maker.ExtraFiles = []*os.File{theirs}
	out, err := maker.CombinedOutput()
	release()
	_ = theirs.Close()
	if err != nil {
		t.Fatalf("socket maker: %v: %s", err, out)
	}
	oob := make([]byte, unix.CmsgSpace(4*len(hostSocketOps)))
	_, oobn, _, _, err := unix.Recvmsg(int(ours.Fd()), make([]byte, 1), oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v: %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != len(hostSocketOps) {
		t.Fatalf("received fds %v: %v", fds, err)
	}
	var files []*os.File
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "host socket")
		defer func() { _ = f.Close() }()
		files = append(files, f)
	}

	// Used in B, from a network namespace of its own (as a network =
	// "none" sandbox's processes are).
	user, release := loopChild(t, b, env...)
	user.ExtraFiles = files
	user.SysProcAttr.Cloneflags = unix.CLONE_NEWNET
	out, err = user.Output()
	release()
	if err != nil {
		t.Fatalf("socket user: %v: %s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		got[line[:max(i, 0)]] = line[i+1:]
	}
	want := map[string]string{}
	for _, o := range hostSocketOps {
		want["host "+o.name] = "EPERM"
		if o.family == unix.AF_INET {
			want["own "+o.name] = "ok"
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("results in the isolated session (-want +got):\n%s", diff)
	}

	// Each refusal is reported, as the host's socket's.
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	reported := map[string]int{}
	for _, e := range denied {
		if e.Rule != HostNetnsRule {
			t.Errorf("net.denied %s rule %#x, want HostNetnsRule", e.Addr, e.Rule)
		}
		reported[fmt.Sprintf("%s proto %d IPv%d", e.NetDenial(), e.Proto, map[int]int{32: 4, 128: 6}[e.Addr.Addr().BitLen()])]++
	}
	wantReported := map[string]int{" proto 6 IPv4": 1, " proto 6 IPv6": 1, " proto 17 IPv4": 1, " proto 17 IPv6": 1,
		"bind proto 6 IPv4": 1, "bind proto 6 IPv6": 1}
	if diff := cmp.Diff(wantReported, reported); diff != "" {
		t.Errorf("net.denied events by control, protocol and family (-want +got):\n%s", diff)
	}
}
