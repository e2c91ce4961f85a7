package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/dnstest"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// traced is a running `mcpcage trace --json`.
type traced struct {
	mu     sync.Mutex
	events []map[string]any
	cmd    *exec.Cmd
}

func (d *daemon) trace(t *testing.T, args ...string) *traced {
	t.Helper()
	tr := &traced{cmd: exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"trace", "--json", "--socket", d.socket}, args...)...)}
	out, err := tr.cmd.StdoutPipe()
	must(t, err, "trace stdout")
	tr.cmd.Stderr = os.Stderr
	must(t, tr.cmd.Start(), "start trace")
	t.Cleanup(func() { _ = tr.cmd.Process.Kill(); _ = tr.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				tr.mu.Lock()
				tr.events = append(tr.events, ev)
				tr.mu.Unlock()
			}
		}
	}()
	// Subscribed before the test acts: the daemon logs the subscription
	// of this trace's connection once it is in place.
	testenv.WaitFor(t, "the trace subscribed", 10*time.Second, func() (bool, string) {
		for _, line := range strings.Split(d.log.String(), "\n") {
			if strings.Contains(line, `msg="trace started"`) && strings.Contains(line, fmt.Sprintf("peer_pid=%d ", tr.cmd.Process.Pid)) {
				return true, ""
			}
		}
		return false, "no trace started by the trace's pid in the mcpcaged log"
	})
	return tr
}

// wait returns the first event for which match is true.
func (tr *traced) wait(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return tr.waitN(t, what, 1, match)
}

