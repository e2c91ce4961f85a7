package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestAuditQueriesBounded: history queries (no --follow) whose clients
// stop reading hold a per-user slot each: past maxAuditPerUID the next is
// refused, saying why; closing the clients frees the slots; and a client
// that reads nothing for streamWriteTimeout is dropped.
func TestAuditQueriesBounded(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "audit.jsonl")
	// More than a socket pair's buffers hold, so a query that is not
	// read blocks in a write.
	line := fmt.Sprintf(`{"type":"tool.call","user":"root","tool":%q}`+"\n", strings.Repeat("t", 1000))
	if err := os.WriteFile(logPath, []byte(strings.Repeat(line, 4000)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testDaemon(t, fmt.Sprintf("[daemon]\naudit_log = %q\n", logPath))
	held := func() (int, string) {
		d.auditing.mu.Lock()
		defer d.auditing.mu.Unlock()
		return d.auditing.held[0], fmt.Sprintf("%d audit slots held", d.auditing.held[0])
	}
	// stalled starts a query whose client reads the reply and then
	// nothing; the returned channel closes when the query ends.
	stalled := func() (client *os.File, reply *api.Reply, done chan struct{}) {
		t.Helper()
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		daemonEnd := unixConn(t, fds[0])
		client = os.NewFile(uintptr(fds[1]), "client")
		t.Cleanup(func() { _ = client.Close() })
		done = make(chan struct{})
		go func() {
			defer close(done)
			defer func() { _ = daemonEnd.Close() }()
			d.auditQuery(context.Background(), daemonEnd, api.NewFrameWriter(daemonEnd), Peer{UID: 0}, &api.AuditQuery{})
		}()
		typ, payload, err := api.NewFrameReader(client).Next()
		if err != nil || typ != api.FrameReply {
			t.Fatalf("first frame %v, %v: want the reply", typ, err)
		}
		reply = &api.Reply{}
		if err := json.Unmarshal(payload, reply); err != nil {
			t.Fatal(err)
		}
		return client, reply, done
	}

	var clients []*os.File
	var dones []chan struct{}
	for i := range maxAuditPerUID {
		c, r, done := stalled()
		if !r.OK {
			t.Fatalf("query %d refused: %s", i, r.Error)
		}
		clients, dones = append(clients, c), append(dones, done)
	}
	testenv.WaitFor(t, "every query to hold its slot", 10*time.Second, func() (bool, string) {
		n, seen := held()
		return n == maxAuditPerUID, seen
	})
	_, r, done := stalled()
	<-done
	if r.OK || r.Code != api.CodeBusy || !strings.Contains(r.Error, fmt.Sprintf("%d audit queries", maxAuditPerUID)) {
		t.Fatalf("query past the bound: %+v", r)
	}
	for _, c := range clients {
		_ = c.Close()
	}
	for _, done := range dones {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a query still runs 10s after its client closed")
		}
	}
	if n, seen := held(); n != 0 {
		t.Fatalf("after the clients went: %s", seen)
	}

	// Every query ended: the timeout can change.
	old := streamWriteTimeout
	streamWriteTimeout = 100 * time.Millisecond
	t.Cleanup(func() { streamWriteTimeout = old })
	_, r, done = stalled()
	if !r.OK {
		t.Fatalf("query refused: %s", r.Error)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("a query whose client reads nothing still runs 10s after a write timeout of %v", streamWriteTimeout)
	}
	if n, seen := held(); n != 0 {
		t.Fatalf("after the stalled client was dropped: %s", seen)
	}
}
