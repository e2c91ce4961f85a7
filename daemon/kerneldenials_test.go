package daemon

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// A server looping on a refused connect made a record (and a log line)
// per attempt, enough to rotate every user's history out of the audit
// log. Its repeatable denials are recorded one by one up to
// maxKernelDenialRecords, then counted by what was denied, in one record
// at the session's end; the metric counts every one.
func TestRepeatedKernelDenialsAreBounded(t *testing.T) {
	tests := []struct {
		name      string
		events    int
		addrs     int // distinct addresses, in turn
		overflow  int64
		whatCount int // keys in the overflow record
	}{
		{"under the bound", maxKernelDenialRecords, 1, 0, 0},
		{"one address, over the bound", maxKernelDenialRecords + 500, 1, 500, 1},
		{"more addresses than keys", maxKernelDenialRecords + 1000, 100, 1000, maxFoldedKeys + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newKernelFixture(t, &config.Server{}, audit.Options{})
			for i := range tt.events {
				addr := netip.MustParseAddrPort(fmt.Sprintf("10.0.%d.%d:443", i%tt.addrs/250, i%tt.addrs%250))
				f.d.onKernelEvent(bpf.Event{Cgroup: testCgroup, Kind: bpf.KindNetDenied, Addr: addr, Proto: 6, Tgid: 42, Comm: "loop"})
			}
			f.d.recordKernelDeniedOverflow(f.s)
			denied, overflow := 0, []audit.Record{}
			for _, r := range f.written(t) {
				switch r["type"] {
				case "net.denied":
					denied++
				case "kernel.denied_overflow":
					overflow = append(overflow, r)
				}
			}
			if want := min(tt.events, maxKernelDenialRecords); denied != want {
				t.Fatalf("%d net.denied records, want %d", denied, want)
			}
			if tt.overflow == 0 {
				if len(overflow) != 0 {
					t.Fatalf("overflow records %v, want none", overflow)
				}
				return
			}
			if len(overflow) != 1 || overflow[0]["count"] != tt.overflow {
				t.Fatalf("overflow records %v, want one counting %d", overflow, tt.overflow)
			}
			if keys, sum := overflowCounts(t, overflow[0], "denied"); keys != tt.whatCount || sum != tt.overflow {
				t.Fatalf("overflow by what: %d keys summing to %d, want %d keys summing to %d", keys, sum, tt.whatCount, tt.overflow)
			}
			if got := f.s.deniedKernel.Load(); got != int64(tt.events) {
				t.Fatalf("kernel_denied %d, want every denial: %d", got, tt.events)
			}
		})
	}
}