// waitN returns the n-th event for which match is true.
func (tr *traced) waitN(t *testing.T, what string, n int, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	testenv.WaitFor(t, fmt.Sprintf("%d %s event(s)", n, what), 15*time.Second, func() (bool, string) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		seen := 0
		for _, ev := range tr.events {
			if match(ev) {
				if seen++; seen == n {
					found = ev
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("%d of them among %d traced", seen, len(tr.events))
	})
	return found
}

func (tr *traced) any(match func(map[string]any) bool) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, ev := range tr.events {
		if match(ev) {
			return true
		}
	}
	return false
}

func str(ev map[string]any, k string) string { s, _ := ev[k].(string); return s }

func TestKernelEventsAttributed(t *testing.T) {
	d := startDaemon(t, "")
	tr := d.trace(t)
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	marker := fmt.Sprintf("/var/tmp/mcpcage-outside-%d", time.Now().UnixNano())

	callText(t, c, "read_file", map[string]any{"path": "/etc/hostname"})
	open := tr.wait(t, "file.open /etc/hostname", func(ev map[string]any) bool {
		return str(ev, "type") == "file.open" && str(ev, "path") == "/etc/hostname"
	})
	if str(open, "server") != "test" || str(open, "session") == "" || str(open, "hint") != "/etc/hostname" {
		t.Fatalf("open event not attributed: %v", open)
	}
	if calls, _ := open["tool_calls"].([]any); len(calls) != 1 {
		// Seen once in CI (at a1ed7b7; not reproduced in 17 runs since): say
		// when the open was against the call's records, for the next time.
		var around []string
		for _, r := range d.auditRecords(t) {
			if typ := str(r, "type"); typ == "tool.call" || typ == "tool.result" {
				around = append(around, fmt.Sprintf("%s %s%s at %s", typ, str(r, "tool"), str(r, "name"), str(r, "time")))
			}
		}
		t.Fatalf("open event names tool calls %v, want the read_file call; the event: %v; the call's records: %v", open["tool_calls"], open, around)
	}

	callText(t, c, "run_command", map[string]any{"command": "/bin/true"})
	exec := tr.wait(t, "process.exec", func(ev map[string]any) bool {
		return str(ev, "type") == "process.exec" && strings.HasSuffix(str(ev, "path"), "/true")
	})
	if argv, _ := exec["argv"].([]any); len(argv) == 0 || argv[0] != "/bin/true" {
		t.Fatalf("exec argv = %v", exec["argv"])
	}
	// The record names the file that ran, not the name its caller chose
	// (found by a red-team helper: it said /tmp/innocent-tool for
	// /usr/bin/id); the name given is its hint.
	callText(t, c, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c", "ln -sf /usr/bin/id /tmp/innocent-tool && /tmp/innocent-tool -u"}})
	ran := tr.wait(t, "process.exec of the symlink", func(ev map[string]any) bool {
		return str(ev, "type") == "process.exec" && str(ev, "hint") == "/tmp/innocent-tool"
	})
	if str(ran, "path") != "/usr/bin/id" {
		t.Fatalf("exec through a symlink recorded path %q, want /usr/bin/id: %v", str(ran, "path"), ran)
	}

	callText(t, c, "http_get", map[string]any{"url": "http://127.0.0.1:9/"})
	conn := tr.wait(t, "net.connect", func(ev map[string]any) bool {
		return str(ev, "type") == "net.connect" && str(ev, "addr") == "127.0.0.1:9" && str(ev, "proto") == "tcp"
	})
	// Nothing listens there: the record carries the refusal, from
	// connect(2) or from the handshake of a non-blocking connect.
	if str(conn, "error") != "ECONNREFUSED" || (str(conn, "outcome") != "connect" && str(conn, "outcome") != "handshake") {
		t.Fatalf("net.connect to a closed port: %v", conn)
	}

	// The same operations by a process outside any session leave no trace.
	must(t, os.WriteFile(marker, []byte("x"), 0o644), "write marker")
	defer func() { _ = os.Remove(marker) }()
	_, err := os.ReadFile(marker)
	must(t, err, "read marker")
	// The marker: an open in the session after the outside ones; events
	// reach the trace in the order the kernel emitted them.
	callText(t, c, "read_file", map[string]any{"path": "/etc/hostname"})
	tr.waitN(t, "file.open /etc/hostname", 2, func(ev map[string]any) bool {
		return str(ev, "type") == "file.open" && str(ev, "path") == "/etc/hostname"
	})
	if tr.any(func(ev map[string]any) bool {
		return strings.Contains(str(ev, "path")+str(ev, "hint"), "mcpcage-outside")
	}) {
		t.Fatal("a process outside every session produced an event")
	}
}

// listenHTTP serves on addr ("127.0.0.1:0", "[::1]:0") and returns its address.
func listenHTTP(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	must(t, err, "listen %s", addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = fmt.Fprint(w, "reached") })}
	go func() { _ = srv.Serve(ln) }() // ErrServerClosed at cleanup
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestEgress(t *testing.T) {
	setup(t)
	allowed := listenHTTP(t, "127.0.0.1:0")
	other := listenHTTP(t, "127.0.0.1:0")
	v6 := listenHTTP(t, "[::1]:0")
	_, otherPort, _ := net.SplitHostPort(other)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err, "udp")
	defer func() { _ = udp.Close() }()
	ts := filepath.Join(env.bin, "testserver")
	d := startDaemon(t, fmt.Sprintf(`
[servers.a]
command = [%q]
network = "host"
egress = [%q, %q, %q]

[servers.b]
command = [%q]
network = "host"
egress = ["localhost:%s"]
`, ts, allowed, "["+strings.Trim(strings.Split(v6, "]:")[0], "[")+"]:"+strings.Split(v6, "]:")[1], udp.LocalAddr().String(), ts, otherPort))
	tr := d.trace(t)
	a := d.connect(t, "a", mcp.ProtocolVersion20251125)
	b := d.connect(t, "b", mcp.ProtocolVersion20251125) // both sessions live at once
	get := func(c *mcpClient, addr string) string {
		start := time.Now()
		got, _ := callText(t, c, "http_get", map[string]any{"url": "http://" + addr + "/"})
		if time.Since(start) > 2*time.Second {
			t.Errorf("GET %s took %v: a denial must be immediate", addr, time.Since(start))
		}
		return got
	}
	tests := []struct {
		name   string
		client *mcpClient
		addr   string
		reach  bool
	}{
		{"a: allowed address", a, allowed, true},
		{"a: another port", a, other, false},
		{"a: IPv6 allowed", a, v6, true},
		{"a: IPv6 on another port", a, "[::1]:" + otherPort, false},
		{"b: host-name rule", b, other, true},
		{"b: a's address", b, allowed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := get(tt.client, tt.addr)
			if reached := strings.Contains(got, "reached"); reached != tt.reach {
				t.Fatalf("GET %s: %q, want reached=%v", tt.addr, got, tt.reach)
			}
			if !tt.reach && !strings.Contains(got, "operation not permitted") {
				t.Fatalf("denied GET %s: %q, want EPERM", tt.addr, got)
			}
		})
	}
	t.Run("UDP", func(t *testing.T) {
		if v := attack(t, a, "udp-sendto", udp.LocalAddr().String()); v != "ESCAPED" {
			t.Fatalf("allowed UDP send: %q", v)
		}
		buf := make([]byte, 16)
		must(t, udp.SetReadDeadline(time.Now().Add(5*time.Second)), "set a read deadline")
		if n, _, err := udp.ReadFrom(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("UDP datagram not received: %v", err)
		}
		if v := attack(t, a, "udp-sendto", "127.0.0.1:"+otherPort); !strings.Contains(v, "operation not permitted") {
			t.Fatalf("denied UDP send: %q", v)
		}
		if v := attack(t, b, "udp-send", udp.LocalAddr().String()); !strings.Contains(v, "operation not permitted") {
			t.Fatalf("connected UDP to a denied address: %q", v)
		}
	})
	ok := tr.wait(t, "net.connect", func(ev map[string]any) bool {
		return str(ev, "type") == "net.connect" && str(ev, "server") == "a" && str(ev, "addr") == allowed
	})
	if r, _ := ok["result"].(float64); r != 0 || ok["result"] == nil || str(ok, "error") != "" || str(ok, "rule") != "egress "+allowed {
		t.Fatalf("net.connect of an allowed, completed connection: %v", ok)
	}
	denied := tr.wait(t, "net.denied", func(ev map[string]any) bool {
		return str(ev, "type") == "net.denied" && str(ev, "server") == "a" && str(ev, "addr") == other
	})
	if str(denied, "action") != "EPERM" {
		t.Fatalf("net.denied record: %v", denied)
	}
	d.waitLog(`msg="connection denied"`)
}

