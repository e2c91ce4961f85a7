package remote

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/dnstest"
	"github.com/mcpcage/mcpcage/internal/tcpsockets"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestPublicDialer: a remote server's host name is dialled only at the
// addresses a sandboxed server's egress would allow. A name whose DNS
// points at loopback (DNS rebinding by whoever runs its zone) is not
// connected to, and the error says why; under a private domain, or as an
// address written in the configuration, it is.
func TestPublicDialer(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dns.Set("rebind.vendor.test", dnstest.Record{Addr: netip.MustParseAddr("127.0.0.1"), TTL: 60})
	tests := []struct {
		name    string
		host    string
		private []string
		refused bool
	}{
		{"a name pointed at loopback", "rebind.vendor.test", nil, true},
		{"the same name in a private domain", "rebind.vendor.test", []string{"vendor.test"}, false},
		{"an address written in the configuration", "127.0.0.1", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostport := net.JoinHostPort(tt.host, port)
			c, err := NewHTTPClient(ClientOptions{Hosts: []string{hostport}, Server: "demo", Timeout: 5 * time.Second,
				DNSServers: []string{dns.Addr}, PrivateDomains: tt.private, LocalUIDs: []uint32{uint32(os.Geteuid())}})
			if err != nil {
				t.Fatal(err)
			}
			before := accepted.Load()
			resp, err := c.Get("https://" + hostport + "/mcp")
			if err == nil {
				_ = resp.Body.Close()
				t.Fatal("the request succeeded against a listener that closes every connection")
			}
			if tt.refused {
				if !strings.Contains(err.Error(), "resolved to 127.0.0.1, which is refused") || !strings.Contains(err.Error(), "loopback") {
					t.Fatalf("err = %v, want the refusal and why", err)
				}
				if n := accepted.Load() - before; n != 0 {
					t.Fatalf("%d connections reached the loopback listener", n)
				}
				return
			}
			// Connected (the TLS handshake then fails against the plain listener).
			testenv.WaitFor(t, "the connection to reach the listener", 5*time.Second, func() (bool, string) {
				return accepted.Load() > before, err.Error()
			})
		})
	}
}

// A connection to a program of this host is kept only when the program
// is the user's, for a user's own server, or its local_user's (root by
// default), for an administrator's: found by a red-team helper, an
// administrator's server on loopback sent every user's token and calls
// to whoever took its port while the service was down.
func TestCheckPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	me := uint32(os.Geteuid())
	tests := []struct {
		name    string
		want    peerWanted
		wantErr string
	}{
		{"a user's server, another user's program", peerWanted{uids: []uint32{me + 4242}}, fmt.Sprintf("that uid %d runs, not you", me)},
		{"a user's server, the user's own program", peerWanted{uids: []uint32{me}}, ""},
		{"an administrator's server, another user's program", peerWanted{uids: []uint32{me + 4242}, admin: true}, fmt.Sprintf("that uid %d runs, not one of the server's local_users", me)},
		{"an administrator's server, one of its local_users' program", peerWanted{uids: []uint32{me + 4242, me}, admin: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTo(t, ln)
			wantCheckPeer(t, c, tt.want, tt.wantErr)
		})
	}
}

// An administrator's server's connection to this host whose other end
// the kernel says is in no socket of this namespace is kept unless a
// program of another user than local_users listens where it went.
func TestPeerAbsent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeEnd := free.Addr().(*net.TCPAddr).AddrPort()
	_ = free.Close()
	me := uint32(os.Geteuid())
	tests := []struct {
		name    string
		dest    netip.AddrPort
		want    peerWanted
		wantErr string
	}{
		{"nothing listens (DNAT to a container)", freeEnd, peerWanted{uids: []uint32{me + 4242}, admin: true}, ""},
		{"one of local_users listens", ln.Addr().(*net.TCPAddr).AddrPort(), peerWanted{uids: []uint32{me}, admin: true}, ""},
		{"another user listens", ln.Addr().(*net.TCPAddr).AddrPort(), peerWanted{uids: []uint32{me + 4242}, admin: true}, fmt.Sprintf("yet uid %d, not one of the server's local_users, listens there", me)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := peerAbsent(tt.dest, tt.want)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("peerAbsent(%s) = %v, want %q", tt.dest, err, tt.wantErr)
			}
		})
	}
}

