package clientsetup

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/internal/jsonsplice"
)

// TestProjectEntries: Claude Code's per-project servers ("local" scope,
// `claude mcp add`'s default, which overrides the user's of the same
// name) are caged too, each project's under names of its own. A red-team
// review found them never rewritten.
func TestProjectEntries(t *testing.T) {
	const p1, p2 = "/home/alice/work/app", "/srv/app"
	a1, a2 := projectPrefix("claude-code", p1), projectPrefix("claude-code", p2)
	for _, tc := range []struct {
		name     string
		projects string            // the "projects" member's value
		only     []string          // --server
		want     map[string]string // "PATH ENTRY" -> the server it runs ("" = as it was)
		note     string            // in a note
	}{
		{name: "a project's entry of the user's entry's name", projects: `{"` + p1 + `":{"mcpServers":{"gh":{"command":"gh-local"}}}}`,
			want: map[string]string{" gh": "claude-code-gh", p1 + " gh": a1 + "-gh"}},
		{name: "two projects, one folder name", projects: `{"` + p1 + `":{"mcpServers":{"x":{"command":"a"}}},"` + p2 + `":{"mcpServers":{"x":{"command":"b"}}}}`,
			want: map[string]string{" gh": "claude-code-gh", p1 + " x": a1 + "-x", p2 + " x": a2 + "-x"}},
		{name: "selected by its name", projects: `{"` + p1 + `":{"mcpServers":{"x":{"command":"a"}}}}`, only: []string{"x"},
			want: map[string]string{" gh": "", p1 + " x": a1 + "-x"}},
		{name: "selected by its label", projects: `{"` + p1 + `":{"mcpServers":{"gh":{"command":"a"}}}}`, only: []string{"gh (project " + p1 + ")"},
			want: map[string]string{" gh": "", p1 + " gh": a1 + "-gh"}},
		{name: "a project's entry refused", projects: `{"` + p1 + `":{"mcpServers":{"x":{"command":"a","COMMAND":"b"}}}}`,
			want: map[string]string{" gh": "claude-code-gh", p1 + " x": ""}, note: "x (project " + p1 + "): has a member"},
		{name: "projects without servers", projects: `{"` + p1 + `":{"allowedTools":[]},"` + p2 + `":[],"/p":{"mcpServers":{}}}`,
			want: map[string]string{" gh": "claude-code-gh"}},
		{name: "projects not an object", projects: `[]`, want: map[string]string{" gh": "claude-code-gh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"gh":{"command":"gh-user"}},"projects":` + tc.projects + `}`
			o := testOptions()
			o.Only = tc.only
			res, err := Rewrite(Clients["claude-code"], []byte(before), o)
			if err != nil {
				t.Fatal(err)
			}
			for key, srv := range tc.want {
				path, name, _ := strings.Cut(key, " ")
				got, want := entryAt(res.Config, path, name), entryAt([]byte(before), path, name)
				if srv != "" {
					want = `{"type":"stdio","command":"/usr/bin/mcpcage","args":["run","` + srv + `"]}`
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s (-want +got):\n%s", key, diff)
				}
			}
			if tc.note != "" && (len(res.Notes) != 1 || !strings.Contains(res.Notes[0], tc.note)) {
				t.Errorf("notes %q, want %q", res.Notes, tc.note)
			}
			if again, err := Rewrite(Clients["claude-code"], res.Config, o); err != nil || len(again.Imported) != 0 {
				t.Fatalf("a second run: %v, imported %+v", err, again)
			}
		})
	}
	before := `{"projects":{"/p":{"mcpServers":[]}}}`
	if _, err := Rewrite(Clients["claude-code"], []byte(before), testOptions()); err == nil || !strings.Contains(err.Error(), `"mcpServers" of project "/p" is not an object`) {
		t.Fatalf("a project's servers not an object: %v", err)
	}
}