// TestEgressPublic: the egress target "public" reaches the internet, not
// the host's loopback, its local networks or the cloud metadata address
// (what imported network tools get). The internet cases are UDP connects:
// connect(2) is where the kernel decides, and nothing is sent.
func TestEgressPublic(t *testing.T) {
	setup(t)
	local := listenHTTP(t, "127.0.0.1:0")
	_, localPort, _ := net.SplitHostPort(local)
	// The host's own addresses are left out whatever their range: one in
	// public space (AMPRNet's 44.128.0.0/10, unused here) on loopback
	// before the session starts, and another once it runs.
	before, after := hostAddress(t), hostAddress(t)
	addHostAddress(t, before)
	// A range the host answers for as a whole (a local route, no address
	// on any interface: AnyIP), and a network reached on a link.
	anyIP := netip.PrefixFrom(hostAddress(t).Addr(), 24).Masked()
	onLink := netip.PrefixFrom(hostAddress(t).Addr(), 24).Masked()
	addHostRoute(t, "local", anyIP)
	addHostRoute(t, "unicast", onLink)
	d := startDaemon(t, fmt.Sprintf("[servers.web]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"public:*\"]\n", filepath.Join(env.bin, "testserver")))
	tr := d.trace(t)
	c := d.connect(t, "web", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "http_get", map[string]any{"url": "http://" + local + "/"}); !strings.Contains(got, "operation not permitted") {
		t.Fatalf("GET of a service on the host's loopback: %q, want EPERM", got)
	}
	tests := []struct {
		name, addr string
		allowed    bool
	}{
		{"internet, IPv4", "1.1.1.1:443", true},
		{"internet, IPv6", "[2606:4700:4700::1111]:443", true},
		{"internet, another port", "8.8.8.8:8443", true},
		{"loopback", "127.0.0.1:" + localPort, false},
		{"loopback, IPv4-mapped", "[::ffff:127.0.0.1]:" + localPort, false},
		{"loopback, IPv6", "[::1]:" + localPort, false},
		{"private network", "10.1.2.3:443", false},
		{"home router", "192.168.1.1:443", false},
		{"carrier-grade NAT", "100.64.0.1:443", false},
		{"cloud metadata", "169.254.169.254:80", false},
		{"unique local IPv6", "[fd00::1]:443", false},
		{"6to4 of a private address", "[2002:c0a8:101::1]:443", false},
		{"documentation range", "192.0.2.55:443", false},
		{"the host's own address in public space", before.Addr().String() + ":443", false},
		{"the host's network", before.Addr().Next().String() + ":443", false},
		{"a range the host answers for (local route)", anyIP.Addr().Next().Next().String() + ":443", false},
		{"a network on the host's link (route without gateway)", onLink.Addr().Next().String() + ":443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := attack(t, c, "udp-connect", tt.addr)
			if denied := strings.Contains(v, "operation not permitted"); denied == tt.allowed {
				t.Fatalf("UDP connect to %s: %q, want allowed=%v", tt.addr, v, tt.allowed)
			}
		})
	}
	// An address the host takes while the session runs is left out
	// within hostCheckEvery (5 s).
	target := after.Addr().String() + ":443"
	if v := attack(t, c, "udp-connect", target); strings.Contains(v, "operation not permitted") {
		t.Fatalf("UDP connect to %s before the host has it: %q", target, v)
	}
	addHostAddress(t, after)
	testenv.WaitFor(t, "the host's new address to be left out of public", 20*time.Second, func() (bool, string) {
		v := attack(t, c, "udp-connect", target)
		return strings.Contains(v, "operation not permitted"), v
	})
	ev := tr.wait(t, "net.denied of the metadata address", func(ev map[string]any) bool {
		return str(ev, "type") == "net.denied" && str(ev, "addr") == "169.254.169.254:80"
	})
	if str(ev, "action") != "EPERM" {
		t.Fatalf("net.denied record: %v", ev)
	}
}

// hostAddress picks an address in AMPRNet's 44.128.0.0/10 (public space,
// unused on a test machine) and, with its /30, the network it is on.
func hostAddress(t *testing.T) netip.Prefix {
	t.Helper()
	var b [4]byte
	_, err := rand.Read(b[:])
	must(t, err, "random")
	b[0], b[1], b[3] = 44, 128|b[1]&63, b[3]&^3|1
	return netip.PrefixFrom(netip.AddrFrom4(b), 30)
}

// addHostAddress puts p on the loopback interface until the test ends.
func addHostAddress(t *testing.T, p netip.Prefix) {
	t.Helper()
	if out, err := exec.Command("ip", "addr", "add", p.String(), "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s dev lo: %v %s", p, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", p.String(), "dev", "lo").Run() })
}

// addHostRoute adds a route of kind (local, unicast) for p through the
// loopback interface until the test ends.
func addHostRoute(t *testing.T, kind string, p netip.Prefix) {
	t.Helper()
	if out, err := exec.Command("ip", "route", "add", kind, p.String(), "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip route add %s %s dev lo: %v %s", kind, p, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", kind, p.String(), "dev", "lo").Run() })
}

// TestEgressReachesTheHostsResolver: a host-network server resolves
// names through the resolver the host's resolv.conf names (often the
// network's, on a private address no egress list names), on port 53 only.
// Imported network tools (public:443) could not resolve anything before.
func TestEgressReachesTheHostsResolver(t *testing.T) {
	setup(t)
	b, _ := os.ReadFile("/etc/resolv.conf")
	var servers []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Zone() == "" {
				servers = append(servers, a.Unmap().String())
			}
		}
	}
	testenv.Require(t, len(servers) > 0, "a nameserver in /etc/resolv.conf")
	d := startDaemon(t, fmt.Sprintf("[servers.web]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"192.0.2.99:443\"]\n", filepath.Join(env.bin, "testserver")))
	c := d.connect(t, "web", mcp.ProtocolVersion20251125)
	for _, ns := range servers {
		t.Run(ns, func(t *testing.T) {
			if v := attack(t, c, "udp-connect", net.JoinHostPort(ns, "53")); strings.Contains(v, "operation not permitted") {
				t.Fatalf("DNS to the host's resolver %s: %q, want allowed", ns, v)
			}
			if v := attack(t, c, "udp-connect", net.JoinHostPort(ns, "54")); !strings.Contains(v, "operation not permitted") {
				t.Fatalf("the resolver's address on another port: %q, want EPERM", v)
			}
		})
	}
}

