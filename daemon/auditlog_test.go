package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestDropLogCountsEveryDropAndLogsFew(t *testing.T) {
	var logs bytes.Buffer
	m := metrics.New()
	dl := &dropLog{log: slog.New(slog.NewTextHandler(&logs, nil)), metric: m.AuditRecordsDropped}
	err := fmt.Errorf("%w: queue full", audit.ErrUnavailable)
	for i := 0; i < 500; i++ {
		dl.drop(audit.Record{"type": "file.open", "session": "s1"}, audit.DropQueueFull, err)
	}
	dl.drop(audit.Record{"type": "consent.grant"}, audit.DropWriteFailed, errors.New("disk full"))
	counts := map[audit.DropReason]float64{audit.DropQueueFull: 500, audit.DropWriteFailed: 1, audit.DropEncodeFailed: 0, audit.DropClosed: 0}
	for reason, want := range counts {
		if got := testutil.ToFloat64(m.AuditRecordsDropped.WithLabelValues(string(reason))); got != want {
			t.Errorf("%s drops counted %v, want %v", reason, got, want)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 || len(lines) > 20 || !strings.Contains(lines[0], "reason=queue_full type=file.open session=s1") ||
		!strings.Contains(logs.String(), "reason=write_failed type=consent.grant") {
		t.Fatalf("%d log lines for 501 drops:\n%.600s", len(lines), logs.String())
	}
}

// TestAuditQueryStreamsLongRecords: records larger than a frame (from
// before records were bounded) reach the client whole.
func TestAuditQueryStreamsLongRecords(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.jsonl")
	big := `{"type":"tool.call","user":"root","tool":"` + strings.Repeat("t", 3*api.MaxFrame) + `"}`
	if err := os.WriteFile(logPath, []byte(`{"type":"session.start","user":"root"}`+"\n"+big+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testDaemon(t, fmt.Sprintf("[daemon]\naudit_log = %q\n", logPath))
	var out bytes.Buffer
	d.auditQuery(context.Background(), nil, api.NewFrameWriter(&out), Peer{UID: 0}, &api.AuditQuery{})
	r := api.NewFrameReader(&out)
	var stdout []byte
	for {
		typ, payload, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if typ == api.FrameStdout {
			stdout = append(stdout, payload...)
		}
	}
	lines := strings.Split(strings.TrimSuffix(string(stdout), "\n"), "\n")
	if len(lines) != 2 || lines[1] != big {
		t.Fatalf("%d lines streamed; the long one intact: %v", len(lines), len(lines) == 2 && lines[1] == big)
	}
}

// TestAuditFollowEndsWhenClientGoes: `mcpcage audit --follow` whose
// client closed its connection stops following at once, though no
// record arrives to fail a write on.
func TestAuditFollowEndsWhenClientGoes(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "audit.jsonl")
	d := testDaemon(t, fmt.Sprintf("[daemon]\naudit_log = %q\n", logPath))
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	daemonEnd, clientEnd := unixConn(t, fds[0]), unixConn(t, fds[1])
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.auditQuery(context.Background(), daemonEnd, api.NewFrameWriter(daemonEnd), Peer{UID: 0}, &api.AuditQuery{Follow: true})
	}()
	r := api.NewFrameReader(clientEnd)
	if typ, _, err := r.Next(); err != nil || typ != api.FrameReply {
		t.Fatalf("first frame %v, %v: want the reply", typ, err)
	}
	testenv.WaitFor(t, "the follower to be registered", 5*time.Second, func() (bool, string) {
		d.auditFollowers.mu.Lock()
		defer d.auditFollowers.mu.Unlock()
		return len(d.auditFollowers.subs) == 1, fmt.Sprintf("%d followers", len(d.auditFollowers.subs))
	})
	if err := clientEnd.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("audit --follow still running 10s after its client went away")
	}
	d.auditFollowers.mu.Lock()
	defer d.auditFollowers.mu.Unlock()
	if n := len(d.auditFollowers.subs); n != 0 {
		t.Fatalf("%d followers left after the client went away", n)
	}
}

// unixConn wraps one end of a socket pair.
func unixConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socketpair")
	c, err := net.FileConn(f) // a duplicate: the pair's own fd goes now
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.UnixConn)
}
