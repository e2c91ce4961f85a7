package daemon

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestPeerPidfd: the daemon pins a connecting process at accept
// (SO_PEERPIDFD) and identifies it through that pidfd: once the process
// is gone, its pid (which SO_PEERCRED still reports, and another process
// may reuse) leads nowhere.
func TestPeerPidfd(t *testing.T) {
	python, err := exec.LookPath("python3")
	testenv.Require(t, err == nil, "python3")
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	// A peer that connects, then exits at once.
	cmd := exec.Command(python, "-c", "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])", sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("peer: %v\n%s", err, out)
	}
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	peer, err := peerOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if int(peer.PID) != cmd.Process.Pid {
		t.Fatalf("SO_PEERCRED pid %d, want %d", peer.PID, cmd.Process.Pid)
	}
	peer.PidFD, err = peerPidfd(c)
	if errors.Is(err, errNoPeerPidfd) {
		testenv.Require(t, false, "SO_PEERPIDFD (Linux 6.5)")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = peer.PidFD.Close() }()
	d := &Daemon{hasher: identity.NewHasher()}
	d.cfg.Store(&config.Config{})
	if _, err := d.agentOf(peer); !errors.Is(err, identity.ErrGone) {
		t.Fatalf("agent of an exited peer through its pidfd: %v, want ErrGone", err)
	}
	if note := peerPidfdNote(); !strings.Contains(note, "SO_PEERPIDFD") || strings.Contains(note, "unavailable") {
		t.Errorf("status note %q", note)
	}

	// A live peer: the pidfd names it.
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c2, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c2.Close() }()
	f, err := peerPidfd(c2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if pid, err := identity.PidOf(int(f.Fd())); err != nil || pid != os.Getpid() {
		t.Fatalf("pidfd of a live peer names %d (%v), want %d", pid, err, os.Getpid())
	}
}