func TestDenyPathKillsTheOpener(t *testing.T) {
	setup(t)
	project := t.TempDir()
	must(t, os.WriteFile(filepath.Join(project, "notes.txt"), []byte("fine"), 0o644), "write")
	must(t, os.Chmod(project, 0o755), "chmod")
	d := startDaemon(t, fmt.Sprintf("[servers.proj]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\" }]\n", filepath.Join(env.bin, "testserver"), project))
	tr := d.trace(t)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	// Made after the launch: one present then is masked (denypaths_test.go).
	must(t, os.MkdirAll(filepath.Join(project, ".ssh"), 0o755), "mkdir")
	must(t, os.WriteFile(filepath.Join(project, ".ssh", "id_ed25519"), []byte("PRIVATE KEY"), 0o644), "write")
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/work/notes.txt"}); got != "fine" {
		t.Fatalf("ordinary file: %q", got)
	}
	_, err := c.CallTool(ctxT(t, 30*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/work/.ssh/id_ed25519"}}})
	if err == nil {
		t.Fatal("reading a denied path returned a result: the server was not killed")
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatal("the denied file's content reached the client")
	}
	if code := c.shimExit(t); code == 0 {
		t.Fatal("shim exited 0")
	}
	if !strings.Contains(c.stderr.String(), `it opened /work/.ssh/id_ed25519, which deny_paths rule "**/.ssh/**" forbids`) {
		t.Fatalf("shim stderr: %q", c.stderr.String())
	}
	ev := tr.wait(t, "file.denied", func(ev map[string]any) bool { return str(ev, "type") == "file.denied" })
	if str(ev, "path") != "/work/.ssh/id_ed25519" || str(ev, "rule") != "deny_paths **/.ssh/**" || str(ev, "action") != "SIGKILL, session killed" {
		t.Fatalf("file.denied record: %v", ev)
	}
	d.waitClean("a killed session")
}

// Directory operations are recorded with the kernel's base directory; one
// under a denied directory kills the task (the kernel checks the base
// directory), and a denied name in the caller's string stops the session.
func TestDirectoryOpsObservedAndDenied(t *testing.T) {
	setup(t)
	project := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(project, ".ssh"), 0o777), "mkdir")
	must(t, os.WriteFile(filepath.Join(project, ".ssh", "id_ed25519"), []byte("PRIVATE KEY"), 0o666), "write")
	must(t, os.Chmod(project, 0o777), "chmod")
	must(t, os.Chmod(filepath.Join(project, ".ssh"), 0o777), "chmod")
	// Readable and writable by the sandbox user: hard links allowed (fs.protected_hardlinks).
	must(t, os.Chmod(filepath.Join(project, ".ssh", "id_ed25519"), 0o666), "chmod")
	d := startDaemon(t, fmt.Sprintf("[servers.proj]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n", filepath.Join(env.bin, "testserver"), project))
	tr := d.trace(t)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	sh := func(script string) string {
		got, _ := callText(t, c, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c", script}})
		return got
	}
	sh("cd /work && mkdir d1 && echo x > d1/f && mv d1/f d1/g && rm d1/g && rmdir d1")
	for _, want := range []struct{ typ, path, to string }{
		{"file.mkdir", "/work/d1", ""},
		{"file.rename", "/work/d1/f", "/work/d1/g"},
		{"file.unlink", "/work/d1/g", ""},
		{"file.rmdir", "/work/d1", ""},
	} {
		ev := tr.wait(t, want.typ+" "+want.path, func(ev map[string]any) bool {
			return str(ev, "type") == want.typ && str(ev, "path") == want.path
		})
		if r, _ := ev["result"].(float64); ev["result"] == nil || r != 0 || str(ev, "to") != want.to || str(ev, "action") != "" {
			t.Fatalf("%s record: %v", want.typ, ev)
		}
		if calls, _ := ev["tool_calls"].([]any); len(calls) != 1 {
			t.Fatalf("%s names tool calls %v, want the run_command call", want.typ, ev["tool_calls"])
		}
	}

	_ = c.Close() // the shim's exit is waited for below
	c.shimExit(t)
	d.waitClean("the observed session")

	// Each denial ends its session: the kernel kills the task as the call
	// returns (the base directory is denied) and the daemon kills the
	// session's cgroup, since the file is out of the denied directory by
	// then; or the daemon finds a denied name in the caller's names and
	// kills it.
	denials := []struct {
		name, script, typ, action, path, to, says string
	}{
		{"rename inside a denied directory", "cd /work/.ssh && mv id_ed25519 moved", "file.rename", "SIGKILL, session killed",
			"/work/.ssh/id_ed25519", "/work/.ssh/moved", "it renamed /work/.ssh/id_ed25519"},
		{"denied name in the caller's path", "cd /work && mv .ssh/moved loot", "file.rename", "session killed",
			"/work/.ssh/moved", "/work/loot", "it renamed /work/.ssh/moved"},
	}
	// (Hard links are refused by the seccomp profile: denypaths_test.go.)
	for _, tt := range denials {
		t.Run(tt.name, func(t *testing.T) {
			// The denied directory is masked at each launch; the host
			// user makes it again while the session runs.
			must(t, os.RemoveAll(filepath.Join(project, ".ssh")), "remove .ssh")
			c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
			must(t, os.MkdirAll(filepath.Join(project, ".ssh"), 0o777), "mkdir")
			must(t, os.Chmod(filepath.Join(project, ".ssh"), 0o777), "chmod")
			for _, f := range []string{"id_ed25519", "moved"} {
				must(t, os.WriteFile(filepath.Join(project, ".ssh", f), []byte("PRIVATE KEY"), 0o666), "write")
				must(t, os.Chmod(filepath.Join(project, ".ssh", f), 0o666), "chmod")
			}
			// (The server may still answer the call on its way down; the
			// session's end is what counts.)
			_, _ = c.CallTool(ctxT(t, 30*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "run_command",
				Arguments: map[string]any{"command": "/bin/sh", "args": []string{"-c", tt.script + " && sleep 20"}}}})
			ev := tr.wait(t, tt.typ+" "+tt.action, func(ev map[string]any) bool {
				return str(ev, "type") == tt.typ && str(ev, "action") == tt.action && str(ev, "path") == tt.path
			})
			if str(ev, "to") != tt.to || str(ev, "rule") != "deny_paths **/.ssh/**" {
				t.Fatalf("%s record: %v", tt.typ, ev)
			}
			if code := c.shimExit(t); code == 0 {
				t.Fatal("shim exited 0")
			}
			if want := tt.says + `, which deny_paths rule "**/.ssh/**" forbids`; !strings.Contains(c.stderr.String(), want) {
				t.Fatalf("shim stderr: %q, want %q", c.stderr.String(), want)
			}
			d.waitClean("a stopped session")
		})
	}
}

