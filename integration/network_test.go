package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
	"github.com/mcpcage/mcpcage/sandbox/landlock"
)

func TestNetworkModes(t *testing.T) {
	setup(t) // env.bin is known after setup
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = fmt.Fprint(w, "host says hi") })}
	go func() { _ = srv.Serve(ln) }() // ErrServerClosed at the end
	defer func() { _ = srv.Close() }()
	url := "http://" + ln.Addr().String() + "/"
	ts := filepath.Join(env.bin, "testserver")
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// 0.0.0.0 is this host to the kernel (its loopback): a rule holding it
	// (a hosts file's "0.0.0.0 blocked.example", a wide range) opened the
	// host's loopback (found by a red-team helper).
	d := startDaemon(t, fmt.Sprintf("[servers.hostnet]\ncommand = [%q]\nnetwork = \"host\"\negress = [%q]\n"+
		"[servers.hostnet-closed]\ncommand = [%q]\nnetwork = \"host\"\n"+
		"[servers.hostnet-unspecified]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"0.0.0.0/4:%s\"]\n", ts, ln.Addr().String(), ts, ts, port))
	tests := []struct {
		server, url string
		reach       bool
	}{{"test", url, false}, {"hostnet", url, true}, {"hostnet-closed", url, false}, {"hostnet-unspecified", "http://0.0.0.0:" + port + "/", false}}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			c := d.connect(t, tt.server, mcp.ProtocolVersion20251125)
			got, isErr := callText(t, c, "http_get", map[string]any{"url": tt.url})
			if reached := !isErr && strings.Contains(got, "host says hi"); reached != tt.reach {
				t.Fatalf("server %s reached the host's loopback = %v (%q), want %v", tt.server, reached, got, tt.reach)
			}
		})
	}
	denied := d.record(t, "net.denied", func(r map[string]any) bool { return str(r, "server") == "hostnet-unspecified" })
	if !strings.Contains(str(denied, "rule"), "unspecified address") || str(denied, "addr") != "0.0.0.0:"+port {
		t.Fatalf("net.denied: %v, want 0.0.0.0:%s refused as an unspecified address", denied, port)
	}
}

func TestHiddenAndReadonlyPaths(t *testing.T) {
	setup(t) // env.bin is known after setup
	ts := filepath.Join(env.bin, "testserver")
	d := startDaemon(t, fmt.Sprintf("[servers.masked]\ncommand = [%q]\nhidden_paths = [\"/etc/hostname\", \"/etc/apt\"]\nreadonly_paths = [\"/tmp\"]\n", ts))
	c := d.connect(t, "masked", mcp.ProtocolVersion20251125)
	for _, tt := range []struct{ args []string }{
		{[]string{"read", "/etc/hostname"}},
		{[]string{"read", "/etc/apt/sources.list"}},
		{[]string{"write", "/tmp/x"}},
	} {
		if got := attack(t, c, tt.args...); !strings.HasPrefix(got, "DENIED") {
			t.Errorf("%v: %q, want DENIED", tt.args, got)
		}
	}
	// The same reads work without the rules: the paths exist.
	plain := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got := attack(t, plain, "read", "/etc/hostname"); !strings.HasPrefix(got, "ESCAPED") {
		t.Fatalf("control read of /etc/hostname: %q", got)
	}
}

// unixListener is a host-side unix socket server that records, in order,
// the first line each client sends. Connections are read one at a time, so
// a line sent after an earlier client closed comes after that client's.
type unixListener struct {
	mu    sync.Mutex
	lines []string
}

func listenUnix(t *testing.T, addr string) *unixListener {
	t.Helper()
	ln, err := net.Listen("unix", addr)
	must(t, err, "listen on %s", addr)
	t.Cleanup(func() { _ = ln.Close() })
	if !strings.HasPrefix(addr, "@") {
		must(t, os.Chmod(addr, 0o777), "chmod socket") // any sandbox user may connect
	}
	u := &unixListener{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var line string
			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err == nil { // without it the read could hold the listener forever
				line, _ = bufio.NewReader(c).ReadString('\n')
			}
			_ = c.Close()
			u.mu.Lock()
			u.lines = append(u.lines, strings.TrimSpace(line))
			u.mu.Unlock()
		}
	}()
	return u
}