// A program that shut its end of the connection before it was checked
// is not reached, whoever runs it (the kernel's uid for a socket whose
// program is gone is 0's).
func TestCheckPeerRefusesAShutEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c := dialTo(t, ln)
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	if err := a.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	testenv.WaitFor(t, "the other end shut", 5*time.Second, func() (bool, string) {
		s, found, err := tcpsockets.PeerOf(local, dest)
		return found && !s.State.Open(), fmt.Sprintf("%+v, %v, %v", s, found, err)
	})
	me := uint32(os.Geteuid())
	if err := checkPeer(c, peerWanted{uids: []uint32{me}, admin: true}); err == nil || !strings.Contains(err.Error(), "closed or shut its end") {
		t.Errorf("checkPeer = %v, want a refusal (its end is shut)", err)
	}
}

// A listener that keeps a connection in SYN_RECV (TCP_DEFER_ACCEPT: no
// data, no child socket) is checked as its user's: the kernel's answer
// for such a connection says uid 0, which would pass another user's
// squatter as root.
func TestCheckPeerHandshakeIsTheListeners(t *testing.T) {
	squatter := Owner{UID: 4242, GID: 4242}
	fd, err := socketAs(unix.AF_INET, squatter)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer func() { _ = f.Close() }()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 60); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	tests := []struct {
		name    string
		want    peerWanted
		wantErr string
	}{
		{"an administrator's server, root only", peerWanted{uids: []uint32{0}, admin: true}, "that uid 4242 runs, not one of the server's local_users"},
		{"a user's server, the user's", peerWanted{uids: []uint32{squatter.UID}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTo(t, ln)
			local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
			if s, found, err := tcpsockets.PeerOf(local, dest); err != nil || !found || s.State != tcpsockets.SynRecv {
				t.Fatalf("PeerOf = %+v, %v, %v; want the connection in SYN_RECV", s, found, err)
			}
			wantCheckPeer(t, c, tt.want, tt.wantErr)
		})
	}
}

// A user's own server's connections are made with the user's
// credentials: the kernel keeps the user's uid for the socket (and a
// host firewall's owner match sees the user), not root's.
func TestDialAs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	owner := Owner{UID: 4242, GID: 4243}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := dialAs(ctx, ln.Addr().String(), owner, 5*time.Second)
	if err != nil {
		t.Fatalf("dialAs: %v", err)
	}
	defer func() { _ = c.Close() }()
	s, found, err := tcpsockets.ConnectedTo(ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil || !found || s.UID != owner.UID {
		t.Fatalf("the connecting socket: %+v, %v, %v; want uid %d", s, found, err, owner.UID)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close() }()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(a, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read through the connection: %q, %v", buf, err)
	}
	// The caller's own credentials are untouched.
	if uid, _ := unix.SetfsuidRetUid(-1); uid != os.Geteuid() {
		t.Errorf("this thread's fsuid is %d after dialAs, want %d", uid, os.Geteuid())
	}

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := free.Addr().String()
	_ = free.Close()
	if _, err := dialAs(ctx, closed, owner, 5*time.Second); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dialAs to a closed port: %v, want connection refused", err)
	}
}

// dialTo connects to ln, the connection closed with the test.
func dialTo(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// wantCheckPeer checks checkPeer(c, want): no error when wantErr is
// empty, else one that contains it.
func wantCheckPeer(t *testing.T, c net.Conn, want peerWanted, wantErr string) {
	t.Helper()
	err := checkPeer(c, want)
	if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
		t.Errorf("checkPeer = %v, want %q", err, wantErr)
	}
}