func (d *daemon) status(t *testing.T) api.Status {
	t.Helper()
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	if st.Kernel == nil {
		t.Fatalf("status has no kernel section: %+v", st.Enforcement)
	}
	return st
}

// cgroupHooks are the links pinned and attached while no session runs:
// connect4/6, sendmsg4/6 (egress), bind4/6, the listen ingress filter,
// the routing-header egress filter and the setsockopt filter (no
// IP(V6)_FREEBIND).
const cgroupHooks = 9

func TestManySessionsLeaveNoKernelState(t *testing.T) {
	setup(t)
	// The observers linger 8 s once no session needs them (30 s by
	// default): long enough that the second session below finds them
	// attached.
	const linger = 8 * time.Second
	d := startDaemon(t, fmt.Sprintf("[daemon]\nobserver_linger = %q\n[servers.web]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"127.0.0.1:80\", \"10.0.0.0/8:443\", \"localhost:8080\"]\n", linger, filepath.Join(env.bin, "testserver")))
	if k := d.status(t).Kernel; k.ObserverLinger != linger.String() {
		t.Fatalf("status says observer_linger %q, want %s", k.ObserverLinger, linger)
	}
	// With no session only the cgroup hooks stay attached, once the
	// observers that start-up attached (to check the kernel takes them)
	// have lingered: the syscall tracepoints come and go with the
	// sessions.
	onlyHooks := func(what string) {
		t.Helper()
		testenv.WaitFor(t, what, 10*linger, func() (bool, string) {
			pins, _ := os.ReadDir(filepath.Join(pinRoot(), d.namespace))
			n, k := d.kernelLinks(t), d.status(t).Kernel
			return len(pins) == cgroupHooks && n == cgroupHooks && !k.Observing,
				fmt.Sprintf("%d links attached and %d pinned (want the %d cgroup hooks), observing=%v", n, len(pins), cgroupHooks, k.Observing)
		})
	}
	onlyHooks("the observers detached after start-up")
	var lingering []string // the observers' pins' link ids, first session
	for i := 0; i < 12; i++ {
		server := "test"
		if i%2 == 1 {
			server = "web"
		}
		c := d.connect(t, server, mcp.ProtocolVersion20251125)
		if got, _ := callText(t, c, "echo", map[string]any{"text": "x"}); got != "x" {
			t.Fatalf("session %d: %q", i, got)
		}
		if k := d.status(t).Kernel; k.Sessions != 1 || k.DenyEntries == 0 || !k.Observing {
			t.Fatalf("session %d live: kernel state %+v", i, k)
		}
		if n := d.kernelLinks(t); n <= cgroupHooks {
			t.Fatalf("session %d live: %d links attached, want the observers too", i, n)
		}
		ids := observerLinkIDs(t, d.namespace)
		switch {
		case i == 0:
			lingering = ids
		case i == 1 && !slices.Equal(ids, lingering):
			// The next session starts within the linger: the same links.
			t.Fatalf("session %d attached the observers again (links %v, were %v): they should have lingered", i, ids, lingering)
		}
		_ = c.Close() // the shim's exit is waited for below
		c.shimExit(t)
		d.waitClean("a short session")
		if i == 0 {
			// The last session ended: the observers stay for the linger.
			if k := d.status(t).Kernel; !k.Observing || k.Sessions != 0 {
				t.Fatalf("right after the last session: %+v; want the observers lingering", k)
			}
		}
	}
	testenv.WaitFor(t, "no kernel state after all sessions ended", 10*time.Second, func() (bool, string) {
		k := d.status(t).Kernel
		return k.Sessions == 0 && k.EgressEntries == 0 && k.DenyEntries == 0, fmt.Sprintf("%+v", k)
	})
	onlyHooks("the observers detached after the last session")
	d.stop()
	if _, err := os.Stat(filepath.Join(pinRoot(), d.namespace, "connect4")); err == nil {
		t.Fatal("a clean shutdown left pinned links")
	}
}

// kernelLinks counts the BPF links attached in the kernel whose program
// uses this daemon's sessions map (found from its pinned connect4 link).
// observerLinkIDs are the ids of the observation links pinned in a
// daemon's pin directory (obs-*), in the pins' order.
func observerLinkIDs(t *testing.T, namespace string) []string {
	t.Helper()
	pins, _ := filepath.Glob(filepath.Join(pinRoot(), namespace, "obs-*"))
	var ids []string
	for _, p := range pins {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			continue // detached meanwhile
		}
		info, err := l.Info()
		_ = l.Close() // a second reference; the pin holds the link
		if err == nil {
			ids = append(ids, fmt.Sprintf("%s=%d", filepath.Base(p), info.ID))
		}
	}
	return ids
}