// heardAfter sends marker from the host and waits for it: every client
// that connected before has been heard by then. It returns what came
// before the marker.
func (u *unixListener) heardAfter(t *testing.T, addr, marker string) []string {
	t.Helper()
	c, err := net.Dial("unix", addr)
	must(t, err, "host connect to %s", addr)
	_, err = fmt.Fprintln(c, marker)
	must(t, err, "host send to %s", addr)
	_ = c.Close()
	var before []string
	testenv.WaitFor(t, "the host's marker on "+addr, 10*time.Second, func() (bool, string) {
		u.mu.Lock()
		defer u.mu.Unlock()
		i := slices.Index(u.lines, marker)
		before = slices.Clone(u.lines[:max(i, 0)])
		return i >= 0, fmt.Sprint(u.lines)
	})
	return before
}

// A server sharing the host's network namespace also shares its abstract
// unix sockets (X11, D-Bus, systemd...). Landlock's scope keeps it from
// them; with Landlock off, the same connection goes through.
func TestAbstractUnixSocketScoped(t *testing.T) {
	setup(t)
	testenv.Require(t, landlock.Scoped(landlock.ABI()), fmt.Sprintf("Landlock ABI %d+ (scopes)", landlock.ScopeABI))
	srv := fmt.Sprintf("[servers.hostnet]\ncommand = [%q]\nnetwork = \"host\"\n", filepath.Join(env.bin, "testserver"))
	for _, tt := range []struct {
		name, daemon string
		reach        bool
	}{
		{"scoped", "", false},
		{"landlock off", "[daemon]\nlandlock = \"off\"\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("@mcpcage-itest-%d", time.Now().UnixNano())
			host := listenUnix(t, name)
			d := startDaemon(t, tt.daemon+srv)
			c := d.connect(t, "hostnet", mcp.ProtocolVersion20251125)
			got := attack(t, c, "unix-connect", name)
			heard := host.heardAfter(t, name, "marker")
			reached := slices.Contains(heard, "hello from the cage")
			if reached != tt.reach || strings.HasPrefix(got, "ESCAPED") != tt.reach {
				t.Fatalf("caged connect to %s: %q; the host heard %q before its marker; want reached = %v", name, got, heard, tt.reach)
			}
			if !tt.reach && !strings.Contains(got, "operation not permitted") {
				t.Fatalf("caged connect to %s: %q, want EPERM (Landlock scope)", name, got)
			}
			if tt.reach {
				return
			}
			out := d.mustCLI(t, "status")
			if !strings.Contains(out, "landlock scopes:") || !strings.Contains(out, "confined to each sandbox") {
				t.Fatalf("status does not report the scopes:\n%s", out)
			}
		})
	}
}

// listeners returns the ports of the host's TCP sockets listening on
// 127.0.0.1 owned by uid (from /proc/net/tcp: network = "host" sessions
// share it).
func listeners(t *testing.T, uid int) []int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	must(t, err, "read /proc/net/tcp")
	var ports []int
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[3] != "0A" || f[7] != strconv.Itoa(uid) {
			continue
		}
		addr, port, _ := strings.Cut(f[1], ":")
		if p, err := strconv.ParseInt(port, 16, 32); err == nil && addr == "0100007F" {
			ports = append(ports, int(p))
		}
	}
	return ports
}

