package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTrimLogWarnsOfShortHistory: every removed segment is counted; a
// rotation that leaves less than a day of history is warned of, at most
// once an hour, with the segments removed since the last warning.
func TestTrimLogWarnsOfShortHistory(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		history  time.Duration   // how old the oldest record left is, at each trim
		at       []time.Duration // when each trim happens, after t0
		warnings int
		last     string // in the last warning
	}{
		{"a week of history", 7 * 24 * time.Hour, []time.Duration{0, time.Minute}, 0, ""},
		{"a flood: once an hour", time.Minute, []time.Duration{0, time.Minute, 2 * time.Minute}, 1, "segments_removed=1"},
		{"a flood that goes on", time.Minute, []time.Duration{0, time.Minute, 61 * time.Minute}, 2, "segments_removed=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			now := t0
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "removed"})
			tl := &trimLog{log: slog.New(slog.NewTextHandler(&buf, nil)), path: "/x/audit.jsonl", metric: c,
				now:   func() time.Time { return now },
				start: func(string) (time.Time, bool) { return now.Add(-tc.history), true }}
			for _, at := range tc.at {
				now = t0.Add(at)
				tl.trimmed(1)
			}
			if got := testutil.ToFloat64(c); got != float64(len(tc.at)) {
				t.Fatalf("counted %v segments removed, want %d", got, len(tc.at))
			}
			lines := strings.Count(buf.String(), "less than a day old")
			if lines != tc.warnings {
				t.Fatalf("%d warnings, want %d:\n%s", lines, tc.warnings, buf.String())
			}
			if tc.last != "" {
				all := strings.Split(strings.TrimSpace(buf.String()), "\n")
				if !strings.Contains(all[len(all)-1], tc.last) {
					t.Fatalf("the last warning %q does not say %q", all[len(all)-1], tc.last)
				}
			}
		})
	}
}
