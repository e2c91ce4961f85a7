package daemon

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestLoopbackPeerUID: the uid behind a loopback connection is the
// connecting process's, as the kernel keeps it.
func TestLoopbackPeerUID(t *testing.T) {
	node, ln := nodeAndListener(t)
	tests := []struct {
		name string
		uid  uint32
	}{
		{"this process's user", uint32(os.Geteuid())},
		{"nobody", 65534},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connectFromNode(t, node, ln, tt.uid)
			got, err := loopbackPeerUID(c.RemoteAddr().String(), c.LocalAddr().String())
			if err != nil || got != tt.uid {
				t.Fatalf("loopbackPeerUID = %d, %v; want %d", got, err, tt.uid)
			}
		})
	}
	if _, err := loopbackPeerUID("127.0.0.1:1", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "no socket") {
		t.Fatalf("a peer that is not connected: %v, want an error", err)
	}
	// A peer that sent and closed at once: the kernel shows its socket
	// as uid 0's (an orphan, then TIME_WAIT), which must not pass for
	// root's (found by review).
	closed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = closed.Close()
	if uid, err := loopbackPeerUID(c.RemoteAddr().String(), c.LocalAddr().String()); err == nil || !strings.Contains(err.Error(), "closed its connection") {
		t.Fatalf("a peer that closed its connection: uid %d, %v; want an error", uid, err)
	}
}

// TestOwnSocket: a loopback connection this process made is its own; one
// another process made is not.
func TestOwnSocket(t *testing.T) {
	node, ln := nodeAndListener(t)
	own := func(t *testing.T, c net.Conn) bool {
		t.Helper()
		p, err := loopbackPeerOf(c.RemoteAddr().String(), c.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		mine, err := ownSocket(p.inode)
		if err != nil {
			t.Fatal(err)
		}
		return mine
	}
	mine, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mine.Close() }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if !own(t, c) {
		t.Error("a connection of this process's is not its own")
	}
	if own(t, connectFromNode(t, node, ln, 0)) {
		t.Error("another process's connection is this process's own")
	}
}

// connectFromNode has a node process of uid connect to ln; it returns the
// accepted connection. Both stay open until the test ends.
func connectFromNode(t *testing.T, node string, ln net.Listener, uid uint32) net.Conn {
	t.Helper()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	cmd := exec.Command(node, "-e", "const s = require('net').connect("+port+", '127.0.0.1'); process.stdin.on('end', () => s.end()); process.stdin.resume()")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// nodeAndListener returns node's path and a loopback listener closed with
// the test (root only: peers of other uids).
func nodeAndListener(t *testing.T) (string, net.Listener) {
	t.Helper()
	testenv.RequireRoot(t)
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return node, ln
}