// entryAt is the value of entry name of project path ("": the user's)
// in doc.
func entryAt(doc []byte, path, name string) string {
	top, _ := jsonsplice.Members(doc)
	obj := top["mcpServers"].Of(doc)
	if path != "" {
		projects := top["projects"].Of(doc)
		pm, _ := jsonsplice.Members(projects)
		project := pm[path].Of(projects)
		m, _ := jsonsplice.Members(project)
		obj = m["mcpServers"].Of(project)
	}
	m, _ := jsonsplice.Members(obj)
	return string(m[name].Of(obj))
}

// TestProjectPrefix: a project's server names fit mcpcaged's pattern,
// whatever its path, and differ between projects.
func TestProjectPrefix(t *testing.T) {
	serverName := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`) // config/config.go
	seen := map[string]string{}
	for _, path := range []string{"/", "/home/alice/project", "/home/bob/project", "/home/a/проект", "/home/a/" + strings.Repeat("very-long-name", 9), "/x/.hidden", "C:\\Users\\a b"} {
		p := projectPrefix("claude-code", path)
		if n := ServerName(p, strings.Repeat("e", 80)); !serverName.MatchString(n) {
			t.Errorf("project %q: server name %q is not one mcpcaged accepts", path, n)
		}
		if other, ok := seen[p]; ok {
			t.Errorf("projects %q and %q share the prefix %s", path, other, p)
		}
		seen[p] = path
	}
}

// TestProjectServersReported: a project's own .mcp.json servers, which
// Claude Code runs once approved and setup does not rewrite, are reported
// NOT through mcpcage (left in an earlier note: they were not read at
// all), unless a local entry of the name shadows them, they run `mcpcage
// run NAME`, or the user refused them.
func TestProjectServersReported(t *testing.T) {
	config := `{"projects": {
	  "/work/a": {"mcpServers": {"shadowed": {"command": "/usr/bin/mcpcage", "args": ["run", "x"]}}, "enabledMcpjsonServers": ["approved"], "disabledMcpjsonServers": ["refused"]},
	  "/work/b": {"enableAllProjectMcpServers": true},
	  "/work/none": {},
	  "/work/c": {},
	  "relative": {}
	}}`
	files := map[string]string{
		"/work/a/.mcp.json": `{"mcpServers": {
		  "approved": {"command": "npx", "args": ["-y", "some-server"]},
		  "pending": {"command": "./tool"},
		  "shadowed": {"command": "node", "args": ["evil.js"]},
		  "refused": {"command": "node"},
		  "caged": {"command": "/usr/bin/mcpcage", "args": ["run", "y"]},
		  "look-alike": {"command": "./bin/mcpcage", "args": ["run", "github"]}}}`,
		"/work/b/.mcp.json":    `{"mcpServers": {"all": {"command": "python3", "args": ["-m", "srv"]}}}`,
		"/work/none/.mcp.json": `[1, 2]`,
	}
	read := func(p string) ([]byte, error) {
		if f, ok := files[p]; ok {
			return []byte(f), nil
		}
		if p == "/work/c/.mcp.json" {
			return nil, os.ErrPermission
		}
		return nil, os.ErrNotExist
	}
	notes := ProjectServers(Clients["claude-code"], []byte(config), "/usr/bin/mcpcage", read)
	want := []string{
		"approved (project /work/a, its .mcp.json; approved in Claude Code): NOT through mcpcage",
		"pending (project /work/a, its .mcp.json; not approved yet",
		"look-alike (project /work/a, its .mcp.json; not approved yet", // the project's own mcpcage
		"all (project /work/b, its .mcp.json; approved in Claude Code)",
		"/work/none/.mcp.json: not a JSON object",
		"/work/c/.mcp.json: could not be read",
	}
	if len(notes) != len(want) {
		t.Fatalf("%d notes, want %d:\n%s", len(notes), len(want), strings.Join(notes, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(notes[i], w) {
			t.Errorf("note %d = %q, want it to contain %q", i, notes[i], w)
		}
	}
	if !strings.Contains(notes[0], "claude mcp add --scope local approved -- /usr/bin/mcpcage run SERVER") {
		t.Errorf("the note does not say how to cage it: %s", notes[0])
	}
	if ProjectServers(Clients["cursor"], []byte(config), "/usr/bin/mcpcage", read) != nil {
		t.Error("a client without projects reported project files")
	}
}
