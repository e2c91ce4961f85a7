package integration

import (
	"fmt"
	"strings"
	"testing"
)

// A server that never answers cancelled requests (as the spec asks; the
// testserver drops those answers) must not wear the session out: more
// cancelled calls than the relay's pending table holds, then a normal
// call that succeeds.
func TestCancelledCallsDoNotExhaustTheSession(t *testing.T) {
	// Group commit keeps 10,000 audited calls quick; durability is not
	// what this test is about.
	d := startDaemon(t, "[daemon]\naudit_sync = \"batch\"\n")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	const n = 10050 // the relay keeps at most 10,000 requests pending
	sent := make(chan error, 1)
	go func() {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1}}}`+"\n", i)
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"timed out"}}`+"\n", i)
			if b.Len() > 1<<16 || i == n {
				if _, err := r.in.Write([]byte(b.String())); err != nil {
					sent <- err
					return
				}
				b.Reset()
			}
		}
		_, err := r.in.Write([]byte(`{"jsonrpc":"2.0","id":"final","method":"tools/call","params":{"name":"sleep","arguments":{"ms":1}}}` + "\n"))
		sent <- err
	}()
	line := r.response(`"final"`)
	if err := <-sent; err != nil {
		t.Fatalf("write to shim: %v", err)
	}
	if !strings.Contains(line, `"result"`) || !strings.Contains(line, "slept 1ms") {
		t.Fatalf("call after %d cancellations: %.300q, want its result", n, line)
	}
}
