package bpf

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// net.connect carries what became of the connection: connect(2)'s result,
// or, for a non-blocking TCP connect, the handshake's.
func TestConnectOutcome(t *testing.T) {
	c, parent := loadForTest(t)
	if ok, err := c.Handshakes(); !ok {
		t.Fatalf("tp_btf/inet_sock_set_state not attached on this kernel: %v", err)
	}
	session, cgid := sessionForTest(t, c, parent, Policy{HostNetwork: true, Egress: []EgressRule{{Prefix: netip.MustParsePrefix("127.0.0.0/8")}}})
	events := watchNet(t, c, cgid)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go acceptAndClose(ln)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	if err := closed.Close(); err != nil { // the port must refuse connections
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = udp.Close() }()
	tests := []struct {
		name, proto, addr string
		kind              Kind
		result            int32
		outcome           ConnectOutcome
	}{
		{"TCP to a listener", "tcp", ln.Addr().String(), KindConnect, 0, ConnectHandshake},
		{"TCP to a closed port", "tcp", closedAddr, KindConnect, -int32(unix.ECONNREFUSED), ConnectHandshake},
		{"UDP connect", "udp", udp.LocalAddr().String(), KindConnect, 0, ConnectSyscall},
		{"outside the allow-list", "tcp", "10.255.255.1:80", KindNetDenied, 0, ConnectNoResult},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := events.dial(t, c, session, tt.proto, tt.addr)
			if len(got) != 1 {
				t.Fatalf("%d connect events, want 1: %+v", len(got), got)
			}
			e := got[0]
			if e.Kind != tt.kind || e.Addr.String() != tt.addr || e.Result != tt.result || e.Outcome != tt.outcome {
				t.Fatalf("event %s %s result %d outcome %s; want %s %s result %d outcome %s",
					e.Kind, e.Addr, e.Result, e.Outcome, tt.kind, tt.addr, tt.result, tt.outcome)
			}
		})
	}
}

// An unspecified destination is this host to the kernel: 0.0.0.0 and
// ::ffff:0.0.0.0 reach 127.0.0.1, :: reaches ::1. A rule that holds them
// (a hosts file's "0.0.0.0 blocked.example" answer, a range such as
// 0.0.0.0/4) opened the host's loopback (found by a red-team helper);
// now they are refused whatever the rules.
func TestUnspecifiedAddressesAreRefused(t *testing.T) {
	c, parent := loadForTest(t)
	session, cgid := sessionForTest(t, c, parent, Policy{HostNetwork: true, Egress: []EgressRule{
		{Prefix: netip.MustParsePrefix("0.0.0.0/4")}, {Prefix: netip.MustParsePrefix("::/128")}}})
	events := watchNet(t, c, cgid)
	ln4, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln4.Close() }()
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("an IPv6 loopback listener: %v", err)
	}
	defer func() { _ = ln6.Close() }()
	udp4, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = udp4.Close() }()
	port := func(a net.Addr) string { _, p, _ := net.SplitHostPort(a.String()); return p }
	tests := []struct {
		name, proto, addr string
		ln                net.Listener // must accept nothing
	}{
		{"TCP to 0.0.0.0", "tcp", "0.0.0.0:" + port(ln4.Addr()), ln4},
		{"TCP to ::ffff:0.0.0.0", "tcp", "[::ffff:0.0.0.0]:" + port(ln4.Addr()), ln4},
		{"TCP to ::", "tcp6", "[::]:" + port(ln6.Addr()), ln6},
		{"UDP to 0.0.0.0", "udp", "0.0.0.0:" + port(udp4.LocalAddr()), nil},
		{"TCP to 0.1.2.3 (0/8)", "tcp", "0.1.2.3:" + port(ln4.Addr()), ln4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := events.dial(t, c, session, tt.proto, tt.addr)
			if tt.ln != nil {
				// A connect that went through is in the backlog already
				// (the handshake completed before connect(2) returned).
				_ = tt.ln.(*net.TCPListener).SetDeadline(time.Now())
				if a, err := tt.ln.Accept(); err == nil {
					_ = a.Close()
					t.Fatalf("the loopback listener accepted a connection to %s", tt.addr)
				}
			}
			if len(got) != 1 || got[0].Kind != KindNetDenied || got[0].Rule != UnspecifiedRule {
				t.Fatalf("events %+v; want one net.denied for the unspecified address", got)
			}
		})
	}
}

// netEvents are a session's connect, send and denial events.
type netEvents struct {
	mu  sync.Mutex
	got []Event
}

// watchNet collects the connect, send and denial events of the session
// of cgroup cgid.
func watchNet(t *testing.T, c *Cage, cgid uint64) *netEvents {
	t.Helper()
	return watchKinds(t, c, cgid, KindConnect, KindNetDenied, KindUDPSend)
}

// take returns the events collected since the last take, and forgets them.
func (n *netEvents) take() []Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	got := n.got
	n.got = nil
	return got
}

// watchKinds collects the events of kinds of the session of cgroup cgid.
func watchKinds(t *testing.T, c *Cage, cgid uint64, kinds ...Kind) *netEvents {
	t.Helper()
	n := &netEvents{}
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && slices.Contains(kinds, e.Kind) {
			n.mu.Lock()
			n.got = append(n.got, e)
			n.mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	return n
}

// dial has a child in the session's cgroup dir make one attempt to reach
// addr over proto, and returns the events it caused.
func (n *netEvents) dial(t *testing.T, c *Cage, dir, proto, addr string) []Event {
	t.Helper()
	n.mu.Lock()
	n.got = nil
	n.mu.Unlock()
	t.Setenv("MCPCAGE_BENCH_PROTO", proto)
	child(t, "dial", 1, dir, addr)
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Event(nil), n.got...)
}
