package clientsetup

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mcpcage/mcpcage/internal/jsonsplice"
)

// Claude Code keeps servers in two places of ~/.claude.json: the user's
// (top-level "mcpServers") and each project's, under
// "projects"."/path"."mcpServers" ("local" scope, what `claude mcp add`
// writes by default). A project's entry overrides the user's of the same
// name in that project, so setup rewrites both: a project's servers are
// named CLIENT-PROJECT-ENTRY, PROJECT being the project folder's name and
// a hash of its path (short, stable, and never another project's).

// entryRef is one entry of a client's file.
type entryRef struct {
	name  string          // the client's name for it
	label string          // how setup names it to the user: name, and its project if any
	base  string          // its server name before suffixes (ServerName)
	span  jsonsplice.Span // its value, in the file
}

// fileEntries lists the entries of a client's file (top: its top-level
// members): the top level's, then each project's, each in the file's
// order. Spans are the file's.
func fileEntries(c Client, data []byte, top map[string]jsonsplice.Span) ([]entryRef, error) {
	var refs []entryRef
	if sp, ok := top[c.Key]; ok {
		r, err := scopeEntries(data, sp, c.Name, "", fmt.Sprintf("%q", c.Key))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Path, err)
		}
		refs = append(refs, r...)
	}
	psp, ok := top[c.Projects]
	if c.Projects == "" || !ok {
		return refs, nil
	}
	projects, ok := jsonsplice.Members(psp.Of(data))
	if !ok {
		return refs, nil // not Claude Code's projects: nothing it runs
	}
	for _, path := range byPosition(projects) {
		project, ok := jsonsplice.Members(projects[path].Of(psp.Of(data)))
		if !ok {
			continue
		}
		sp, ok := project[c.Key]
		if !ok {
			continue
		}
		at := psp.Start + projects[path].Start
		sp = jsonsplice.Span{Start: at + sp.Start, End: at + sp.End}
		r, err := scopeEntries(data, sp, projectPrefix(c.Name, path), " (project "+path+")", fmt.Sprintf("%q of project %q", c.Key, path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Path, err)
		}
		refs = append(refs, r...)
	}
	return refs, nil
}

// scopeEntries lists the entries of the servers object at sp in data.
func scopeEntries(data []byte, sp jsonsplice.Span, prefix, suffix, what string) ([]entryRef, error) {
	members, ok := jsonsplice.Members(sp.Of(data))
	if !ok {
		return nil, fmt.Errorf("%s is not an object; nothing was changed", what)
	}
	var refs []entryRef
	for _, n := range byPosition(members) {
		m := members[n]
		refs = append(refs, entryRef{name: n, label: n + suffix, base: ServerName(prefix, n),
			span: jsonsplice.Span{Start: sp.Start + m.Start, End: sp.Start + m.End}})
	}
	return refs, nil
}

// byPosition lists members' names in the order of their values.
func byPosition(members map[string]jsonsplice.Span) []string {
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return members[names[i]].Start < members[names[j]].Start })
	return names
}

// projectPrefix begins the server names of a project's entries: the
// client's name, up to 16 bytes of the project folder's name, and 8 hex
// digits of the SHA-256 of its path.
func projectPrefix(client, path string) string {
	folder := strings.Trim(nameRe.ReplaceAllString(filepath.Base(path), "-"), "-.")
	if len(folder) > 16 {
		folder = strings.TrimRight(folder[:16], "-.")
	}
	sum := sha256.Sum256([]byte(path))
	if folder == "" {
		return client + "-" + hex.EncodeToString(sum[:4])
	}
	return client + "-" + folder + "-" + hex.EncodeToString(sum[:4])
}
