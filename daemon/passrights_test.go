package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestEarlyConnectionHoldsASlotWhileItsFilesClose: a connection made
// before the listener refused files (systemd's backlog while the daemon
// starts) can carry files already, here a pipe whose lock another process
// holds. Dropping them waits on that lock; the connection must hold one of
// its user's session slots until they are dropped, as a session's files
// do, so that such waits stay bounded per user. Before, it held none.
func TestEarlyConnectionHoldsASlotWhileItsFilesClose(t *testing.T) {
	testenv.Require(t, refusesUnaskedFiles(), "SO_PASSRIGHTS (Linux 6.16+)")
	d := testDaemon(t, "")
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	early, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = early.Close() }()
	refuseFiles(ln) // what Serve and Listen do, after this connection was made
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFDs(sp[:])
	req := api.AppendFrame(nil, api.FrameRequest, []byte(`{"version":2,"op":"nonsense"}`))
	if _, _, err := early.WriteMsgUnix(req, unix.UnixRights(p[0]), nil); err != nil {
		t.Fatalf("queue a file on the early connection: %v", err)
	}
	_ = unix.Close(p[0]) // the daemon's copy is the last
	defer closeFDs(p[1:])
	spliced := testenv.SpliceHoldingLock(t, sp[0], p[1], 16)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	go func() {
		d.handle(context.Background(), c.(*net.UnixConn))
		close(handled)
	}()
	uid := uint32(os.Getuid())
	held := func() int {
		d.sessionSlots.mu.Lock()
		defer d.sessionSlots.mu.Unlock()
		return d.sessionSlots.held[uid]
	}
	testenv.WaitFor(t, "the dropping of the early connection's file to wait on the lock", 10*time.Second, func() (bool, string) {
		where, ok := testenv.ThreadOnPipe(os.Getpid())
		return ok, where
	})
	if n := held(); n != 1 {
		t.Fatalf("while its file waits to be dropped the early connection holds %d session slots of uid %d, want 1", n, uid)
	}
	if _, err := unix.Write(sp[1], []byte("x")); err != nil { // the lock goes
		t.Fatal(err)
	}
	if err := <-spliced; err != nil {
		t.Fatalf("splice: %v", err)
	}
	<-handled
	testenv.WaitFor(t, "the slot to be given back", 10*time.Second, func() (bool, string) {
		n := held()
		return n == 0, fmt.Sprintf("%d slots held", n)
	})
	// A connection made now refuses files outright.
	late, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Close() }()
	if _, _, err := late.WriteMsgUnix(req, unix.UnixRights(sp[0]), nil); err == nil {
		t.Fatal("a connection made after the listener refused files took one")
	}
}
