package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// BenchmarkToolCallRoundTrip measures one small tools/call round trip to
// the test server spawned directly and through mcpcage, alternating the
// two in one loop so both see the same machine; it reports both latencies
// and their ratio, with the audit log synced per record (the default: each
// call waits for its tool.call record to reach the disk) and in batches.
func BenchmarkToolCallRoundTrip(b *testing.B) {
	for _, sync := range []string{"always", "batch"} {
		b.Run("audit_sync="+sync, func(b *testing.B) {
			roundTrips(b, startDaemon(b, "[daemon]\naudit_sync = \""+sync+"\"\n"))
		})
	}
}

func roundTrips(b *testing.B, d *daemon) {
	direct := client.NewClient(transport.NewStdio(filepath.Join(env.bin, "testserver"), nil),
		client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	ctx := context.Background()
	if err := direct.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = direct.Close() }()
	if _, err := direct.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		b.Fatal(err)
	}
	caged := d.connect(b, "test", mcp.ProtocolVersion20251125)
	req := mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "ping"}}}
	call := func(c *client.Client) time.Duration {
		start := time.Now()
		if _, err := c.CallTool(ctx, req); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for range 20 { // warm both paths
		call(direct)
		call(caged.Client)
	}
	var tDirect, tCaged time.Duration
	n := 0
	for b.Loop() {
		tDirect += call(direct)
		tCaged += call(caged.Client)
		n++
	}
	b.ReportMetric(float64(tDirect.Microseconds())/float64(n), "direct-µs/call")
	b.ReportMetric(float64(tCaged.Microseconds())/float64(n), "mcpcage-µs/call")
	b.ReportMetric(float64(tCaged)/float64(tDirect), "mcpcage/direct")
}
