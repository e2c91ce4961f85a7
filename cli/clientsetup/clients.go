// Package clientsetup rewrites MCP clients' configurations so that every
// local (stdio) server runs through mcpcage: each entry's command becomes
// `/usr/bin/mcpcage run NAME` (an absolute path, never a name looked up
// in PATH), and the original command becomes a user-scoped mcpcage server
// definition with a conservative sandbox: no network unless it runs a
// known network server, named exactly (network.go). NAME is unique: an
// entry whose name another entry, or a server or secrets the user has,
// already take gets a suffix, so setup never replaces what it did not
// make (names.go). Remote (url)
// entries become remote mcpcage servers (streamable HTTP, the sign-in
// kept by the daemon); entries that cannot work through mcpcage (the
// older HTTP+SSE transport, static credential headers, `docker run`) are
// left untouched and reported with the reason. An entry's members are
// read by their exact names, as the clients' JSON.parse reads them; an
// entry with a member named like one of them in another case ("COMMAND")
// is left as it is, reported NOT through mcpcage (entry.go).
//
// Claude Code's per-project servers (projects."/path".mcpServers in
// ~/.claude.json) are rewritten as well, under names of their own
// (scopes.go).
//
// Rewrites are surgical: only the rewritten entries' bytes change, so the
// rest of the file keeps its order, formatting and unknown keys
// (internal/jsonsplice finds the spans). A file that is not plain JSON
// (comments, trailing commas, invalid UTF-8) is refused, never rewritten.
// Running setup twice changes nothing the second time.
//
// An imported [Server] is an [api.ServerDef], the request of `mcpcage
// server add`: importing a client entry and adding a server by hand are the
// same act, so they share one shape and one path through the daemon's
// checks. The daemon keeps what it accepted in its own on-disk form
// (daemon/userservers) and runs it as a config.Server.
package clientsetup

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Client describes where and how a client keeps its MCP servers.
type Client struct {
	Name string
	// Path of the config relative to the user's home.
	Path string
	// Key of the object holding the servers ("mcpServers" or "servers").
	Key string
	// StdioType, when set, is written as the rewritten entry's "type".
	StdioType string
	// Projects, when set, is the key of an object of projects by path,
	// each with servers of its own under Key (scopes.go).
	Projects string
}

// Clients are the supported clients (Linux locations).
var Clients = map[string]Client{
	"claude-desktop": {Name: "claude-desktop", Path: ".config/Claude/claude_desktop_config.json", Key: "mcpServers"},
	"claude-code":    {Name: "claude-code", Path: ".claude.json", Key: "mcpServers", StdioType: "stdio", Projects: "projects"},
	"cursor":         {Name: "cursor", Path: ".cursor/mcp.json", Key: "mcpServers"},
	"vscode":         {Name: "vscode", Path: ".config/Code/User/mcp.json", Key: "servers", StdioType: "stdio"},
	"windsurf":       {Name: "windsurf", Path: ".codeium/windsurf/mcp_config.json", Key: "mcpServers"},
}

// Names lists the supported clients.
func Names() []string {
	var n []string
	for k := range Clients {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup finds a client by name.
func Lookup(name string) (Client, error) {
	c, ok := Clients[name]
	if !ok {
		return c, fmt.Errorf("unknown client %q: supported are %s", name, strings.Join(Names(), ", "))
	}
	return c, nil
}

// ConfigPath is the client's config file for a home directory.
func (c Client) ConfigPath(home string) string { return filepath.Join(home, c.Path) }

// Exists reports whether the client's config file exists.
func (c Client) Exists(home string) bool {
	_, err := os.Stat(c.ConfigPath(home))
	return err == nil
}
