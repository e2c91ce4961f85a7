package procnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestConnectedTo(t *testing.T) {
	tests := []struct {
		name           string
		listen, dialTo string // network addresses; dialTo's port is the listener's
	}{
		{"ipv4 loopback", "127.0.0.1:0", "127.0.0.1"},
		{"ipv4 to a dual-stack listener", "[::]:0", "127.0.0.1"},
		{"ipv6 loopback", "[::1]:0", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tt.listen)
			testenv.Require(t, err == nil, "a listener on "+tt.listen)
			defer func() { _ = ln.Close() }()
			port := ln.Addr().(*net.TCPAddr).Port
			c, err := net.Dial("tcp", net.JoinHostPort(tt.dialTo, strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			s, found, err := ConnectedTo(local)
			if err != nil || !found {
				t.Fatalf("ConnectedTo(%s) = %+v, %v, %v; want the listener's side (not yet accepted)", local, s, found, err)
			}
			if s.UID != uint32(os.Geteuid()) || s.Inode != 0 {
				t.Errorf("not accepted: %+v, want uid %d and no inode", s, os.Geteuid())
			}
			a, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = a.Close() }()
			s, found, err = ConnectedTo(local)
			if err != nil || !found || s.UID != uint32(os.Geteuid()) || s.Inode == 0 || s.State != Established {
				t.Errorf("accepted: ConnectedTo(%s) = %+v, %v, %v; want uid %d, an inode, established", local, s, found, err, os.Geteuid())
			}
		})
	}
}

// TestBetween: the socket that connected from one endpoint to another,
// found by both, in whatever state it is in.
func TestBetween(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			ln, err := net.Listen("tcp", listen)
			testenv.Require(t, err == nil, "a listener on "+listen)
			defer func() { _ = ln.Close() }()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			a, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = a.Close() }()
			from, to := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
			s, found, err := Between(from, to)
			if err != nil || !found || s.UID != uint32(os.Geteuid()) || s.Inode == 0 || s.State != Established {
				t.Errorf("Between(%s, %s) = %+v, %v, %v; want this process's uid, an inode, established", from, to, s, found, err)
			}
			if s, found, err := Between(to, from); err != nil || !found || s.Inode == 0 {
				t.Errorf("the accepted side: Between(%s, %s) = %+v, %v, %v; want it", to, from, s, found, err)
			}
			_ = c.Close()
			s, found, err = Between(from, to)
			if err != nil || !found || s.State == Established {
				t.Errorf("closed: Between(%s, %s) = %+v, %v, %v; want a closing socket", from, to, s, found, err)
			}
			other := netip.AddrPortFrom(from.Addr(), from.Port()+1)
			if s, found, err := Between(other, to); err != nil || found {
				t.Errorf("Between(%s, %s) = %+v, %v, %v; want none", other, to, s, found, err)
			}
		})
	}
}

func TestScanTable(t *testing.T) {
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	line := func(local, rem, st, uid, inode string) string {
		return "   0: " + local + " " + rem + " " + st + " 00000000:00000000 00:00000000 00000000  " + uid + "        0 " + inode + " 1 0000000000000000 20 4 30 10 -1\n"
	}
	rem := v4(netip.MustParseAddrPort("127.0.0.1:40000"))
	tests := []struct {
		name     string
		table    string
		local    string // "": any local endpoint
		prefer   string // of several, the one with this local endpoint
		anyState bool
		want     Socket
		found    bool
		wantErr  error
	}{
		{"established", header + line("0100007F:1F90", rem, "01", "1000", "4242"), "", "", false, Socket{UID: 1000, Inode: 4242, State: Established}, true, nil},
		{"handshake", header + line("0100007F:1F90", rem, "03", "0", "0"), "", "", false, Socket{UID: 0, State: SynRecv}, true, nil},
		{"listening lines are not the other end", header + line("0100007F:1F90", "00000000:0000", "0A", "0", "7") + line("0100007F:9C40", "0100007F:1F90", "01", "5", "8"), "", "", false, Socket{}, false, nil},
		{"closing is not", header + line("0100007F:1F90", rem, "06", "0", "0"), "", "", false, Socket{}, false, nil},
		{"closing is, in any state", header + line("0100007F:1F90", rem, "06", "0", "0"), "", "", true, Socket{UID: 0, State: "06"}, true, nil},
		{"two is ambiguous", header + line("0100007F:1F90", rem, "01", "1", "1") + line("0100007F:1F91", rem, "01", "2", "2"), "", "", false, Socket{}, false, ErrAmbiguous},
		{"one connection listed twice, once not yet accepted (a read of the table is no snapshot)", header + line("0100007F:1F90", rem, "01", "5", "0") + line("0100007F:1F90", rem, "01", "5", "77"), "", "0100007F:1F90", false, Socket{UID: 5, Inode: 77, State: Established, preferred: true, local: "0100007F:1F90"}, true, nil},
		{"two, told apart by the destination", header + line("0100007F:1F90", rem, "01", "1", "1") + line("0100007F:1F91", rem, "01", "2", "2"), "", "0100007F:1F91", false, Socket{UID: 2, Inode: 2, State: Established, preferred: true}, true, nil},
		{"two, neither the destination (a redirect)", header + line("0100007F:1F90", rem, "01", "1", "1") + line("0100007F:1F91", rem, "01", "2", "2"), "", "0100007F:1F92", false, Socket{}, false, ErrAmbiguous},
		{"one, not the destination (a redirect), is it", header + line("0100007F:1F90", rem, "01", "1", "1"), "", "0100007F:1F92", false, Socket{UID: 1, Inode: 1, State: Established}, true, nil},
		{"two, told apart by the local endpoint", header + line("0100007F:1F90", rem, "01", "1", "1") + line("0100007F:1F91", rem, "01", "2", "2"), "0100007F:1F91", "", false, Socket{UID: 2, Inode: 2, State: Established}, true, nil},
		{"another local endpoint is not it", header + line("0100007F:1F90", rem, "01", "1", "1"), "0100007F:1F91", "", true, Socket{}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all, err := scanTable(strings.NewReader(tt.table), "tcp", tt.local, rem, tt.prefer, tt.anyState)
			var s Socket
			var found bool
			if err == nil {
				s, found, err = choose(all)
			}
			public := func(s Socket) Socket { return Socket{UID: s.UID, Inode: s.Inode, State: s.State} } // what callers see
			if !errors.Is(err, tt.wantErr) || found != tt.found || public(s) != public(tt.want) {
				t.Errorf("scan = %+v, %v, %v; want %+v, %v, %v", s, found, err, tt.want, tt.found, tt.wantErr)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	tests := []struct{ ep, v4, v6 string }{
		{"127.0.0.1:8080", "0100007F:1F90", "0000000000000000FFFF00000100007F:1F90"},
		{"[::1]:443", "", "00000000000000000000000001000000:01BB"},
	}
	for _, tt := range tests {
		ep := netip.MustParseAddrPort(tt.ep)
		if tt.v4 != "" {
			if got := v4(ep); got != tt.v4 {
				t.Errorf("v4(%s) = %s, want %s", ep, got, tt.v4)
			}
			ep = netip.AddrPortFrom(netip.AddrFrom16(ep.Addr().As16()), ep.Port())
		}
		if got := v6(ep); got != tt.v6 {
			t.Errorf("v6(%s) = %s, want %s", ep, got, tt.v6)
		}
	}
}
