package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// hostSocketGiver listens on the unix socket argv[1] and hands each
// client three sockets it makes (TCP, UDP, TCP), in the host's network
// namespace when it runs with network = "host".
const hostSocketGiver = `import os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(1)
open(path + ".ready", "w").close()
while True:
    c, _ = srv.accept()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
             socket.socket(socket.AF_INET, socket.SOCK_STREAM)]
    socket.send_fds(c, [b"x"], [s.fileno() for s in socks])
    c.close()
    for s in socks:
        s.close()
`

// hostSocketTaker takes the giver's sockets from the unix socket argv[1]
// and connects, sends and binds with them to the host's loopback (TCP
// port argv[2], UDP port argv[3]); then connects a socket of its own
// there. It prints "NAME ok" or "NAME ERRNO" for each.
const hostSocketTaker = `import errno, socket, sys
path, tcp, udp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(path)
_, fds, _, _ = socket.recv_fds(c, 1, 3)
def r(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
t, u, b = (socket.socket(fileno=fd) for fd in fds)
t.settimeout(5)
r("passed connect", lambda: t.connect(("127.0.0.1", tcp)))
r("passed sendto", lambda: u.sendto(b"escaped", ("127.0.0.1", udp)))
r("passed bind", lambda: b.bind(("127.0.0.1", 0)))
own = socket.socket()
own.settimeout(5)
r("own connect", lambda: own.connect(("127.0.0.1", tcp)))
`

// A network = "host" server hands sockets of the host's network namespace
// to a network = "none" server through a unix socket in a mount both
// write (SCM_RIGHTS). The isolated server can neither connect, send nor
// bind with them (EPERM, net.denied / net.bind_denied with the host
// socket rule), and nothing reaches the host's loopback; its own socket
// stays in its own namespace (nothing listens there: ECONNREFUSED).
func TestHostSocketPassedToIsolatedServer(t *testing.T) {
	setup(t)
	py := "/usr/bin/python3"
	_, err := os.Stat(py)
	testenv.Require(t, err == nil, "python3")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	defer func() { _ = ln.Close() }()
	var reached atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			_ = c.Close()
		}
	}()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err, "listen udp")
	defer func() { _ = udp.Close() }()
	work := t.TempDir()
	must(t, os.Chmod(work, 0o777), "chmod")
	for name, src := range map[string]string{"giver.py": hostSocketGiver, "taker.py": hostSocketTaker} {
		must(t, os.WriteFile(filepath.Join(work, name), []byte(src), 0o644), "write %s", name)
	}
	ts := filepath.Join(env.bin, "testserver")
	mount := fmt.Sprintf("mounts = [{ source = %q, target = \"/work\", readonly = false }]\n", work)
	d := startDaemon(t, fmt.Sprintf("[servers.giver]\ncommand = [%q]\nnetwork = \"host\"\negress = [\"192.0.2.1:443\"]\n%s"+
		"[servers.taker]\ncommand = [%q]\n%s", ts, mount, ts, mount))
	tr := d.trace(t)
	giver := d.connect(t, "giver", mcp.ProtocolVersion20251125)
	taker := d.connect(t, "taker", mcp.ProtocolVersion20251125)

	if out, isErr := callText(t, giver, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c",
		py + " /work/giver.py /work/s </dev/null >/work/giver.log 2>&1 &"}}); isErr {
		t.Fatalf("start the giver: %s", out)
	}
	testenv.WaitFor(t, "the giver listening", 20*time.Second, func() (bool, string) {
		_, err := os.Stat(filepath.Join(work, "s.ready"))
		log, _ := os.ReadFile(filepath.Join(work, "giver.log"))
		return err == nil, string(log)
	})
	out, isErr := callText(t, taker, "run_command", map[string]any{"command": py, "args": []string{"/work/taker.py", "/work/s",
		fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), fmt.Sprint(udp.LocalAddr().(*net.UDPAddr).Port)}})
	if isErr {
		t.Fatalf("the taker: %s", out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		i := strings.LastIndexByte(line, ' ')
		got[line[:max(i, 0)]] = line[i+1:]
	}
	want := map[string]string{"passed connect": "EPERM", "passed sendto": "EPERM", "passed bind": "EPERM", "own connect": "ECONNREFUSED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the isolated server with the host's sockets (-want +got):\n%s", diff)
	}

	const rule = `socket of the host's network namespace, in a sandbox with its own (network = "none")`
	for _, typ := range []string{"net.denied", "net.bind_denied"} {
		ev := tr.wait(t, typ, func(ev map[string]any) bool {
			return str(ev, "type") == typ && str(ev, "server") == "taker"
		})
		if str(ev, "rule") != rule || str(ev, "action") != "EPERM" {
			t.Errorf("%s record: %v", typ, ev)
		}
	}
	// The host heard nothing: its own connection and datagram, sent
	// after the taker's, are the first to arrive.
	marker, err := net.Dial("tcp", ln.Addr().String())
	must(t, err, "the host's own connection")
	_ = marker.Close()
	testenv.WaitFor(t, "the host's own connection accepted", 10*time.Second, func() (bool, string) {
		return reached.Load() > 0, ""
	})
	if n := reached.Load(); n != 1 {
		t.Errorf("%d connections reached the host's loopback before its own", n-1)
	}
	_, err = udp.WriteTo([]byte("marker"), udp.LocalAddr())
	must(t, err, "the host's own datagram")
	buf := make([]byte, 16)
	must(t, udp.SetReadDeadline(time.Now().Add(10*time.Second)), "read deadline")
	n, _, err := udp.ReadFrom(buf)
	must(t, err, "read the host's own datagram")
	if string(buf[:n]) != "marker" {
		t.Errorf("datagram %q reached the host's loopback before its own", buf[:n])
	}
}
