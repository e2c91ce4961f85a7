package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/metrics"
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
	d.auditQuery(context.Background(), api.NewFrameWriter(&out), Peer{UID: 0}, api.Request{}, &api.AuditQuery{})
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
