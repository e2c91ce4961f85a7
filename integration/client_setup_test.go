package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestClientSetupRoundTrip(t *testing.T) {
	d := startDaemon(t, "")
	home := t.TempDir()
	cfgPath := filepath.Join(home, ".config", "Claude", "claude_desktop_config.json")
	must(t, os.MkdirAll(filepath.Dir(cfgPath), 0o755), "mkdir")
	original := fmt.Sprintf(`{
  "mcpServers": {
    "tester": {"command": %q, "args": []},
    "remote": {"url": "https://mcp.example.com/mcp"},
    "legacy": {"type": "sse", "url": "https://old.example.com/sse"}
  }
}
`, filepath.Join(env.bin, "testserver"))
	must(t, os.WriteFile(cfgPath, []byte(original), 0o644), "write client config")
	run := func(args ...string) string {
		t.Helper()
		return d.mustCLI(t, append(args, "--home", home)...)
	}

	out := run("client", "setup", "claude-desktop", "--dry-run")
	if !strings.Contains(out, `+     "tester": {"command":`) || !strings.Contains(out, "dry run: nothing was changed") || !strings.Contains(out, "left as is: legacy: uses the older HTTP+SSE transport") {
		t.Fatalf("dry run output:\n%s", out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != original {
		t.Fatal("dry run changed the file")
	}

	run("client", "setup", "claude-desktop")
	after, _ := os.ReadFile(cfgPath)
	var parsed struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
			URL     string   `json:"url"`
		} `json:"mcpServers"`
	}
	must(t, json.Unmarshal(after, &parsed), "rewritten config")
	tester, remote := parsed.MCPServers["tester"], parsed.MCPServers["remote"]
	if tester.Command != filepath.Join(env.bin, "mcpcage") || len(tester.Args) != 2 || tester.Args[1] != "claude-desktop-tester" ||
		remote.URL != "" || len(remote.Args) != 2 || remote.Args[1] != "claude-desktop-remote" || parsed.MCPServers["legacy"].URL == "" {
		t.Fatalf("rewritten config:\n%s", after)
	}
	backups, _ := filepath.Glob(cfgPath + ".mcpcage-backup-*")
	if len(backups) != 1 {
		t.Fatalf("backups: %v", backups)
	}
	if list := d.mustCLI(t, "servers", "--json"); !strings.Contains(list, `"claude-desktop-tester"`) || !strings.Contains(list, `"owner": "root"`) ||
		!strings.Contains(list, `"url": "https://mcp.example.com/mcp"`) {
		t.Fatalf("imported server not listed as the user's:\n%s", list)
	}
	// The client's rewritten entry really works.
	c := d.connect(t, "claude-desktop-tester", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "through setup"}); got != "through setup" {
		t.Fatalf("imported server: %q", got)
	}
	_ = c.Close()

	if out := run("client", "setup", "claude-desktop"); !strings.Contains(out, "nothing to change") {
		t.Fatalf("second setup:\n%s", out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != string(after) {
		t.Fatal("second setup changed the file")
	}

	run("client", "restore", "claude-desktop")
	if b, _ := os.ReadFile(cfgPath); string(b) != original {
		t.Fatalf("restore did not bring the original back:\n%s", b)
	}
	if list := d.mustCLI(t, "servers"); strings.Contains(list, "claude-desktop-tester") || strings.Contains(list, "claude-desktop-remote") {
		t.Fatalf("restore left the imported server:\n%s", list)
	}

	// A malformed client config gets a clear error and is not touched.
	bad := `{"mcpServers": {"x": `
	must(t, os.WriteFile(cfgPath, []byte(bad), 0o644), "write")
	out, err := d.cli(t, 0, "client", "setup", "claude-desktop", "--home", home)
	if err == nil || !strings.Contains(out, "not valid JSON") || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("malformed config: %v %s", err, out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != bad {
		t.Fatal("a malformed config was modified")
	}
}

func TestServerAddRm(t *testing.T) {
	d := startDaemon(t, "")
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f.txt"), []byte("mounted"), 0o644), "write")
	must(t, os.Chmod(dir, 0o755), "chmod")
	out := d.mustCLI(t, "server", "add", "mine", "--mount", dir+":/data", "--", filepath.Join(env.bin, "testserver"))
	if !strings.Contains(out, "mcpcage run mine") {
		t.Fatalf("server add: %s", out)
	}
	c := d.connect(t, "mine", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/data/f.txt"}); got != "mounted" {
		t.Fatalf("own server's mount: %q", got)
	}
	if got, isErr := callText(t, c, "write_file", map[string]any{"path": "/data/g.txt", "content": "x"}); !isErr {
		t.Fatalf("read-only mount written: %q", got)
	}
	if out, err := d.cli(t, 0, "server", "add", "test", "--", "x"); err == nil || !strings.Contains(out, "defined by the administrator") {
		t.Fatalf("shadowing an admin server: %v %s", err, out)
	}
	d.mustCLI(t, "server", "rm", "mine")
	if out, err := d.cli(t, 0, "server", "rm", "mine"); err == nil || !strings.Contains(out, "no such server") {
		t.Fatalf("second rm: %v %s", err, out)
	}
}

// TestUserRemoteHosts: the administrator bounds the hosts users' own
// remote servers may name.
func TestUserRemoteHosts(t *testing.T) {
	d := startDaemon(t, "[daemon]\nuser_remote_hosts = [\"*.example.com\"]\n")
	if out, err := d.cli(t, 0, "server", "add", "elsewhere", "--url", "https://mcp.elsewhere.test/mcp"); err == nil || !strings.Contains(out, "may not reach mcp.elsewhere.test") {
		t.Fatalf("a host outside user_remote_hosts: %v %s", err, out)
	}
	if out, err := d.cli(t, 0, "server", "add", "tracker", "--url", "https://mcp.example.com/mcp", "--host", "auth.elsewhere.test"); err == nil || !strings.Contains(out, "may not reach auth.elsewhere.test") {
		t.Fatalf("a sign-in host outside user_remote_hosts: %v %s", err, out)
	}
	d.mustCLI(t, "server", "add", "tracker", "--url", "https://mcp.example.com/mcp")
	if list := d.mustCLI(t, "servers"); !strings.Contains(list, "https://mcp.example.com/mcp") {
		t.Fatalf("servers:\n%s", list)
	}
}
