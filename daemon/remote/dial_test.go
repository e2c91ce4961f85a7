package remote

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/dnstest"
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
				DNSServers: []string{dns.Addr}, PrivateDomains: tt.private})
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

// A user's own server's connection to a program of this host is kept
// only when the program is the user's.
func TestCheckPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	me := uint32(os.Geteuid())
	tests := []struct {
		name    string
		owner   uint32
		wantErr string
	}{
		{"another user's program", me + 4242, fmt.Sprintf("that uid %d runs, not you", me)},
		{"root's own servers are not checked", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			err = checkPeer(c, tt.owner)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("checkPeer = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
