package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// probeRecord is what fdatasyncLatency appends each time: about the size
// of one tool.call audit record.
var probeRecord = append(bytes.Repeat([]byte("x"), 399), '\n')

// fdatasyncLatency appends a 400-byte line to a new file in dir and
// fdatasyncs it, n times, as the audit log does for each group commit in
// "always" mode; it returns each append+fdatasync's time in microseconds.
func fdatasyncLatency(dir string, n int) ([]float64, error) {
	f, err := os.CreateTemp(dir, "fdatasync-probe-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	var lat []float64
	for range n {
		t0 := time.Now()
		if _, err := f.Write(probeRecord); err != nil {
			_ = f.Close() // the write error says more
			return nil, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("fdatasync: %w", err)
		}
		lat = append(lat, float64(time.Since(t0).Nanoseconds())/1000)
	}
	return lat, f.Close()
}

// dataPath is how a daemon's first session reached its server, as its
// session.start audit record says: "stdio" is how the client's stream
// reaches the daemon ("passed": the shim handed over the client's pipes;
// "framed": the shim relays them), "server_stdio" how the server's
// reaches it ("fifo": the daemon's own FIFOs; "containerd": containerd's
// stdio copy).
type dataPath struct {
	Stdio       string `json:"stdio"`
	ServerStdio string `json:"server_stdio"`
}

func (p dataPath) String() string {
	return fmt.Sprintf("client stdio %s, server stdio %s", orUnknown(p.Stdio), orUnknown(p.ServerStdio))
}

func orUnknown(s string) string {
	if s == "" {
		return "(not recorded)"
	}
	return s
}

// errFound stops audit.Lines at the record looked for.
var errFound = errors.New("found")

// firstSessionStart reads the data path from the first session.start
// record of the audit log at path (and its rotated files).
func firstSessionStart(path string) (dataPath, error) {
	var p dataPath
	for _, file := range audit.Files(path) {
		f, err := os.Open(file)
		if err != nil {
			return p, err
		}
		err = audit.Lines(f, func(_ int, line []byte) error {
			var rec struct {
				Type string `json:"type"`
				dataPath
			}
			if json.Unmarshal(line, &rec) != nil || rec.Type != string(api.RecordSessionStart) {
				return nil
			}
			p = rec.dataPath
			return errFound
		})
		_ = f.Close() // read only
		if errors.Is(err, errFound) {
			return p, nil
		}
		if err != nil {
			return p, fmt.Errorf("%s: %w", file, err)
		}
	}
	return p, fmt.Errorf("no session.start record in %s", filepath.Base(path))
}
