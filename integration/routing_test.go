package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// srhMarker is what hostile udp-srh sends.
const srhMarker = "mcpcage-srh-ping"

// capturedHost is a network namespace of this run joined to the host by a
// veth pair, with every frame that reaches its side captured.
type capturedHost struct {
	addr netip.Addr // the namespace's side of the pair
	seen map[string]*atomic.Int64
}

// count reports how many frames holding marker have arrived.
func (h *capturedHost) count(marker string) int64 { return h.seen[marker].Load() }

// newCapturedHost makes the namespace (name and addresses unique to this
// test process) and captures frames there with a packet socket (python3),
// counting those that hold one of markers. The namespace, the pair and
// the capture are removed when the test ends.
func newCapturedHost(t *testing.T, markers ...string) *capturedHost {
	t.Helper()
	ns := testenv.NewNamespace(t, "srh")
	src := `import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
markers = [m.encode() for m in sys.argv[2:]]
print("ready", flush=True)
while True:
    frame = s.recv(65535)
    for m in markers:
        if m in frame:
            print(m.decode(), flush=True)
`
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "python3", "-c", src, ns.Peer}, markers...)...)
	out, err := cmd.StdoutPipe()
	must(t, err, "capture's stdout")
	cmd.Stderr = os.Stderr
	must(t, cmd.Start(), "start the capture")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h := &capturedHost{addr: ns.Addr, seen: map[string]*atomic.Int64{}}
	for _, m := range markers {
		h.seen[m] = &atomic.Int64{}
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
				continue
			}
			if n, ok := h.seen[sc.Text()]; ok {
				n.Add(1)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("the capture in the namespace did not start")
	}
	return h
}

// sendFromHost sends marker from this process (outside every sandbox) to
// the captured host and waits until it is captured: the path works, and
// every frame sent before it has arrived.
func (h *capturedHost) sendFromHost(t *testing.T, marker string) {
	t.Helper()
	before := h.count(marker)
	c, err := net.Dial("udp", netip.AddrPortFrom(h.addr, 53).String())
	must(t, err, "dial the captured host")
	defer func() { _ = c.Close() }()
	testenv.WaitFor(t, "a datagram from the host captured in the namespace", 10*time.Second, func() (bool, string) {
		_, _ = c.Write([]byte(marker)) // again until seen: the first may wait for neighbour discovery
		return h.count(marker) > before, fmt.Sprintf("%d captured", h.count(marker))
	})
}

// A socket's IPv6 routing header (IPV6_RTHDR, a segment routing header:
// no privilege needed) sends each packet to the header's first segment,
// while connect(2) and sendmsg(2), and so the egress hooks, see only the
// final one. Before the fix a host-network server allowed nothing but
// [::1]:53 sent UDP (and TCP SYNs) to any IPv6 address the host routes
// to, and the audit log recorded an allowed send to [::1]:53. Now the
// session's packets with a routing header are dropped (cgroup_skb/egress)
// and the send fails with EPERM, recorded with where it would have gone.
func TestRoutingHeaderCannotRedirectEgress(t *testing.T) {
	setup(t)
	const after = "mcpcage-srh-after"
	h := newCapturedHost(t, srhMarker, after)
	h.sendFromHost(t, after)

	d := startDaemon(t, fmt.Sprintf("[servers.a]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"[::1]:53\"]\n", filepath.Join(env.bin, "testserver")))
	tr := d.trace(t)
	a := d.connect(t, "a", mcp.ProtocolVersion20251125)
	target := netip.AddrPortFrom(h.addr, 53).String()
	if v := attack(t, a, "udp-sendto", target); !strings.Contains(v, "operation not permitted") {
		t.Fatalf("plain UDP send to %s: %q, want EPERM", target, v)
	}
	v := attack(t, a, "udp-srh", h.addr.String(), "[::1]:53")
	if !strings.HasPrefix(v, "DENIED") || !strings.Contains(v, "operation not permitted") {
		t.Fatalf("UDP send to [::1]:53 routed through %s: %q, want EPERM", h.addr, v)
	}
	// Frames on the pair arrive in order: once a later one from the host
	// is captured, a routed datagram sent before it would have been too.
	h.sendFromHost(t, after)
	if n := h.count(srhMarker); n != 0 {
		t.Fatalf("%d datagrams of the sandbox reached %s through a routing header", n, h.addr)
	}
	ev := tr.wait(t, "net.denied", func(ev map[string]any) bool {
		return str(ev, "type") == "net.denied" && str(ev, "server") == "a" && strings.Contains(str(ev, "rule"), "routing header")
	})
	if str(ev, "addr") != h.addr.String() || str(ev, "action") != "dropped" || str(ev, "proto") != "udp" {
		t.Fatalf("net.denied of the routed datagram: %v, want addr %s, action dropped, proto udp", ev, h.addr)
	}
	d.record(t, "net.denied", func(r map[string]any) bool {
		return str(r, "server") == "a" && strings.Contains(str(r, "rule"), "routing header") && str(r, "addr") == h.addr.String()
	})
}

// IPV6_FREEBIND needs no privilege: a socket binds to an address that is
// not the host's (a bind to port 0 passes the bind hooks) and its
// datagrams leave with that source, to any destination the egress list
// allows (found by a red-team helper: a host-network server allowed
// only [::1]:P sent from 2001:db8::dead to a service there). Now
// setsockopt of IP(V6)_FREEBIND and _TRANSPARENT is refused in every
// session, and recorded.
func TestSpoofedSourceIsRefused(t *testing.T) {
	setup(t)
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatalf("an IPv6 loopback UDP socket: %v", err)
	}
	defer func() { _ = pc.Close() }()
	from := make(chan string, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			from <- addr.(*net.UDPAddr).IP.String() + " " + string(buf[:n])
		}
	}()
	d := startDaemon(t, fmt.Sprintf("[servers.a]\ncommand = [%q]\nnetwork = \"host\"\negress = [%q]\n", filepath.Join(env.bin, "testserver"), pc.LocalAddr().String()))
	a := d.connect(t, "a", mcp.ProtocolVersion20251125)
	if v := attack(t, a, "udp-spoof", "2001:db8::dead", pc.LocalAddr().String()); !strings.HasPrefix(v, "DENIED") || !strings.Contains(v, "IPV6_FREEBIND") {
		t.Fatalf("a datagram from 2001:db8::dead: %q, want setsockopt IPV6_FREEBIND refused", v)
	}
	// A datagram the same server may send, after it: the loopback keeps
	// their order, so a spoofed one would have arrived first.
	if v := attack(t, a, "udp-sendto", pc.LocalAddr().String()); strings.HasPrefix(v, "DENIED") {
		t.Fatalf("a plain datagram to %s: %q, want it sent", pc.LocalAddr(), v)
	}
	select {
	case got := <-from:
		if got != "::1 ping" {
			t.Fatalf("the listener got %q first, want the plain datagram from ::1", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the plain datagram never arrived")
	}
	d.record(t, "net.bind_denied", func(r map[string]any) bool {
		return str(r, "server") == "a" && strings.Contains(str(r, "rule"), "FREEBIND")
	})
}
