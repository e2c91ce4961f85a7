package bpf

import (
	"net"
	"net/netip"
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
	var mu sync.Mutex
	var got []Event
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && (e.Kind == KindConnect || e.Kind == KindNetDenied) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
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
			mu.Lock()
			got = nil
			mu.Unlock()
			t.Setenv("MCPCAGE_BENCH_PROTO", tt.proto)
			child(t, "dial", 1, session, tt.addr)
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
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
