package clientsetup

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/api"
)

var update = flag.Bool("update", false, "rewrite testdata/clients golden files")

func testOptions() Options {
	return Options{Home: "/home/alice", IsDir: func(p string) bool { return p == "/home/alice/project" },
		RootOwned: func(p string) bool { return slices.Contains(rootsFiles, p) }}
}

// rootsFiles are the files of root's testOptions knows.
var rootsFiles = []string{"/usr/local/bin/github-mcp-server", "/usr/bin/mcp-server-github", "/usr/local/bin/npx", "/usr/bin/bunx",
	"/usr/bin/pnpm", "/usr/bin/yarn", "/usr/bin/npm", "/usr/bin/uvx", "/usr/bin/uv", "/usr/bin/pipx"}

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
	if len(res.Remote) != 0 {
		t.Fatalf("remote entries left as they are: %v", res.Remote)
	}
	byName := map[string]Server{}
	for _, s := range res.Imported {
		byName[s.Name] = s
	}
	if r := byName["claude-desktop-remote"]; r.URL != "https://mcp.example.com/sse" || len(r.Command) != 0 || !strings.Contains(strings.Join(r.Warnings, " "), "mcpcage login claude-desktop-remote") {
		t.Fatalf("remote entry imported as %+v", r)
	}
	fs, gh := byName["claude-desktop-filesystem"], byName["claude-desktop-github"]
	if fs.Network != "none" || len(fs.Mounts) != 1 || fs.Mounts[0].Source != "/home/alice/project" || fs.Mounts[0].Writable {
		t.Fatalf("filesystem server: %+v", fs)
	}
	if gh.Network != "host" || len(gh.Egress) == 0 {
		t.Fatalf("github server should get the network: %+v", gh)
	}
	const ghSecret = "claude-desktop-github.GITHUB_PERSONAL_ACCESS_TOKEN"
	if gh.Env["GITHUB_PERSONAL_ACCESS_TOKEN"] != "secret:"+ghSecret || gh.Secrets[ghSecret] != "ghp_example" || len(gh.Secrets) != 1 {
		t.Fatalf("the github token is not moved to the secret store: env %v, secrets %v", gh.Env, gh.Secrets)
	}
	if warnings := strings.Join(append(fs.Warnings, gh.Warnings...), "\n"); !strings.Contains(warnings, "npx") {
		t.Errorf("warnings lack npx:\n%s", warnings)
	}
	if !strings.Contains(gh.NetworkWhy, "gets the network: it runs @modelcontextprotocol/server-github, a known network server") || !strings.Contains(fs.NetworkWhy, "gets no network") {
		t.Errorf("why the network: %q, %q", gh.NetworkWhy, fs.NetworkWhy)
	}
	// Only the rewritten entries change; the rest stays byte for byte.
	if !strings.Contains(string(res.Config), `"globalShortcut": "Ctrl+Space"`) || !strings.Contains(string(res.Config), `"remote": {"command":"/usr/bin/mcpcage","args":["run","claude-desktop-remote"]}`) {
		t.Fatalf("unrelated content changed:\n%s", res.Config)
	}
	only, _ := Rewrite(Clients["claude-desktop"], before, Options{Home: "/home/alice", Only: []string{"github"}})
	if len(only.Imported) != 1 || len(only.Skipped) != 2 {
		t.Fatalf("--server github: imported %d skipped %v", len(only.Imported), only.Skipped)
	}
}

// TestRemoteEntries: url entries become remote servers; entries mcpcage
// cannot carry stay as they are, each with its reason.
func TestRemoteEntries(t *testing.T) {
	for _, tc := range []struct {
		name, entry string
		url         string // imported with this url; "" = left as it is
		note        string // the reason it was left
	}{
		{"streamable http", `{"type":"http","url":"https://mcp.tracker.example/mcp"}`, "https://mcp.tracker.example/mcp", ""},
		{"serverUrl", `{"serverUrl":"https://mcp.tracker.example/mcp"}`, "https://mcp.tracker.example/mcp", ""},
		{"older sse transport", `{"type":"sse","url":"https://old.example/sse"}`, "", "older HTTP+SSE transport"},
		{"static credential", `{"url":"https://mcp.tracker.example/mcp","headers":{"Authorization":"Bearer abc"}}`, "", "headers of its own"},
		{"credential in the url", `{"url":"https://mcp.tracker.example/mcp?api_key=abc"}`, "", "looks like a credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"x":` + tc.entry + `}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.url == "" {
				if res.Changed([]byte(before)) || len(res.Imported) != 0 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], tc.note) {
					t.Fatalf("changed %v, imported %v, notes %q", res.Changed([]byte(before)), res.Imported, res.Notes)
				}
				return
			}
			if len(res.Imported) != 1 || res.Imported[0].URL != tc.url || string(res.Config) != `{"mcpServers":{"x":{"command":"/usr/bin/mcpcage","args":["run","cursor-x"]}}}` {
				t.Fatalf("imported %+v, config %s", res.Imported, res.Config)
			}
		})
	}
}

