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
		{"GitHub's binary found in a system directory", "github-mcp-server", []string{"stdio"}, "github-mcp-server"},
		// Found by a red-team review: a file of the user's can be anything.
		{"GitHub's binary in the user's home", "/home/alice/bin/github-mcp-server", []string{"stdio"}, ""},
		{"a known command not found in a system directory", "mcp-server-fetch", nil, ""},
		{"a relative path", "./github-mcp-server", nil, ""},
		{"a path through a system directory", "/usr/local/bin/../../../home/alice/github-mcp-server", nil, ""},
		{"a runner of the user's", "/home/alice/clone/npx", []string{"-y", "@modelcontextprotocol/server-github"}, ""},
		{"a runner not in a system directory", "pnpx", []string{"firecrawl-mcp"}, ""},
		{"uvx --python a version", "uvx", []string{"--python", "3.12", "mcp-server-fetch"}, "mcp-server-fetch"},
		{"uvx --python=cpython@3.12", "uvx", []string{"--python=cpython@3.12", "mcp-server-fetch"}, "mcp-server-fetch"},
		{"uvx --python an interpreter of the user's", "uvx", []string{"--python", "/home/u/evil", "mcp-server-fetch"}, ""},
		{"uvx --python= a path", "uvx", []string{"--python=./python", "mcp-server-fetch"}, ""},
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

// TestNetworkNotWhenRedirected: a known server's name does not count when
// the entry can change what runs under it: env a runner or the program it
// starts reads, or a working directory of its own (a project's
// node_modules, .npmrc). Found by a red-team review.
func TestNetworkNotWhenRedirected(t *testing.T) {
	const github = `"command":"npx","args":["-y","@modelcontextprotocol/server-github"]`
	for _, tc := range []struct {
		name  string
		entry string // members of the entry
		why   string // in NetworkWhy; "" = gets the network
	}{
		{"a credential only", github + `,"env":{"GITHUB_PERSONAL_ACCESS_TOKEN":"ghp_x","LOG_LEVEL":"debug"}`, ""},
		{"NODE_OPTIONS", github + `,"env":{"NODE_OPTIONS":"--require /home/u/evil.js"}`, "its env sets NODE_OPTIONS"},
		{"npm_config_registry", github + `,"env":{"npm_config_registry":"https://npm.evil.example"}`, "npm_config_registry"},
		{"NPM_CONFIG_USERCONFIG", github + `,"env":{"NPM_CONFIG_USERCONFIG":"/home/u/.npmrc"}`, "NPM_CONFIG_USERCONFIG"},
		{"PATH", github + `,"env":{"PATH":"/home/u/bin:/usr/bin"}`, "PATH"},
		{"LD_PRELOAD", github + `,"env":{"LD_PRELOAD":"/home/u/x.so"}`, "LD_PRELOAD"},
		{"UV_INDEX_URL", `"command":"uvx","args":["mcp-server-fetch"],"env":{"UV_INDEX_URL":"https://pypi.evil.example"}`, "UV_INDEX_URL"},
		{"PIP_INDEX_URL", `"command":"uvx","args":["mcp-server-fetch"],"env":{"PIP_INDEX_URL":"https://pypi.evil.example"}`, "PIP_INDEX_URL"},
		{"PYTHONPATH", `"command":"uvx","args":["mcp-server-fetch"],"env":{"PYTHONPATH":"/home/u/lib"}`, "PYTHONPATH"},
		{"a working directory", github + `,"cwd":"/home/alice/project"`, "working directory of its own"},
		{"a command's name with env", `"command":"/usr/local/bin/github-mcp-server","env":{"LD_LIBRARY_PATH":"/home/u"}`, "LD_LIBRARY_PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"x":{` + tc.entry + `}}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil || len(res.Imported) != 1 {
				t.Fatalf("%v %+v", err, res)
			}
			s := res.Imported[0]
			if tc.why == "" {
				if s.Network != "host" {
					t.Fatalf("network %q (%s): want host", s.Network, s.NetworkWhy)
				}
				return
			}
			if s.Network != "none" || s.Egress != nil || !strings.Contains(s.NetworkWhy, "x gets no network: ") || !strings.Contains(s.NetworkWhy, tc.why) {
				t.Fatalf("network %q egress %v why %q: want none, saying %q", s.Network, s.Egress, s.NetworkWhy, tc.why)
			}
		})
	}
}
