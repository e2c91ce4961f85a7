package tcpsockets

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// These tests ask this host's kernel about sockets they make.

func TestCheck(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

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
			if s.UID != uint32(os.Geteuid()) || s.Inode != 0 || s.Remote != unmap(local) {
				t.Errorf("not accepted: %+v, want uid %d, no inode, remote %s", s, os.Geteuid(), local)
			}
			a, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = a.Close() }()
			s, found, err = ConnectedTo(local)
			if err != nil || !found || s.UID != uint32(os.Geteuid()) || s.Inode != inodeOf(t, a) || s.State != Established {
				t.Errorf("accepted: ConnectedTo(%s) = %+v, %v, %v; want uid %d, the accepted socket's inode %d, established", local, s, found, err, os.Geteuid(), inodeOf(t, a))
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
			if err != nil || !found || s.UID != uint32(os.Geteuid()) || s.Inode != inodeOf(t, c) || s.State != Established {
				t.Errorf("Between(%s, %s) = %+v, %v, %v; want this process's uid, the connecting socket's inode, established", from, to, s, found, err)
			}
			if s, found, err := Between(to, from); err != nil || !found || s.Inode != inodeOf(t, a) {
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
			// The kernel's lookup of endpoints no connection has answers
			// with the listener at the local one: not it.
			if s, found, err := Between(to, other); err != nil || found {
				t.Errorf("Between(%s, %s) = %+v, %v, %v; want none (not the listener)", to, other, s, found, err)
			}
		})
	}
}

// peerScript is a listener of another user (python3 run as uid 65534):
// it prints its port, then does what its second argument says with the
// first connection. "wait": nothing (not accepted); "accept": accepts
// it; "defer": TCP_DEFER_ACCEPT, so a connection that sends nothing
// stays in SYN_RECV on its side; "shut": accepts it and shuts its
// writing half.
const peerScript = `import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
if sys.argv[2] == 'defer':
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 60)
s.bind((sys.argv[1], 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
if sys.argv[2] in ('accept', 'shut'):
    c, _ = s.accept()
    if sys.argv[2] == 'shut':
        c.shutdown(socket.SHUT_WR)
    print('done', flush=True)
sys.stdin.read()
`

// otherUID is the uid peerScript runs as.
const otherUID = 65534

// listenAs starts peerScript as otherUID, listening on addr, and
// returns its port and a reader of its further lines.
func listenAs(t *testing.T, addr, mode string) (uint16, *bufio.Reader) {
	t.Helper()
	testenv.RequireRoot(t)
	py := "/usr/bin/python3" // one that uid 65534 may run (not a shim in root's home)
	_, err := os.Stat(py)
	testenv.Require(t, err == nil, py)
	cmd := exec.Command(py, "-c", peerScript, addr, mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("the listener of uid %d: %v", otherUID, err)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(line), 10, 16)
	if err != nil {
		t.Fatalf("the listener's port %q: %v", line, err)
	}
	return uint16(port), r
}

// TestPeerOf: the other end of a connection to another user's listener,
// in each state it can be in when the connection is checked, with that
// user's uid.
func TestPeerOf(t *testing.T) {
	tests := []struct {
		mode      string
		state     State
		withInode bool
	}{
		{"wait", Established, false},
		{"accept", Established, true},
		{"defer", SynRecv, false}, // the kernel's answer has uid 0: the listener's is found
		{"shut", FinWait2, true},
	}
	for _, listen := range []string{"127.0.0.1", "::1", "::"} {
		for _, tt := range tests {
			t.Run(listen+" "+tt.mode, func(t *testing.T) {
				port, lines := listenAs(t, listen, tt.mode)
				to := "127.0.0.1"
				if listen == "::1" {
					to = "::1"
				}
				c, err := net.Dial("tcp", net.JoinHostPort(to, strconv.Itoa(int(port))))
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = c.Close() }()
				if tt.withInode {
					if l, err := lines.ReadString('\n'); err != nil || l != "done\n" {
						t.Fatalf("the listener: %q, %v", l, err)
					}
				}
				local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
				var s Socket
				var found bool
				ok, last := testenv.Poll(5*time.Second, func() (bool, string) {
					s, found, err = PeerOf(local, dest)
					return err == nil && found && s.State == tt.state, fmt.Sprintf("%+v, %v, %v", s, found, err)
				})
				if !ok {
					t.Fatalf("PeerOf(%s, %s) = %s; want state %s", local, dest, last, tt.state)
				}
				if s.UID != otherUID || (s.Inode != 0) != tt.withInode || s.Local != unmap(dest) || s.Remote != unmap(local) {
					t.Errorf("PeerOf(%s, %s) = %+v; want uid %d, an inode: %v", local, dest, s, otherUID, tt.withInode)
				}
				if tt.state.Open() {
					if s2, found, err := ConnectedTo(local); err != nil || !found || s2 != s {
						t.Errorf("ConnectedTo(%s) = %+v, %v, %v; want %+v", local, s2, found, err, s)
					}
				}
			})
		}
	}
}