// TestRewriteSurgical rewrites one entry of files written in many ways:
// every byte outside that entry's value stays as it was.
func TestRewriteSurgical(t *testing.T) {
	const caged = `{"command":"/usr/bin/mcpcage","args":["run","cursor-fs"]}`
	for _, tc := range []struct {
		name   string
		before string
		entry  string // the value replaced by caged
		server string // the imported server's name
	}{
		{"compact", `{"mcpServers":{"fs":{"command":"fs-server"}}}`, `{"command":"fs-server"}`, "cursor-fs"},
		{"indented with CRLF", "{\r\n  \"mcpServers\": {\r\n    \"fs\": {\r\n      \"command\": \"fs-server\"\r\n    }\r\n  }\r\n}\r\n",
			"{\r\n      \"command\": \"fs-server\"\r\n    }", "cursor-fs"},
		{"tabs, odd spacing, unknown keys kept in order", "{\"z\" : [1,2 ,3],\n\t\"mcpServers\" :{ \"fs\" : {\"args\":[],\"command\":\"fs-server\",\"x-extra\":{\"a\":1}} } ,\"a\":null}",
			`{"args":[],"command":"fs-server","x-extra":{"a":1}}`, "cursor-fs"},
		{"escaped key of the servers object", `{"mcp\u0053ervers":{"fs":{"command":"fs-server"}}}`, `{"command":"fs-server"}`, "cursor-fs"},
		{"escaped entry name", `{"mcpServers":{"f\u0073":{"command":"fs-server"}}}`, `{"command":"fs-server"}`, "cursor-fs"},
		{"non-ASCII kept byte for byte", `{"title":"caf\u00e9 é ✓","mcpServers":{"fs":{"command":"fs-server","env":{"NAME":"日本"}}}}`,
			`{"command":"fs-server","env":{"NAME":"日本"}}`, "cursor-fs"},
		{"nested mcpServers elsewhere untouched", `{"projects":{"/p":{"mcpServers":{"fs":{"command":"other"}}}},"mcpServers":{"fs":{"command":"fs-server"}}}`,
			`{"command":"fs-server"}`, "cursor-fs"},
		{"strings that look like JSON", `{"note":"}{\"mcpServers\":1","mcpServers":{"fs":{"command":"fs-server","args":["{\"a\":[]}"]}}}`,
			`{"command":"fs-server","args":["{\"a\":[]}"]}`, "cursor-fs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Rewrite(Clients["cursor"], []byte(tc.before), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Replace(tc.before, tc.entry, caged, 1)
			if diff := cmp.Diff(want, string(res.Config)); diff != "" {
				t.Errorf("rewritten file (-want +got):\n%s", diff)
			}
			if len(res.Imported) != 1 || res.Imported[0].Name != tc.server {
				t.Fatalf("imported %+v", res.Imported)
			}
		})
	}
}

func TestRewriteRejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string // in the error, which always ends "nothing was changed"
	}{
		{"truncated", `{"mcpServers": {`, "is not valid JSON"},
		{"line comment (JSONC)", "{\n // comment\n}", "is not valid JSON"},
		{"block comment", `{"mcpServers": /* mine */ {}}`, "is not valid JSON"},
		{"comment inside the servers", "{\"mcpServers\": {\n  // off: \"x\": {}\n}}", "is not valid JSON"},
		{"trailing comma", `{"mcpServers": {"x": {"command": "y"},}}`, "is not valid JSON"},
		{"byte order mark", "\ufeff{}", "is not valid JSON"},
		{"two documents", `{} {}`, "is not valid JSON"},
		{"array", `[1,2]`, "is not a JSON object"},
		{"invalid UTF-8", "{\"a\": \"\xff\"}", "is not a JSON object"},
		{"unpaired surrogate in a name", `{"mcpServers": {"\ud800": {"command": "y"}}}`, `"mcpServers" is not an object`},
		{"servers not an object", `{"mcpServers": []}`, `"mcpServers" is not an object`},
		{"entry of the wrong type", `{"mcpServers": {"x": {"command": 5}}}`, `server "x" is malformed`},
		{"entry not an object", `{"mcpServers": {"x": "y"}}`, `server "x" is malformed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Rewrite(Clients["cursor"], []byte(tc.in), testOptions())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "nothing was changed") {
				t.Errorf("Rewrite(%q) = %v, want an error saying %q", tc.in, err, tc.want)
			}
		})
	}
	for _, empty := range []string{"", "  ", "\n\t"} {
		if res, err := Rewrite(Clients["cursor"], []byte(empty), testOptions()); err != nil || res.Changed([]byte(empty)) {
			t.Errorf("empty file %q: %v", empty, err)
		}
	}
}

func TestDiff(t *testing.T) {
	d := Diff("c.json", []byte("a\nb\nc\n"), []byte("a\nB\nc\n"))
	if !strings.Contains(d, "- b\n+ B\n") || !strings.Contains(d, "  a\n") {
		t.Fatalf("diff:\n%s", d)
	}
}

// TestDockerEntries: `docker run` entries become image-based servers,
// or stay as they are with the reason.
func TestDockerEntries(t *testing.T) {
	const gh = "ghcr.io/github/github-mcp-server"
	for _, tc := range []struct {
		name  string
		args  string // the entry's args, JSON
		env   string // the entry's env, JSON
		want  func(Server) bool
		note  string // left as it is with this reason
		warns string // a warning that must be given
	}{
		{name: "the official GitHub entry", args: `["run","-i","--rm","-e","GITHUB_PERSONAL_ACCESS_TOKEN","` + gh + `"]`, env: `{"GITHUB_PERSONAL_ACCESS_TOKEN":"ghp_abc123"}`,
			want: func(s Server) bool {
				return s.Image == gh && s.Args == nil && s.Command == nil && s.Env["GITHUB_PERSONAL_ACCESS_TOKEN"] == "secret:cursor-x.GITHUB_PERSONAL_ACCESS_TOKEN" &&
					s.Secrets["cursor-x.GITHUB_PERSONAL_ACCESS_TOKEN"] == "ghp_abc123" && s.Network == "host" && slices.Equal(s.Egress, []string{"public:443"})
			}, warns: "any public address on port 443"},
		{name: "args after the image replace its CMD; values inline; -it", args: `["run","-it","--rm","--env=LOG=debug","-e","API_KEY=k1","` + gh + `","stdio","--toolsets","repos"]`,
			want: func(s Server) bool {
				return strings.Join(s.Args, " ") == "stdio --toolsets repos" && s.Env["LOG"] == "debug" && s.Secrets["cursor-x.API_KEY"] == "k1"
			}},
		{name: "entrypoint replaced", args: `["run","-i","--entrypoint","/bin/srv","img:1","a"]`,
			want: func(s Server) bool { return strings.Join(s.Command, " ") == "/bin/srv a" && s.Args == nil }},
		{name: "bind mounts, rw unless ro; workdir; no network", args: `["run","-i","-v","/home/alice/project:/work:ro","--mount","type=bind,src=~/out,dst=/out","-w","/work","--network","none","img"]`,
			want: func(s Server) bool {
				return len(s.Mounts) == 2 && !s.Mounts[0].Writable && s.Mounts[0].Target == "/work" && s.Mounts[1].Source == "/home/alice/out" && s.Mounts[1].Writable &&
					s.Workdir == "/work" && s.Network == "none" && s.Egress == nil
			}},
		{name: "docker's isolation gives way to the sandbox", args: `["run","-i","--cap-drop","ALL","--user","1000","img"]`, want: func(s Server) bool { return s.Image == "img" }, warns: "--cap-drop is dropped"},
		{name: "a variable from the client's environment", args: `["run","-i","-e","HOME_TOKEN","img"]`, want: func(s Server) bool { return len(s.Env) == 0 }, warns: "HOME_TOKEN from the client's environment"},
		{name: "named volume", args: `["run","-i","-v","data:/data","img"]`, note: "docker volume"},
		{name: "env file", args: `["run","-i","--env-file","/home/alice/.env","img"]`, note: "--env-file"},
		{name: "detached", args: `["run","-d","img"]`, note: "-d"},
		{name: "detached among short flags", args: `["run","-id","img"]`, note: "-id"},
		{name: "unknown flag", args: `["run","--sysctl","x=1","img"]`, note: "--sysctl"},
		{name: "flag without value", args: `["run","-i","-e"]`, note: "has no value"},
		{name: "no image", args: `["run","-i","--rm"]`, note: "without an image"},
		{name: "tmpfs mount", args: `["run","--mount","type=tmpfs,dst=/t","img"]`, note: "not a bind mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			if env == "" {
				env = "{}"
			}
			before := `{"mcpServers":{"x":{"command":"docker","args":` + tc.args + `,"env":` + env + `}}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.note != "" {
				if res.Changed([]byte(before)) || len(res.Imported) != 0 || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], tc.note) {
					t.Fatalf("changed %v, imported %+v, notes %q", res.Changed([]byte(before)), res.Imported, res.Notes)
				}
				return
			}
			if len(res.Imported) != 1 || !tc.want(res.Imported[0]) || string(res.Config) != `{"mcpServers":{"x":{"command":"/usr/bin/mcpcage","args":["run","cursor-x"]}}}` {
				t.Fatalf("imported %+v, config %s, notes %q", res.Imported, res.Config, res.Notes)
			}
			if !strings.Contains(strings.Join(append(res.Imported[0].Warnings, res.Imported[0].NetworkWhy), "\n"), tc.warns) {
				t.Fatalf("warnings %q lack %q", res.Imported[0].Warnings, tc.warns)
			}
			if b, _ := json.Marshal(res.Imported[0]); strings.Contains(string(b), "ghp_abc123") || strings.Contains(string(b), `"k1"`) {
				t.Fatalf("a credential is in the definition sent to the daemon: %s", b)
			}
		})
	}
	// An entry the daemon refused (Keep) stays, with the daemon's reason.
	before := `{"mcpServers":{"x":{"command":"docker","args":["run","-i","img"]}}}`
	o := testOptions()
	o.Keep = map[string]string{"x": "image img is not allowed"}
	if res, err := Rewrite(Clients["cursor"], []byte(before), o); err != nil || res.Changed([]byte(before)) || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "not allowed") {
		t.Fatalf("kept entry: %v %+v", err, res)
	}
}

func TestLooksSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"GITHUB_PERSONAL_ACCESS_TOKEN", true}, {"GITHUB_PAT", true}, {"API_KEY", true}, {"apiKey", true},
		{"DB_PASSWORD", true}, {"SENTRY_DSN", true}, {"X-Auth", true}, {"AWS_SECRET_ACCESS_KEY", true},
		{"PATH", false}, {"PYTHONPATH", false}, {"KEYBOARD_LAYOUT", false}, {"LOG_LEVEL", false}, {"MONKEY", false},
	} {
		if got := looksSecret(tc.name); got != tc.want {
			t.Errorf("looksSecret(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestValueLooksSecret: credentials that stay in plain text under a
// variable name that does not say so (Notion's headers, connection
// strings) are found by their value.
func TestValueLooksSecret(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{`{"Authorization": "Bearer ntn_1234567890abcdef", "Notion-Version": "2022-06-28"}`, true},
		{"Authorization: Basic dXNlcjpwYXNzd29yZA==", true},
		{"postgres://app:s3cret@db.example:5432/app", true},
		{"mongodb+srv://u:p%40ss@cluster0.example.net/db", true},
		{"redis://:hunter2@localhost:6379/0", true},
		{"host=db user=app password=s3cret dbname=app", true},
		{"ghp_0123456789abcdefghij0123456789abcd", true},
		{"postgres://app@db.example/app", false}, // a user, no password
		{"https://api.example.com/v1", false},
		{"/home/u/projects", false},
		{"debug", false},
		{"password reset page", false},
		{"Bearer", false},
	} {
		if got := valueLooksSecret(tc.value); got != tc.want {
			t.Errorf("valueLooksSecret(%q) = %v, want %v", tc.value, got, tc.want)
		}
	}
}

func TestMoveSecrets(t *testing.T) {
	s := Server{ServerDef: api.ServerDef{Name: "c-x"}}
	headers := `{"Authorization": "Bearer ntn_1234567890abcdef"}`
	s.moveSecrets(map[string]string{"PATH": "/usr/bin", "A TOKEN": "t1", "A-TOKEN": "t2", "OTHER": "secret:c-gh.GITHUB_TOKEN", "EMPTY_TOKEN": "",
		"OPENAPI_MCP_HEADERS": headers, "DATABASE_URL": "postgres://app:s3cret@db/app"},
		Options{secretsGiven: map[string]bool{}})
	want := map[string]string{"PATH": "/usr/bin", "A TOKEN": "secret:c-x.A-TOKEN", "A-TOKEN": "secret:c-x.A-TOKEN-2",
		"OTHER": "secret:c-x.OTHER", "EMPTY_TOKEN": "", "OPENAPI_MCP_HEADERS": "secret:c-x.OPENAPI_MCP_HEADERS",
		"DATABASE_URL": "secret:c-x.DATABASE_URL"}
	if diff := cmp.Diff(want, s.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	// "secret:NAME" in a client's entry is a literal, stored as such: it
	// never reaches another server's stored token.
	wantSecrets := map[string]string{"c-x.A-TOKEN": "t1", "c-x.A-TOKEN-2": "t2", "c-x.OTHER": "secret:c-gh.GITHUB_TOKEN",
		"c-x.OPENAPI_MCP_HEADERS": headers, "c-x.DATABASE_URL": "postgres://app:s3cret@db/app"}
	if diff := cmp.Diff(wantSecrets, s.Secrets); diff != "" {
		t.Errorf("secrets (-want +got):\n%s", diff)
	}
}

func TestCredentialArgsWarned(t *testing.T) {
	before := `{"mcpServers":{"x":{"command":"/opt/srv","args":["--api-key=abc123","--verbose","--token","t0k3n","--path","/p"]}}}`
	res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
	if err != nil || len(res.Imported) != 1 {
		t.Fatalf("%v %+v", err, res)
	}
	w := strings.Join(res.Imported[0].Warnings, "\n")
	if !strings.Contains(w, "argument --api-key passes") || !strings.Contains(w, "argument --token passes") || strings.Contains(w, "--path") || strings.Contains(w, "--verbose") {
		t.Fatalf("warnings:\n%s", w)
	}
}

// TestEntryKeysExactCase: an entry's members are read by their exact
// names, as the client reads them; one whose name is a known key in
// another case is left as it is, NOT reported as caged, with the reason
// (encoding/json read "COMMAND" as the command: a red-team review saw
// "already through mcpcage: gh" for an entry the client ran as node).
func TestEntryKeysExactCase(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry string
		note  string // left as it is with this in the reason; "" = imported
		runs  string // imported: its command
	}{
		{"a caged command in capitals", `{"command":"node","args":["/tmp/evil.js"],"COMMAND":"/usr/bin/mcpcage","ARGS":["run","cursor-gh"]}`, `member "ARGS"`, ""},
		{"an empty Command", `{"command":"node","args":["/tmp/evil.js"],"Command":""}`, `member "Command"`, ""},
		{"Env beside env", `{"command":"node","env":{"A":"1"},"Env":{"NODE_OPTIONS":"--require /tmp/x.js"}}`, `member "Env"`, ""},
		{"a url in capitals", `{"command":"node","URL":"https://x.example/mcp"}`, `member "URL"`, ""},
		{"exact names only", `{"command":"node","args":["/opt/s.js"],"note":"x"}`, "", "node /opt/s.js"},
		{"the last of two same names wins, as in JSON.parse", `{"command":"a","command":"node"}`, "", "node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"gh":` + tc.entry + `}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.note != "" {
				if res.Changed([]byte(before)) || len(res.Imported) != 0 || len(res.Unchanged) != 0 || len(res.Notes) != 1 ||
					!strings.Contains(res.Notes[0], tc.note) || !strings.Contains(res.Notes[0], "NOT through mcpcage") {
					t.Fatalf("changed %v, imported %+v, unchanged %v, notes %q", res.Changed([]byte(before)), res.Imported, res.Unchanged, res.Notes)
				}
				return
			}
			if len(res.Imported) != 1 || strings.Join(res.Imported[0].Command, " ") != tc.runs {
				t.Fatalf("imported %+v, notes %q", res.Imported, res.Notes)
			}
		})
	}
}

