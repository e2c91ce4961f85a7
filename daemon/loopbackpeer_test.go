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
	testenv.RequireRoot(t)
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	tests := []struct {
		name string
		uid  uint32
	}{
		{"this process's user", uint32(os.Geteuid())},
		{"nobody", 65534},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The peer stays connected until the test has looked.
			cmd := exec.Command(node, "-e", "const s = require('net').connect("+port+", '127.0.0.1'); process.stdin.on('end', () => s.end()); process.stdin.resume()")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.uid}}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			got, err := loopbackPeerUID(c.RemoteAddr().String(), c.LocalAddr().String())
			if err != nil || got != tt.uid {
				t.Fatalf("loopbackPeerUID = %d, %v; want %d", got, err, tt.uid)
			}
		})
	}
	if _, err := loopbackPeerUID("127.0.0.1:1", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "no socket") {
		t.Fatalf("a peer that is not connected: %v, want an error", err)
	}
}