// kernelLinks counts the links attached to the daemon's programs.
func (d *daemon) kernelLinks(t *testing.T) int {
	t.Helper()
	return d.countLinks(t, func(link.Type) bool { return true })
}

// cgroupLinks counts the daemon's links to cgroups (its hooks), not the
// observers, which come, go and linger with the sessions.
func (d *daemon) cgroupLinks(t *testing.T) int {
	t.Helper()
	return d.countLinks(t, func(ty link.Type) bool { return ty == link.CgroupType })
}

func (d *daemon) countLinks(t *testing.T, counted func(link.Type) bool) int {
	t.Helper()
	pinned, err := link.LoadPinnedLink(filepath.Join(pinRoot(), d.namespace, "connect4"), nil)
	must(t, err, "load the pinned connect4 link")
	defer func() { _ = pinned.Close() }()
	sessions, ok := mapNamed(t, progOf(t, pinned), "sessions")
	if !ok {
		t.Fatal("the connect4 program uses no sessions map")
	}
	n := 0
	var it link.Iterator
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // detached meanwhile
		}
		if id, ok := mapNamed(t, info.Program, "sessions"); ok && id == sessions && counted(info.Type) {
			n++
		}
	}
	must(t, it.Err(), "iterate links")
	return n
}

func progOf(t *testing.T, l link.Link) ebpf.ProgramID {
	info, err := l.Info()
	must(t, err, "link info")
	return info.Program
}

// mapNamed returns the id of the map called name that program id uses.
func mapNamed(t *testing.T, id ebpf.ProgramID, name string) (ebpf.MapID, bool) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return 0, false // detached meanwhile
	}
	defer func() { _ = prog.Close() }()
	info, err := prog.Info()
	must(t, err, "program info")
	ids, _ := info.MapIDs()
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		_ = m.Close()
		if err == nil && mi.Name == name {
			return mid, true
		}
	}
	return 0, false
}

func TestEventStormIsCountedAndDaemonStaysResponsive(t *testing.T) {
	d := startDaemon(t, "")
	storm := d.connect(t, "test", mcp.ProtocolVersion20251125)
	calm := d.connect(t, "test", mcp.ProtocolVersion20251125)
	done := make(chan string, 1)
	go func() { done <- attack(t, storm, "open-storm", "300000") }()
	// Meanwhile the daemon keeps serving another session: five calls
	// answered once the storm has made the kernel drop events.
	calls := 0
	testenv.WaitFor(t, "five calm calls answered after the storm made the kernel drop events", 60*time.Second, func() (bool, string) {
		if got, _ := callText(t, calm, "echo", map[string]any{"text": "calm"}); got != "calm" {
			t.Fatalf("calm session: %q", got)
		}
		if k := d.status(t).Kernel; k.LostThrottled+k.LostRingbuf > 0 {
			calls++
		}
		return calls == 5, fmt.Sprintf("%d calls answered since events were dropped", calls)
	})
	if v := <-done; !strings.HasPrefix(v, "ESCAPED 300000") {
		t.Fatalf("storm: %q", v)
	}
	k := d.status(t).Kernel
	if k.LostThrottled+k.LostRingbuf == 0 {
		t.Fatalf("300000 opens lost no events: %+v", k)
	}
	d.waitLog(`msg="kernel events lost"`)
	// The storm's session says how many of its events went unrecorded
	// over its budget: events it made to hide one (an allowed connection
	// after 2000 failed opens) are counted for it, not only for the host
	// (found by a red-team helper).
	_ = storm.Close()
	end := d.record(t, "session.end", func(r map[string]any) bool {
		n, _ := r["kernel_events_throttled"].(float64)
		return n > 0
	})
	t.Logf("the storm's session.end: %v kernel events throttled", end["kernel_events_throttled"])
}

// A host-name rule follows DNS: when the name moves to another address,
// the old one stops working once its record's TTL has run out.
func TestEgressFollowsDNSTTL(t *testing.T) {
	s := startNameFollower(t)
	d, dns, first, second, get := s.d, s.dns, s.first, s.second, s.get
	if got := get(second); !strings.Contains(got, "operation not permitted") {
		t.Fatalf("GET %s before the name points there: %q", second, got)
	}
	queries := dns.Queries()
	dns.Set("svc.mcpcage.test", dnstest.Record{Addr: netip.MustParseAddr("127.0.0.2"), TTL: 1})
	testenv.WaitFor(t, "the rule to follow the name to "+second, 20*time.Second, func() (bool, string) {
		got := get(second)
		return strings.Contains(got, "reached"), fmt.Sprintf("GET: %q (%d DNS queries since the change)", got, dns.Queries()-queries)
	})
	if got := get(first); !strings.Contains(got, "operation not permitted") {
		t.Fatalf("GET %s after its record expired: %q", first, got)
	}
	d.waitLog(`msg="egress rules follow DNS and the host's networks"`)
}

// nameFollower is a session of server dyn (host network) whose egress
// entry is svc.mcpcage.test on a port where first (127.0.0.1) and second
// (127.0.0.2) serve HTTP; the name points at first, with a TTL of 1 s.
type nameFollower struct {
	d             *daemon
	dns           *dnstest.Server
	first, second string
	get           func(addr string) string // http_get through the session
}

