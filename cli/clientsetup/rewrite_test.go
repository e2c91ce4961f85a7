package clientsetup

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/clients golden files")

func testOptions() Options {
	return Options{Home: "/home/alice", IsDir: func(p string) bool { return p == "/home/alice/project" }}
}

func TestGoldenRewrites(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "testdata", "clients", name)
			before, err := os.ReadFile(filepath.Join(dir, "before.json"))
			if err != nil {
				t.Fatalf("%v (every client needs a golden pair)", err)
			}
			res, err := Rewrite(Clients[name], before, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(res.Config) {
				t.Fatalf("rewritten config is not JSON:\n%s", res.Config)
			}
			imported, _ := json.MarshalIndent(res.Imported, "", "  ")
			for file, got := range map[string][]byte{"after.json": res.Config, "imported.json": append(imported, '\n')} {
				path := filepath.Join(dir, file)
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (go test ./clientsetup -update)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s differs (-want +got):\n%s", path, diff)
				}
			}
			// Idempotent: a second run changes nothing.
			again, err := Rewrite(Clients[name], res.Config, testOptions())
			if err != nil || again.Changed(res.Config) || len(again.Imported) != 0 {
				t.Fatalf("second run changed the file or imported %d servers", len(again.Imported))
			}
		})
	}
}

func TestRewriteDetails(t *testing.T) {
	before, _ := os.ReadFile("../../testdata/clients/claude-desktop/before.json")
	res, err := Rewrite(Clients["claude-desktop"], before, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Remote) != 1 || res.Remote[0] != "remote" {
		t.Fatalf("remote entries: %v", res.Remote)
	}
	byName := map[string]Server{}
	for _, s := range res.Imported {
		byName[s.Name] = s
	}
	fs, gh := byName["claude-desktop-filesystem"], byName["claude-desktop-github"]
	if fs.Network != "none" || len(fs.Mounts) != 1 || fs.Mounts[0].Source != "/home/alice/project" || fs.Mounts[0].Writable {
		t.Fatalf("filesystem server: %+v", fs)
	}
	if gh.Network != "host" || len(gh.Egress) == 0 {
		t.Fatalf("github server should get the network: %+v", gh)
	}
	warnings := strings.Join(append(fs.Warnings, gh.Warnings...), "\n")
	for _, w := range []string{"npx", "GITHUB_PERSONAL_ACCESS_TOKEN holds a credential", "network tool"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
	// Only the rewritten entries change; the rest stays byte for byte.
	if !strings.Contains(string(res.Config), `"globalShortcut": "Ctrl+Space"`) || !strings.Contains(string(res.Config), `"remote": {"url": "https://mcp.example.com/sse"}`) {
		t.Fatalf("unrelated content changed:\n%s", res.Config)
	}
	only, _ := Rewrite(Clients["claude-desktop"], before, Options{Home: "/home/alice", Only: []string{"github"}})
	if len(only.Imported) != 1 || len(only.Skipped) != 1 {
		t.Fatalf("--server github: imported %d skipped %v", len(only.Imported), only.Skipped)
	}
}

func TestRewriteRejectsMalformed(t *testing.T) {
	for _, bad := range []string{`{"mcpServers": {`, `[1,2]`, `{"mcpServers": []}`, `{"mcpServers": {"x": {"command": 5}}}`, "{\n // comment\n}"} {
		if _, err := Rewrite(Clients["cursor"], []byte(bad), testOptions()); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("Rewrite(%q) = %v, want a clear error", bad, err)
		}
	}
	if res, err := Rewrite(Clients["cursor"], []byte("  "), testOptions()); err != nil || res.Changed([]byte("  ")) {
		t.Errorf("empty file: %v", err)
	}
}

func TestDiff(t *testing.T) {
	d := Diff("c.json", []byte("a\nb\nc\n"), []byte("a\nB\nc\n"))
	if !strings.Contains(d, "- b\n+ B\n") || !strings.Contains(d, "  a\n") {
		t.Fatalf("diff:\n%s", d)
	}
}