// A server sharing the host's network namespace may listen only where its
// listen list allows: elsewhere bind fails with EPERM (net.bind_denied),
// and a listener on an ephemeral port takes no connection
// (net.listen_denied).
func TestListenAllowList(t *testing.T) {
	setup(t)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "find a free port")
	addr := free.Addr().String()
	must(t, free.Close(), "free the port")
	ts := filepath.Join(env.bin, "testserver")
	d := startDaemon(t, fmt.Sprintf("[servers.closed]\ncommand = [%q]\nnetwork = \"host\"\n"+
		"[servers.open]\ncommand = [%q]\nnetwork = \"host\"\nlisten = [%q]\n", ts, ts, addr))
	tr := d.trace(t)

	t.Run("not in the list", func(t *testing.T) {
		c := d.connect(t, "closed", mcp.ProtocolVersion20251125)
		if got := attack(t, c, "listen", addr); !strings.HasPrefix(got, "DENIED") || !strings.Contains(got, "operation not permitted") {
			t.Fatalf("listen on %s: %q, want EPERM", addr, got)
		}
		if conn, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			_ = conn.Close()
			t.Fatalf("a host client connected to %s", addr)
		}
		ev := tr.wait(t, "net.bind_denied "+addr, func(ev map[string]any) bool {
			return str(ev, "type") == "net.bind_denied" && str(ev, "addr") == addr && str(ev, "server") == "closed"
		})
		if str(ev, "action") != "EPERM" || str(ev, "rule") != "not in listen allow-list" {
			t.Fatalf("net.bind_denied: %v", ev)
		}
		testenv.WaitFor(t, "net.bind_denied in the audit log", 10*time.Second, func() (bool, string) {
			recs := d.auditRecords(t)
			return slices.ContainsFunc(recs, func(r map[string]any) bool {
				return r["type"] == "net.bind_denied" && r["addr"] == addr && r["action"] == "EPERM"
			}), fmt.Sprintf("%d records", len(recs))
		})
	})

	t.Run("in the list", func(t *testing.T) {
		c := d.connect(t, "open", mcp.ProtocolVersion20251125)
		verdict := make(chan string, 1)
		go func() { verdict <- attack(t, c, "listen", addr) }()
		var served []byte
		testenv.WaitFor(t, "the caged server serving "+addr, 10*time.Second, func() (bool, string) {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, err.Error()
			}
			defer func() { _ = conn.Close() }()
			served, _ = io.ReadAll(conn)
			return true, ""
		})
		if got := <-verdict; string(served) != "served by the cage\n" || !strings.HasPrefix(got, "ESCAPED served") {
			t.Fatalf("host read %q; server said %q", served, got)
		}
	})

	t.Run("ephemeral port", func(t *testing.T) {
		c := d.connect(t, "closed", mcp.ProtocolVersion20251125)
		before := listeners(t, 65534)
		verdict := make(chan string, 1)
		go func() { verdict <- attack(t, c, "listen", "127.0.0.1:0", "6") }()
		port := 0
		testenv.WaitFor(t, "the caged server's ephemeral listener in /proc/net/tcp", 10*time.Second, func() (bool, string) {
			now := listeners(t, 65534)
			for _, p := range now {
				if !slices.Contains(before, p) {
					port = p
					return true, ""
				}
			}
			return false, fmt.Sprint(now)
		})
		eph := fmt.Sprintf("127.0.0.1:%d", port)
		if conn, err := net.DialTimeout("tcp", eph, 2*time.Second); err == nil {
			b, _ := io.ReadAll(conn)
			_ = conn.Close()
			t.Fatalf("a host client reached the caged listener %s: %q", eph, b)
		}
		tr.wait(t, "net.listen_denied "+eph, func(ev map[string]any) bool {
			return str(ev, "type") == "net.listen_denied" && str(ev, "addr") == eph && str(ev, "action") == "dropped"
		})
		if got := <-verdict; !strings.HasPrefix(got, "DENIED no client reached") {
			t.Fatalf("the caged listener on %s: %q", eph, got)
		}
	})
}

// Pathname unix sockets are reached through the file system, whatever the
// network namespace: a server connects to any socket it can see and may
// write. /run, /var/run and /tmp are private to the sandbox; the rest of
// the host view (here /var/tmp) is not, unless hidden_paths hides it.
func TestPathnameUnixSockets(t *testing.T) {
	setup(t)
	visible, err := os.MkdirTemp("/var/tmp", "mcpcage-itest-sock-")
	must(t, err, "make a directory under /var/tmp")
	t.Cleanup(func() { _ = os.RemoveAll(visible) })
	must(t, os.Chmod(visible, 0o755), "chmod")
	private, err := os.MkdirTemp("/run", "mcpcage-itest-sock-")
	must(t, err, "make a directory under /run")
	t.Cleanup(func() { _ = os.RemoveAll(private) })
	must(t, os.Chmod(private, 0o755), "chmod")
	tmp := t.TempDir()
	must(t, os.Chmod(tmp, 0o755), "chmod")
	d := startDaemon(t, fmt.Sprintf("[servers.hidden]\ncommand = [%q]\nhidden_paths = [%q]\n", filepath.Join(env.bin, "testserver"), visible))
	for _, tt := range []struct {
		name, server, sock string
		reach              bool
	}{
		{"visible host directory (/var/tmp)", "test", filepath.Join(visible, "s.sock"), true},
		{"the same, hidden by hidden_paths", "hidden", filepath.Join(visible, "h.sock"), false},
		{"/run is private", "test", filepath.Join(private, "s.sock"), false},
		{"/var/run is /run", "test", filepath.Join("/var", private, "v.sock"), false},
		{"/tmp is private", "test", filepath.Join(tmp, "s.sock"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			host := listenUnix(t, tt.sock)
			c := d.connect(t, tt.server, mcp.ProtocolVersion20251125)
			got := attack(t, c, "unix-connect", tt.sock)
			heard := host.heardAfter(t, tt.sock, "marker")
			reached := slices.Contains(heard, "hello from the cage")
			if reached != tt.reach || strings.HasPrefix(got, "ESCAPED") != tt.reach {
				t.Fatalf("caged connect to %s: %q; the host heard %q; want reached = %v", tt.sock, got, heard, tt.reach)
			}
		})
	}
}