func startNameFollower(t *testing.T) nameFollower {
	t.Helper()
	setup(t)
	dns := startDNS(t)
	first := listenHTTP(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(first)
	second := listenHTTP(t, "127.0.0.2:"+port)
	dns.Set("svc.mcpcage.test", dnstest.Record{Addr: netip.MustParseAddr("127.0.0.1"), TTL: 1})
	// A private domain: its names may resolve to loopback
	// (TestEgressRefusesRebinding has the other names).
	d := startDaemon(t, fmt.Sprintf("[daemon]\ndns_servers = [%q]\nprivate_domains = [\"mcpcage.test\"]\n\n[servers.dyn]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"svc.mcpcage.test:%s\"]\n",
		dns.Addr, filepath.Join(env.bin, "testserver"), port))
	c := d.connect(t, "dyn", mcp.ProtocolVersion20251125)
	get := func(addr string) string {
		got, _ := callText(t, c, "http_get", map[string]any{"url": "http://" + addr + "/"})
		return got
	}
	if got := get(first); !strings.Contains(got, "reached") {
		t.Fatalf("GET %s while the name points there: %q", first, got)
	}
	return nameFollower{d: d, dns: dns, first: first, second: second, get: get}
}

// TestEgressRefusesRebinding: a host name's DNS answers are allowed only
// where "public" reaches. The name's owner (a server's vendor) cannot
// point it at the host's loopback or the host's own public address to
// reach services there on the entry's port (DNS rebinding), at the start
// or later; a public answer is allowed; the denial says why.
func TestEgressRefusesRebinding(t *testing.T) {
	setup(t)
	dns := startDNS(t)
	local := listenHTTP(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(local)
	own := hostAddress(t) // the host's own address in public space, with a service on it
	addHostAddress(t, own)
	ownSvc := listenHTTP(t, net.JoinHostPort(own.Addr().String(), port))
	public := netip.AddrFrom4([4]byte{44, 0, 0, 1})
	for hostAddressInUse(t, public) {
		public = public.Next()
	}
	const name = "rebind.vendor.test"
	dns.Set(name, dnstest.Record{Addr: public, TTL: 1})
	d := startDaemon(t, fmt.Sprintf("[daemon]\ndns_servers = [%q]\n\n[servers.vendor]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"%s:%s\"]\n",
		dns.Addr, filepath.Join(env.bin, "testserver"), name, port))
	tr := d.trace(t)
	c := d.connect(t, "vendor", mcp.ProtocolVersion20251125)
	target := net.JoinHostPort(public.String(), port)
	if v := attack(t, c, "udp-connect", target); strings.Contains(v, "operation not permitted") {
		t.Fatalf("UDP connect to the name's public address %s: %q, want allowed", target, v)
	}
	// The owner points the name at the host: loopback and the host's own
	// public address. Both stay refused after the name is looked up again.
	const updated = `msg="egress rules follow DNS and the host's networks"`
	updates := strings.Count(d.log.String(), updated)
	dns.Set(name, dnstest.Record{Addr: netip.MustParseAddr("127.0.0.1"), TTL: 1}, dnstest.Record{Addr: own.Addr(), TTL: 1})
	// The public address's record runs out and the new answer replaces
	// it: the session's rules are updated once the name was looked up.
	testenv.WaitFor(t, "the session's rules to follow the new answer", 20*time.Second, func() (bool, string) {
		n := strings.Count(d.log.String(), updated)
		return n > updates, fmt.Sprintf("%d rule updates since the change", n-updates)
	})
	for _, addr := range []string{local, ownSvc} {
		if got, _ := callText(t, c, "http_get", map[string]any{"url": "http://" + addr + "/"}); !strings.Contains(got, "operation not permitted") {
			t.Fatalf("GET %s, which %s now resolves to: %q, want EPERM", addr, name, got)
		}
	}
	ev := tr.wait(t, "net.denied of the rebound address", func(ev map[string]any) bool {
		return str(ev, "type") == "net.denied" && str(ev, "addr") == local
	})
	if rule := str(ev, "rule"); !strings.Contains(rule, name+" resolved to 127.0.0.1, refused") || !strings.Contains(rule, "loopback") {
		t.Fatalf("net.denied rule %q: want why (the name, the address, loopback)", rule)
	}
	d.waitLog(`msg="egress refuses an address a host name resolved to"`)
	d.waitLog("name=" + name + " addr=" + own.Addr().String())
}

// startDNS starts a DNS server on loopback for the test.
func startDNS(t *testing.T) *dnstest.Server {
	t.Helper()
	dns, err := dnstest.Start()
	must(t, err, "DNS server")
	t.Cleanup(dns.Close)
	return dns
}

// hostAddressInUse reports whether a is one of the host's addresses.
func hostAddressInUse(t *testing.T, a netip.Addr) bool {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	must(t, err, "interface addresses")
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok && n.Contains(a.AsSlice()) {
			return true
		}
	}
	return false
}

// Repeated opens of one file by one process within a tool call are
// folded into one record; the process's next record of the file, after
// the fold window, carries their count; each call's opens are recorded
// for it; the session's end says the total.
func TestRepeatedOpensFoldedPerCall(t *testing.T) {
	d := startDaemon(t, "")
	tr := d.trace(t)
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	const n = 20
	// One process opens the file n times (the shell's own redirection),
	// then once more after the fold window (the server's workload, not a
	// wait of the test's): that record carries the n-1 folded opens.
	loop := map[string]any{"command": "/bin/sh", "args": []any{"-c", fmt.Sprintf("for i in $(seq %d); do read l < /etc/hostname; done; sleep 1.2; read l < /etc/hostname", n)}}
	hostname := func(ev map[string]any) bool {
		return str(ev, "type") == "file.open" && str(ev, "path") == "/etc/hostname" && str(ev, "comm") == "sh"
	}
	for call := 1; call <= 2; call++ {
		if out, isErr := callText(t, c, "run_command", loop); isErr {
			t.Fatalf("call %d: %s", call, out)
		}
	}
	// The marker: an open after both calls' opens.
	callText(t, c, "read_file", map[string]any{"path": "/etc/passwd"})
	tr.wait(t, "file.open /etc/passwd", func(ev map[string]any) bool {
		return str(ev, "type") == "file.open" && str(ev, "path") == "/etc/passwd"
	})
	tr.mu.Lock()
	var recs []map[string]any
	for _, ev := range tr.events {
		if hostname(ev) {
			recs = append(recs, ev)
		}
	}
	tr.mu.Unlock()
	calls := map[string]int{}
	repeats := 0
	for _, r := range recs {
		ids, _ := r["tool_calls"].([]any)
		if len(ids) != 1 {
			t.Fatalf("an open of /etc/hostname names tool calls %v, want its run_command call", r["tool_calls"])
		}
		calls[fmt.Sprint(ids[0])]++
		rep, _ := r["repeats"].(float64)
		repeats += int(rep)
	}
	// Every open is a record or counted on the file's next record, and
	// each call's process records again after the window.
	if len(calls) != 2 || len(recs) >= 2*n || len(recs)+repeats != 2*(n+1) {
		t.Fatalf("%d opens in 2 calls: %d records (by call %v) carrying %d repeats: want records for both calls, fewer records than opens, records and repeats adding up to the opens", 2*(n+1), len(recs), calls, repeats)
	}
	_ = c.Close()
	end := d.record(t, "session.end", func(map[string]any) bool { return true })
	if folded, _ := end["file_opens_folded"].(float64); int(folded) < 2*n-len(recs) {
		t.Fatalf("session.end says %v opens folded, want at least %d", end["file_opens_folded"], 2*n-len(recs))
	}
}

// Observers that linger after the last session are not pinned: a daemon
// killed then leaves only its pinned cgroup hooks attached (they keep
// egress enforced until its restart), not the syscall tracepoints every
// process on the host would pay for with no session left to watch.
func TestLingeringObserversDieWithTheDaemon(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "x"}); got != "x" {
		t.Fatalf("echo: %q", got)
	}
	if ids := observerLinkIDs(t, d.namespace); len(ids) == 0 {
		t.Fatal("no observer pinned while a session runs")
	}
	_ = c.Close() // the shim's exit is waited for below
	c.shimExit(t)
	d.waitClean("the session")
	if k := d.status(t).Kernel; !k.Observing || k.Sessions != 0 {
		t.Fatalf("after the session: %+v; want the observers lingering", k)
	}
	if ids := observerLinkIDs(t, d.namespace); len(ids) != 0 {
		t.Fatalf("lingering observers pinned: %v", ids)
	}
	must(t, d.cmd.Process.Signal(syscall.SIGKILL), "kill mcpcaged")
	<-d.exited
	// The kernel releases the dead daemon's links as its files close.
	testenv.WaitFor(t, "only the cgroup hooks left attached", 20*time.Second, func() (bool, string) {
		n := d.kernelLinks(t)
		return n == cgroupHooks, fmt.Sprintf("%d links attached, want the %d cgroup hooks", n, cgroupHooks)
	})
	d.start()
	d.waitClean("the restarted daemon")
}

