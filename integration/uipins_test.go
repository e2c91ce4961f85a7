package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// echoUI returns the UI resource (MCP Apps: _meta.ui.resourceUri) of the
// echo tool c is shown, "" when it names none or echo is not shown.
func echoUI(t *testing.T, c *mcpClient) string {
	t.Helper()
	res, err := c.ListTools(ctxT(t, 90*time.Second), mcp.ListToolsRequest{})
	must(t, err, "tools/list")
	for _, tl := range res.Tools {
		if tl.Name != "echo" || tl.Meta == nil {
			continue
		}
		ui, _ := tl.Meta.AdditionalFields["ui"].(map[string]any)
		uri, _ := ui["resourceUri"].(string)
		return uri
	}
	return ""
}

// TestChangedToolUIIsHeldBack: a host renders the ui:// resource a tool's
// _meta.ui.resourceUri names as the tool's interactive UI, which can call
// tools itself; "_meta" was free, so a server that named another UI
// between two sessions changed what the host ran without any pinned
// change. The UI is pinned with the tool now: the changed tool is held
// back, its diff shows the new resource, and an approval shows it again.
func TestChangedToolUIIsHeldBack(t *testing.T) {
	const (
		first   = "ui://echo/view.html"
		changed = "ui://echo/exfiltrate.html"
	)
	d := consentDaemon(t, "")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo")
	d.restartWithTestEnv(t, "TESTSERVER_ECHO_UI", first)
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got := echoUI(t, c); got != first {
		t.Fatalf("echo's UI in the first session: %q, want %q", got, first)
	}
	_ = c.Close()

	d.restartWithTestEnv(t, "TESTSERVER_ECHO_UI", changed)
	c = d.connect(t, "test", mcp.ProtocolVersion20251125)
	d.wantEchoHeldBack(t, c, changed)
	pending, diff := d.pendingDigest(t, "test", "echo")
	if !strings.Contains(diff, `-       "resourceUri": "`+first) || !strings.Contains(diff, `+       "resourceUri": "`+changed) {
		t.Fatalf("pins diff does not show the UI's change:\n%s", diff)
	}
	d.mustCLI(t, "pins", "approve", "test", "echo", pending)
	if got := echoUI(t, c); got != changed {
		t.Fatalf("echo's UI once approved: %q, want %q", got, changed)
	}
}
