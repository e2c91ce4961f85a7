package clientsetup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/mcpcage/mcpcage/internal/jsonsplice"
)

// ProjectFile is the file in a project's folder where Claude Code reads
// the project's shared servers ("project" scope).
const ProjectFile = ".mcp.json"

// ProjectServers reports the servers of the projects' own files (each
// PROJECT/.mcp.json of the projects c's file data lists, read with read)
// that Claude Code would run NOT through mcpcage: those whose entry is
// not `mcpcage run NAME` and that no entry of the project's local scope
// shadows (Claude Code prefers a local entry of the same name, which
// setup cages). Setup does not rewrite such a file: its repository shares
// it, and a local entry setup added for it would start the project's
// command without Claude Code's own approval of project servers. Each
// note says whether Claude Code has approved the server, and what to do.
func ProjectServers(c Client, data []byte, mcpcage string, read func(path string) ([]byte, error)) []string {
	if c.Projects == "" {
		return nil
	}
	top, ok := jsonsplice.Members(data)
	if !ok {
		return nil
	}
	psp, ok := top[c.Projects]
	if !ok {
		return nil
	}
	projects, ok := jsonsplice.Members(psp.Of(data))
	if !ok {
		return nil
	}
	var notes []string
	for _, dir := range byPosition(projects) {
		if !filepath.IsAbs(dir) {
			continue
		}
		var project struct {
			Local      map[string]json.RawMessage `json:"mcpServers"`
			Enabled    []string                   `json:"enabledMcpjsonServers"`
			Disabled   []string                   `json:"disabledMcpjsonServers"`
			EnabledAll bool                       `json:"enableAllProjectMcpServers"`
		}
		if json.Unmarshal(projects[dir].Of(psp.Of(data)), &project) != nil {
			continue
		}
		path := filepath.Join(dir, ProjectFile)
		raw, err := read(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // nothing the project runs
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: could not be read (%v); its servers, if Claude Code reads any, were not looked at", path, err))
			continue
		}
		fileTop, ok := jsonsplice.Members(raw)
		if !ok {
			notes = append(notes, fmt.Sprintf("%s: not a JSON object; its servers, if Claude Code reads any, were not looked at", path))
			continue
		}
		ssp, ok := fileTop[c.Key]
		if !ok {
			continue
		}
		servers, ok := jsonsplice.Members(ssp.Of(raw))
		if !ok {
			continue
		}
		for _, name := range byPosition(servers) {
			if _, shadowed := project.Local[name]; shadowed {
				continue
			}
			// Caged only through this mcpcage itself: a project's own
			// ./bin/mcpcage is the project's program.
			e, refused, err := decodeEntry(servers[name].Of(ssp.Of(raw)))
			if err == nil && refused == "" && e.Command == mcpcage {
				if _, plain, ok := cagedRun(e); ok && plain {
					continue
				}
			}
			state := "not approved yet: Claude Code asks you before it starts it"
			switch {
			case slices.Contains(project.Disabled, name):
				continue // the user refused it: Claude Code never starts it
			case project.EnabledAll || slices.Contains(project.Enabled, name):
				state = "approved in Claude Code"
			}
			notes = append(notes, fmt.Sprintf("%s (project %s, its %s; %s): NOT through mcpcage. Setup does not rewrite a project's own file, which its repository shares. Refuse it in Claude Code (/mcp), or cage it under the same name in the project's local scope, which Claude Code prefers: add it as your server (mcpcage server add SERVER -- COMMAND...), then `claude mcp add --scope local %s -- %s run SERVER` in %s",
				name, dir, ProjectFile, state, name, mcpcage, dir))
		}
	}
	return notes
}
