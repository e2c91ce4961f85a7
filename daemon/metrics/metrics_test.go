package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestToolLabelsAreBounded(t *testing.T) {
	m := New()
	for i := 0; i < 10000; i++ {
		m.ToolCalls.WithLabelValues("s", Agent("exe:/x"), m.Tool("s", fmt.Sprintf("tool-%d", i)), "allow").Inc()
	}
	if n := testutil.CollectAndCount(m.ToolCalls); n != MaxToolsPerServer+1 {
		t.Fatalf("%d series after 10000 tool names, want %d", n, MaxToolsPerServer+1)
	}
	if got := testutil.ToFloat64(m.ToolCalls.WithLabelValues("s", "unknown", "other", "allow")); got != 10000-MaxToolsPerServer {
		t.Fatalf("other = %v", got)
	}
	if m.Tool("s", "tool-5") != "tool-5" || m.Tool("t", "tool-5") != "tool-5" {
		t.Fatal("known tools must keep their label; caps are per server")
	}
	if Agent("claude-desktop") != "claude-desktop" || Agent("exe:/usr/bin/x") != "unknown" {
		t.Fatal("agent labels")
	}
}

// TestUserServersShareOneLabel: users' own servers, however many names
// come and go, make the series of one server label.
func TestUserServersShareOneLabel(t *testing.T) {
	m := New()
	for i := range 1000 {
		server := Server(fmt.Sprintf("t%d", i), true)
		m.Messages.WithLabelValues(server, "client_to_server").Inc()
		m.ToolCalls.WithLabelValues(server, "unknown", m.Tool(server, "echo"), "allow").Inc()
	}
	if n := testutil.CollectAndCount(m.Messages); n != 1 {
		t.Fatalf("%d message series after 1000 user server names, want 1", n)
	}
	if n := len(m.tools); n != 1 {
		t.Fatalf("%d servers in the tool label table, want 1", n)
	}
	if Server("github", false) != "github" || Server("github", true) != UserServers {
		t.Fatal("an administrator's server keeps its name; a user's is " + UserServers)
	}
}
