package integration

import (
	"os/exec"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The official reference server, installed from npm by `make test`.
const everythingBin = "mcp-server-everything"

func requireEverything(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(everythingBin)
	testenv.Require(t, err == nil, "@modelcontextprotocol/server-everything (npm install -g @modelcontextprotocol/server-everything)")
	return p
}

const everythingConfig = "[servers.everything]\ncommand = [\"mcp-server-everything\", \"stdio\"]\n"

// rawToolsList runs the initialize handshake and tools/list over a raw
// session and returns the tools/list response line, byte for byte.
func rawToolsList(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	r := startRaw(t, cmd)
	r.initialize()
	r.send(`{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}` + "\n")
	line := r.response("2")
	r.closeInput()
	r.wait()
	return line
}

func TestEverythingToolsListMatchesDirectRun(t *testing.T) {
	bin := requireEverything(t)
	d := startDaemon(t, everythingConfig)
	direct := rawToolsList(t, exec.Command(bin, "stdio"))
	caged := rawToolsList(t, d.shimCmd("everything"))
	if len(fieldOf(t, direct, "result")) < 100 {
		t.Fatalf("direct tools/list looks empty: %.300q", direct)
	}
	if caged != direct {
		t.Fatalf("tools/list through mcpcage differs from a direct run\n direct: %.500q\n caged:  %.500q", direct, caged)
	}
	d.waitClean("everything sessions")
}

func TestEverythingWithMCPGoClient(t *testing.T) {
	requireEverything(t)
	d := startDaemon(t, everythingConfig)
	for _, pin := range []string{"", mcp.ProtocolVersion20251125} {
		t.Run("pin="+pin, func(t *testing.T) {
			c := d.connect(t, "everything", pin)
			tools, err := c.ListTools(ctxT(t, 30*time.Second), mcp.ListToolsRequest{})
			must(t, err, "tools/list")
			found := false
			for _, tl := range tools.Tools {
				found = found || tl.Name == "echo"
			}
			if !found {
				t.Fatalf("server-everything lists no echo tool: %d tools", len(tools.Tools))
			}
			got, isErr := callText(t, c, "echo", map[string]any{"message": "caged"})
			if isErr || got != "Echo: caged" {
				t.Fatalf("echo = %q (isError %v)", got, isErr)
			}
		})
	}
}
