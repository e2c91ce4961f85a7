package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The bind tests' child, run in a session cgroup: MCPCAGE_BIND_CHILD is
// "tcp ADDR" or "udp ADDR" (listen once, print "ok ADDR" or "err ERRNO"),
// or "serve ADDR" (listen, print "ok ADDR", answer "hi" to connections
// until stdin closes).
func init() {
	mode, addr, ok := strings.Cut(os.Getenv("MCPCAGE_BIND_CHILD"), " ")
	if !ok {
		return
	}
	var c io.Closer
	var err error
	var got string
	switch mode {
	case "udp":
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", addr)
		if err == nil {
			c, got = pc, pc.LocalAddr().String()
		}
	default:
		var ln net.Listener
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			c, got = ln, ln.Addr().String()
			if mode == "serve" {
				go func() {
					for {
						conn, err := ln.Accept()
						if err != nil {
							return
						}
						_, _ = conn.Write([]byte("hi"))
						_ = conn.Close()
					}
				}()
			}
		}
	}
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Println("err", unix.ErrnoName(errno))
		} else {
			fmt.Println("err", err)
		}
		os.Exit(0)
	}
	fmt.Println("ok", got)
	if mode == "serve" {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	_ = c.Close()
	os.Exit(0)
}

// bindChild starts the child in cgroup dir and returns its first line and,
// for "serve", a function that ends it.
func bindChild(t *testing.T, dir, mode, addr string) (string, func()) {
	t.Helper()
	cmd, stdin, stdout := startChildIn(t, dir, "MCPCAGE_BIND_CHILD="+mode+" "+addr)
	stop := func() { _ = stdin.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		t.Fatalf("bind child: %v", err)
	}
	return strings.TrimSpace(line), stop
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = pc.Close() }()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestBindAndListen(t *testing.T) {
	c, parent := loadForTest(t)
	ingressErr, err := c.EnableBind()
	if err != nil {
		t.Fatal(err)
	}
	if ingressErr != nil {
		t.Fatalf("cgroup_skb/ingress: %v", ingressErr)
	}
	allowedTCP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freePort(t, "tcp")))
	allowedV6 := netip.AddrPortFrom(netip.MustParseAddr("::1"), uint16(freePort(t, "tcp")))
	allowedUDP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freePort(t, "udp")))
	other := freePort(t, "tcp")
	session, cgid := sessionForTest(t, c, parent, Policy{HostNetwork: true, Listen: []netip.AddrPort{allowedTCP, allowedV6, allowedUDP}})

	var mu sync.Mutex
	var denied []Event
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.NetDenial() != "" {
			mu.Lock()
			denied = append(denied, e)
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mode, addr, want string
	}{
		{"allowed TCP port", "tcp", allowedTCP.String(), "ok " + allowedTCP.String()},
		{"allowed IPv6 TCP port", "tcp", allowedV6.String(), "ok " + allowedV6.String()},
		{"allowed UDP port", "udp", allowedUDP.String(), "ok " + allowedUDP.String()},
		{"other port", "tcp", fmt.Sprintf("127.0.0.1:%d", other), "err EPERM"},
		{"allowed port, other address", "tcp", fmt.Sprintf("0.0.0.0:%d", allowedTCP.Port()), "err EPERM"},
		{"IPv4-mapped form of the allowed address", "tcp", fmt.Sprintf("[::ffff:127.0.0.1]:%d", allowedTCP.Port()), "ok"},
		{"UDP port not allowed", "udp", fmt.Sprintf("127.0.0.1:%d", other), "err EPERM"},
		{"UDP ephemeral port (a client)", "udp", "127.0.0.1:0", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, stop := bindChild(t, session, tt.mode, tt.addr)
			stop()
			if !strings.HasPrefix(got, tt.want) {
				t.Fatalf("%s %s: %q, want %q", tt.mode, tt.addr, got, tt.want)
			}
		})
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Go tries MPTCP, then TCP: a refused listen may be reported twice.
	mu.Lock()
	seen := map[string]bool{}
	for _, e := range denied {
		if e.NetDenial() != "bind" || e.Result != 0 {
			t.Errorf("bind denial %+v", e)
		}
		seen[fmt.Sprintf("%s/%d", e.Addr, e.Proto)] = true
	}
	for _, want := range []string{fmt.Sprintf("127.0.0.1:%d/6", other), fmt.Sprintf("[::]:%d/6", allowedTCP.Port()), fmt.Sprintf("127.0.0.1:%d/17", other)} {
		if !seen[want] {
			t.Errorf("no bind denial for %s among %v", want, seen)
		}
	}
	denied = nil
	mu.Unlock()

	t.Run("a listener on an ephemeral port takes no connection", func(t *testing.T) {
		got, stop := bindChild(t, session, "serve", "127.0.0.1:0")
		defer stop()
		addr, ok := strings.CutPrefix(got, "ok ")
		if !ok {
			t.Fatalf("listen on an ephemeral port: %q", got)
		}
		conn, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err == nil {
			b, _ := io.ReadAll(conn)
			_ = conn.Close()
			t.Fatalf("the host reached the cage's ephemeral listener %s: %q", addr, b)
		}
		if err := c.Sync(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(denied) == 0 || denied[0].NetDenial() != "listen" || denied[0].Addr.String() != addr {
			t.Fatalf("listen denials: %+v, want one for %s", denied, addr)
		}
	})
	t.Run("an allowed listener serves the host", func(t *testing.T) {
		got, stop := bindChild(t, session, "serve", allowedTCP.String())
		defer stop()
		if got != "ok "+allowedTCP.String() {
			t.Fatalf("listen on %s: %q", allowedTCP, got)
		}
		conn, err := net.DialTimeout("tcp", allowedTCP.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		if b, _ := io.ReadAll(conn); string(b) != "hi" {
			t.Fatalf("read %q", b)
		}
	})
}

func TestListenKey(t *testing.T) {
	// IPv4 and its v4-mapped IPv6 form are one key, as bind.c builds it.
	a := listenKey(7, netip.MustParseAddrPort("127.0.0.1:8080"))
	b := listenKey(7, netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080"))
	if a != b {
		t.Fatalf("keys differ: %+v %+v", a, b)
	}
	want := [16]uint8{10: 0xff, 11: 0xff, 12: 127, 15: 1}
	if a.Addr != want || a.Port != 8080 || a.Cgid != 7 {
		t.Fatalf("key %+v", a)
	}
}
