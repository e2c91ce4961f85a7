package clientsetup

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestNetworkByIdentity: only a known network server, named exactly (a
// runner's package argument or the command's basename), gets the
// network; a word of its name anywhere else in the command line does not.
func TestNetworkByIdentity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command string
		args    []string
		known   string // the known server it runs; "": no network
	}{
		// What a word match let through.
		{"a package with a known word in its name", "npx", []string{"-y", "@evil/mcp-notion-helper"}, ""},
		{"a path with a known word", "node", []string{"/home/alice/linear-algebra/notes-server.js"}, ""},
		{"a known package's path", "node", []string{"/opt/mcp/node_modules/@modelcontextprotocol/server-github/dist/index.js"}, ""},
		{"a longer name", "npx", []string{"-y", "@notionhq/notion-mcp-server-evil"}, ""},
		{"another scope", "npx", []string{"-y", "@evil/notion-mcp-server"}, ""},
		{"a prefix of a known name", "npx", []string{"-y", "tavily-mcp-helper"}, ""},
		{"a known word as an argument", "/opt/billing-server", []string{"--vendor", "stripe"}, ""},
		{"a known package as an argument of another", "npx", []string{"-y", "some-tool", "@stripe/mcp"}, ""},
		{"a local path spelled like a package", "npx", []string{"-y", "./node_modules/@stripe/mcp"}, ""},
		{"an npm alias", "npx", []string{"-y", "@stripe/mcp@npm:evil-package"}, ""},
		{"another registry", "npx", []string{"--registry=https://npm.evil.example", "@stripe/mcp"}, ""},
		{"two packages", "npx", []string{"-p", "evil", "-p", "@stripe/mcp", "mcp"}, ""},
		// A package flag's command is what runs (found by review).
		{"npx -p with another command", "npx", []string{"-y", "-p", "@modelcontextprotocol/server-github", "sh", "-c", "curl evil"}, ""},
		{"npx -p with another command after --", "npx", []string{"-p", "@modelcontextprotocol/server-github", "--", "node", "-e", "x"}, ""},
		{"uvx --from with another command", "uvx", []string{"--from", "mcp-server-fetch", "python", "-c", "x"}, ""},
		{"npx -p with the server's command after --", "npx", []string{"-p", "@modelcontextprotocol/server-github", "--", "mcp-server-github"}, "@modelcontextprotocol/server-github"},
		{"extra packages", "uvx", []string{"--with", "evil", "mcp-server-fetch"}, ""},
		{"a PyPI name through npm (not the same package)", "npx", []string{"-y", "mcp-server-fetch"}, ""},
		{"a command named like a known one", "/home/alice/bin/mcp-server-fetch-wrapper", nil, ""},
		{"a runner's subcommand missing", "pnpm", []string{"firecrawl-mcp"}, ""},
		{"not a network server", "npx", []string{"-y", "@modelcontextprotocol/server-filesystem", "/home/alice"}, ""},
		// Known servers.
		{"npx", "npx", []string{"-y", "@notionhq/notion-mcp-server"}, "@notionhq/notion-mcp-server"},
		{"npx with a version", "npx", []string{"-y", "@stripe/mcp@latest", "--tools=all"}, "@stripe/mcp"},
		{"npx --package", "npx", []string{"--package=@modelcontextprotocol/server-github", "mcp-server-github"}, "@modelcontextprotocol/server-github"},
		{"npx by path", "/usr/local/bin/npx", []string{"--yes", "--", "exa-mcp-server"}, "exa-mcp-server"},
		{"bunx", "bunx", []string{"tavily-mcp@0.1.4"}, "tavily-mcp"},
		{"pnpm dlx", "pnpm", []string{"dlx", "firecrawl-mcp"}, "firecrawl-mcp"},
		{"yarn dlx", "yarn", []string{"dlx", "-q", "@modelcontextprotocol/server-slack"}, "@modelcontextprotocol/server-slack"},
		{"npm exec", "npm", []string{"exec", "--yes", "--", "@modelcontextprotocol/server-brave-search"}, "@modelcontextprotocol/server-brave-search"},
		{"uvx", "uvx", []string{"mcp-server-fetch"}, "mcp-server-fetch"},
		{"uvx --from with a version", "uvx", []string{"--from", "mcp-server-sentry==0.6.2", "mcp-server-sentry"}, "mcp-server-sentry"},
		{"uv tool run", "uv", []string{"tool", "run", "mcp-server-fetch@latest"}, "mcp-server-fetch"},
		{"pipx run", "pipx", []string{"run", "mcp-server-fetch"}, "mcp-server-fetch"},
		{"GitHub's binary", "/usr/local/bin/github-mcp-server", []string{"stdio"}, "github-mcp-server"},
		{"an installed package's command", "mcp-server-github", nil, "mcp-server-github"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, _ := json.Marshal(tc.args)
			before := `{"mcpServers":{"x":{"command":` + quote(tc.command) + `,"args":` + string(args) + `}}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil || len(res.Imported) != 1 {
				t.Fatalf("%v %+v", err, res)
			}
			s := res.Imported[0]
			if tc.known == "" {
				if s.Network != "none" || s.Egress != nil || !strings.Contains(s.NetworkWhy, "x gets no network") {
					t.Fatalf("network %q egress %v: want none (%s)", s.Network, s.Egress, s.NetworkWhy)
				}
				return
			}
			if s.Network != "host" || !slices.Equal(s.Egress, []string{"public:443"}) || !strings.Contains(s.NetworkWhy, "x gets the network: it runs "+tc.known+",") {
				t.Fatalf("network %q egress %v why %q: want public:443 for %s", s.Network, s.Egress, s.NetworkWhy, tc.known)
			}
		})
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