// TestNamesThatAreNotUTF8AreRecordedExactly: JSON carries text, so a
// name with a byte that is not UTF-8 reads as U+FFFD; two files a server
// made ("n\xffa" and "n\xfea") recorded alike. The record now carries the
// exact bytes beside the text.
func TestNamesThatAreNotUTF8AreRecordedExactly(t *testing.T) {
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	dir := fmt.Sprintf("/tmp/mcpcage-utf8-%d", time.Now().UnixNano())
	callText(t, c, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c",
		"mkdir " + dir + " && printf x > " + dir + "/n$(printf '\\377')a && printf x > " + dir + "/n$(printf '\\376')a && /bin/true $(printf 'arg\\377')"}})
	for _, tc := range []struct {
		name string
		raw  string
	}{
		{"n\\xffa", dir + "/n\xffa"},
		{"n\\xfea", dir + "/n\xfea"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := base64.StdEncoding.EncodeToString([]byte(tc.raw))
			rec := d.record(t, "file.open", func(r map[string]any) bool { return str(r, "path_b64") == want })
			if str(rec, "path") != strings.ToValidUTF8(tc.raw, "\uFFFD") {
				t.Errorf("path %q beside path_b64 of %q", str(rec, "path"), tc.raw)
			}
		})
	}
	exec := d.record(t, "process.exec", func(r map[string]any) bool { return strings.HasSuffix(str(r, "path"), "/true") && r["argv_b64"] != nil })
	if raw := fmt.Sprint(exec["argv_b64"]); !strings.Contains(raw, base64.StdEncoding.EncodeToString([]byte("arg\xff"))) {
		t.Errorf("argv_b64 %s lacks the argument's bytes", raw)
	}
	// A name that is UTF-8 carries no copy.
	callText(t, c, "read_file", map[string]any{"path": "/etc/hostname"})
	plain := d.record(t, "file.open", func(r map[string]any) bool { return str(r, "path") == "/etc/hostname" })
	if _, ok := plain["path_b64"]; ok {
		t.Errorf("a UTF-8 path carries path_b64: %v", plain)
	}
}
