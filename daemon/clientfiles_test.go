package daemon

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// An ended session's files count as held only while they are: closed
// first, they never count; held then closed, the count comes back.
func TestClientFilesHeld(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order string // h: held, c: closed
		want  int64  // held after the calls
	}{
		{"held, then closed", "hc", 0},
		{"closed before the wait ran out", "ch", 0},
		{"still held", "h", 1},
		{"closed, never held", "c", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c clientFiles
			held, closed := c.tracker()
			for _, step := range tc.order {
				if step == 'h' {
					held()
				} else {
					closed()
				}
			}
			if got := c.Held(); got != tc.want {
				t.Fatalf("held %d, want %d", got, tc.want)
			}
		})
	}

	// Many sessions at once: the gauge ends where the count does.
	c := clientFiles{gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "held"})}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			held, closed := c.tracker()
			held()
			if i%2 == 0 {
				closed()
			}
		}()
	}
	wg.Wait()
	if got, gauge := c.Held(), testutil.ToFloat64(c.gauge); got != 100 || gauge != 100 {
		t.Fatalf("held %d, gauge %v; want 100 and 100", got, gauge)
	}
}

// Past the daemon-wide bound a session takes no client file; a slot
// given back is taken again.
func TestClientFilesBound(t *testing.T) {
	var c clientFiles
	var releases []func()
	for i := range maxClientFiles {
		rel, err := c.take()
		if err != nil {
			t.Fatalf("slot %d: %v", i+1, err)
		}
		releases = append(releases, rel)
	}
	if _, err := c.take(); !errors.Is(err, errFramedInstead) {
		t.Fatalf("past the bound: %v", err)
	}
	releases[0]()
	releases[0]() // once only
	if got := c.InUse(); got != maxClientFiles-1 {
		t.Fatalf("%d in use after one release, want %d", got, maxClientFiles-1)
	}
	if _, err := c.take(); err != nil {
		t.Fatalf("once a slot is back: %v", err)
	}
}

// A held drainWriter keeps what comes, within maxEarlyStderr, until open
// writes it; then it lets writes through.
func TestDrainWriterHeldUntilOpen(t *testing.T) {
	var out strings.Builder
	d := &drainWriter{w: &out, held: true}
	_, _ = d.Write([]byte("first\n"))
	_, _ = d.Write(make([]byte, maxEarlyStderr)) // past the bound: the rest is counted, not kept
	if out.Len() != 0 {
		t.Fatalf("%d bytes written while held", out.Len())
	}
	d.open()
	got := out.String()
	if !strings.HasPrefix(got, "first\n") || len(got) < maxEarlyStderr || !strings.Contains(got, "mcpcage: 6 more bytes the server wrote on stderr while it started were dropped") {
		t.Fatalf("after open: %d bytes, starting %q, ending %q", len(got), got[:min(len(got), 20)], got[max(0, len(got)-120):])
	}
	out.Reset()
	_, _ = d.Write([]byte("later\n"))
	d.open() // a second open changes nothing
	if out.String() != "later\n" {
		t.Fatalf("after open, a write gives %q", out.String())
	}
}