// TestSecretNamesUnique: no two servers of one run, and no secret of the
// user's, share a secret name. A red-team review found entry a's env
// b.TOKEN and entry a.b's TOKEN both stored as cursor-a.b.TOKEN: one
// server got the other's credential.
func TestSecretNamesUnique(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers string            // the mcpServers object
		inUse   []string          // names the user has
		want    map[string]string // secret -> value
	}{
		{"a dotted key and a dotted entry", `{"a":{"command":"x","env":{"b.TOKEN":"t1"}},"a.b":{"command":"x","env":{"TOKEN":"t2"}}}`, nil,
			map[string]string{"cursor-a.b-TOKEN": "t1", "cursor-a.b.TOKEN": "t2"}},
		{"dots anywhere in the key", `{"a":{"command":"x","env":{"..b..c.TOKEN.":"t1"}},"a.b.c":{"command":"x","env":{"TOKEN":"t2"}}}`, nil,
			map[string]string{"cursor-a.b-c-TOKEN": "t1", "cursor-a.b.c.TOKEN": "t2"}},
		{"a secret of the user's with the name", `{"a":{"command":"x","env":{"b TOKEN":"t1"}}}`, []string{"cursor-a.b-TOKEN"},
			map[string]string{"cursor-a.b-TOKEN-2": "t1"}},
		{"a key with no letters", `{"a":{"command":"x","env":{".":"secret:v"}}}`, nil, map[string]string{"cursor-a.env": "secret:v"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions()
			o.InUse = func(n string) bool { return slices.Contains(tc.inUse, n) }
			res, err := Rewrite(Clients["cursor"], []byte(`{"mcpServers":`+tc.servers+`}`), o)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, s := range res.Imported {
				for name, v := range s.Secrets {
					if _, dup := got[name]; dup {
						t.Errorf("secret %s given twice", name)
					}
					got[name] = v
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("secrets (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientPlaceholdersAreNotImported: a value the client fills in when
// it starts a server (VS Code's ${input:...}, Claude Code's ${VAR}) was
// imported as its text, so the server got "${input:api-key}" for its key
// (left in an earlier note). Such an entry is left as it is, saying why
// and what to do.
func TestClientPlaceholdersAreNotImported(t *testing.T) {
	for _, tc := range []struct {
		name, entry string
		want        string // the placeholder named; "" for an entry that is imported
	}{
		{"an input in env", `{"command": "/opt/srv", "env": {"API_KEY": "${input:api-key}"}}`, "${input:api-key}"},
		{"an env variable in args", `{"command": "/opt/srv", "args": ["--root", "${workspaceFolder}"]}`, "${workspaceFolder}"},
		{"Claude Code's expansion with a default", `{"command": "/opt/srv", "env": {"URL": "${API_URL:-https://x}"}}`, "${API_URL:-https://x}"},
		{"a dollar that is not one", `{"command": "/opt/srv", "env": {"PRICE": "$5", "RE": "^a{2}$"}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"x":` + tc.entry + `}}`
			res, err := Rewrite(Clients["cursor"], []byte(before), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(res.Imported) != 1 {
					t.Fatalf("not imported: %+v", res)
				}
				return
			}
			if len(res.Imported) != 0 || string(res.Config) != before {
				t.Fatalf("imported or changed: %+v\n%s", res.Imported, res.Config)
			}
			if notes := strings.Join(res.Notes, "\n"); !strings.Contains(notes, "uses "+tc.want) || !strings.Contains(notes, "NOT through mcpcage") {
				t.Fatalf("notes:\n%s", notes)
			}
		})
	}
}

// A folder inside another one the entry names is not mounted again: it
// shows through the outer mount, and mcpcaged refuses a target inside
// another mount of a user's server.
func TestImportMountsOutermostFolders(t *testing.T) {
	o := testOptions()
	o.IsDir = func(string) bool { return true }
	s := importEntry("fs", "c-fs", entry{Command: "/usr/bin/mcp-server-filesystem", Args: []string{"/srv/a/b", "/srv/a", "/srv/ab", "/srv/a/c/"}, Cwd: "/srv/a/b/c"}, o)
	var got []string
	for _, m := range s.Mounts {
		got = append(got, m.Source+":"+m.Target)
	}
	if want := []string{"/srv/a:/srv/a", "/srv/ab:/srv/ab"}; !slices.Equal(got, want) {
		t.Fatalf("mounts %v, want %v", got, want)
	}
}