// TestListeners: the listeners a connection to an endpoint could reach.
func TestListeners(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		v6only bool
		ask    string // address asked about, at the listener's port
		want   bool
	}{
		{"ipv4, its address", "127.0.0.1:0", false, "127.0.0.1", true},
		{"ipv4, another address", "127.0.0.1:0", false, "127.0.0.2", false},
		{"ipv4 unspecified", "0.0.0.0:0", false, "127.0.0.2", true},
		{"dual stack takes ipv4", "[::]:0", false, "127.0.0.1", true},
		{"ipv6 only does not", "[::]:0", true, "127.0.0.1", false},
		{"ipv6 only, ipv6", "[::]:0", true, "::1", true},
		{"ipv4 unspecified takes no ipv6", "0.0.0.0:0", false, "::1", false}, // tcp4: Go would make it dual-stack
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					if tt.v6only {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
					}
				})
				if err != nil {
					return err
				}
				return serr
			}}
			network := "tcp"
			if strings.HasPrefix(tt.listen, "0.") {
				network = "tcp4"
			}
			ln, err := lc.Listen(t.Context(), network, tt.listen)
			testenv.Require(t, err == nil, "a listener on "+tt.listen)
			defer func() { _ = ln.Close() }()
			port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
			ls, err := Listeners(netip.AddrPortFrom(netip.MustParseAddr(tt.ask), port))
			if err != nil {
				t.Fatal(err)
			}
			if got := len(ls) == 1 && ls[0].Inode == inodeOf(t, ln) && ls[0].UID == uint32(os.Geteuid()); got != tt.want || len(ls) > 1 {
				t.Errorf("Listeners(%s:%d) = %+v; want the listener: %v", tt.ask, port, ls, tt.want)
			}
		})
	}
}

// TestPeerOfOutsideTheNamespace: a connection whose other end is in
// another network namespace (joined to this one by a veth pair, as a
// container a port is forwarded to is) has none in this one; and the
// kernel's answer to a thread of another namespace, which lacks the
// connection's own socket, is not taken for an absence.
func TestPeerOfOutsideTheNamespace(t *testing.T) {
	ns := testenv.NewNamespace(t, "pn")

	var ln net.Listener
	var err error
	inNamespace(t, ns.Name, func() {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ns.Addr, 0).String())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if s, found, err := PeerOf(local, dest); err != nil || found {
		t.Errorf("PeerOf(%s, %s) = %+v, %v, %v; want none in this namespace", local, dest, s, found, err)
	}
	if ls, err := Listeners(dest); err != nil || len(ls) != 0 {
		t.Errorf("Listeners(%s) = %+v, %v; want none in this namespace", dest, ls, err)
	}
	// A connection of this namespace, asked about in the other.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hostLn.Close() }()
	hc, err := net.Dial("tcp", hostLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hc.Close() }()
	hlocal, hdest := hc.LocalAddr().(*net.TCPAddr).AddrPort(), hc.RemoteAddr().(*net.TCPAddr).AddrPort()
	inNamespace(t, ns.Name, func() {
		if s, found, err := PeerOf(hlocal, hdest); err == nil || found || !strings.Contains(err.Error(), "lacks the connection's own") {
			t.Errorf("asked from another namespace: PeerOf(%s, %s) = %+v, %v, %v; want an error (the answer lacks the connection's own socket)", hlocal, hdest, s, found, err)
		}
	})
}

// inNamespace runs f on a thread in network namespace ns (ip netns),
// which ends with it.
func inNamespace(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			_ = unix.Close(fd)
		}
		if err == nil {
			f()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("enter network namespace %s: %v", ns, err)
	}
}

// inodeOf is the inode of c's socket.
func inodeOf(t *testing.T, c any) uint64 {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatalf("fstat: %v %v", err, serr)
	}
	return st.Ino
}
