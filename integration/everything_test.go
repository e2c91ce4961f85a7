package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
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

// A consent for some resources is held to them against the official
// server: found by a red-team helper, "demo://resource/dynamic/../static/
// document/architecture.md" matched a consent for
// "demo://resource/dynamic/*", and the TypeScript SDK normalizes it (new
// URL) and serves the static document. A resource URI not in normal form
// is now refused as ambiguous before the server sees it.
func TestResourceURITraversalRefusedAgainstEverything(t *testing.T) {
	_, r, read := everythingReads(t, "demo://resource/dynamic/*")
	if l := read(2, "demo://resource/dynamic/text/1"); !strings.Contains(l, "Resource 1:") {
		t.Fatalf("a resource the consent covers: %s", l)
	}
	for i, uri := range []string{
		"demo://resource/dynamic/../static/document/architecture.md",
		"demo://resource/dynamic/%2e%2e/static/document/architecture.md",
		"demo://resource/dynamic/..\\static/document/architecture.md",
		"demo://resource/dynamic/\t../static/document/architecture.md",
	} {
		if l := read(3+i, uri); strings.Contains(l, "Architecture") || !strings.Contains(l, "not in normal form") {
			t.Fatalf("resources/read %q under a consent for demo://resource/dynamic/*: %s; want it refused, saying why", uri, l)
		}
	}
	r.closeInput()
	r.wait()
}

// A consent's URI pattern covers the host it names and no other, against
// the official server: matched as text, "demo://resource*" also covered
// demo://resource.evil.example/... and demo://resource@evil.example/...
// (user info in front of another host), which went on to the server (a
// server that reads URLs fetches them). Its authority is now matched
// whole: the stars after it cover what follows it, and no wildcard
// matches an '@'.
func TestResourcePatternKeepsItsHostAgainstEverything(t *testing.T) {
	d, r, read := everythingReads(t, "demo://resource*")
	if l := read(2, "demo://resource/dynamic/text/1"); !strings.Contains(l, "Resource 1:") {
		t.Fatalf("a resource the consent covers: %s", l)
	}
	for i, uri := range []string{
		"demo://resource.evil.example/dynamic/text/1",
		"demo://resource@evil.example/dynamic/text/1",
		"demo://resource:8080/dynamic/text/1",
	} {
		if l := read(3+i, uri); !strings.Contains(l, "mcpcage denied resources/read") {
			t.Fatalf("resources/read %q under a consent for demo://resource*: %s; want it denied by mcpcage, not sent to the server", uri, l)
		}
		d.record(t, "request.denied", func(r map[string]any) bool {
			return str(r, "method") == "resources/read" && str(r, "name") == uri
		})
	}
	r.closeInput()
	r.wait()
}

// everythingReads starts a session of server-everything under a consent
// for the resources of pattern, and returns a function that reads one
// resource (request id, URI) and returns the response's line.
func everythingReads(t *testing.T, pattern string) (*daemon, *rawSession, func(id int, uri string) string) {
	t.Helper()
	requireEverything(t)
	d := consentDaemon(t, everythingConfig)
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "everything", "--resource", pattern)
	r := startRaw(t, d.shimCmd("everything"))
	r.initialize()
	return d, r, func(id int, uri string) string {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": map[string]any{"uri": uri}})
		r.send(string(b) + "\n")
		return r.response(fmt.Sprint(id))
	}
}
