package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
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

// TestClientSetupKeepsYours: setup never replaces a server or secret the
// user made, and restore never removes one; entries whose names make the
// same server name get a server each; an entry that ran `mcpcage run`
// through PATH with a socket of its own runs setup's mcpcage instead,
// the socket dropped.
func TestClientSetupKeepsYours(t *testing.T) {
	d := startDaemon(t, "")
	home := t.TempDir()
	cfgPath := filepath.Join(home, ".config", "Claude", "claude_desktop_config.json")
	must(t, os.MkdirAll(filepath.Dir(cfgPath), 0o755), "mkdir")
	testserver := filepath.Join(env.bin, "testserver")
	d.mustCLI(t, "server", "add", "claude-desktop-tester", "--env", "MINE=1", "--", testserver)
	set := exec.Command(filepath.Join(env.bin, "mcpcage"), "--socket", d.socket, "secret", "set", "claude-desktop-other.API_TOKEN")
	set.Stdin = strings.NewReader("mine-0123456789\n")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("secret set: %v %s", err, out)
	}
	original := fmt.Sprintf(`{
  "mcpServers": {
    "tester": {"command": %[1]q},
    "tester ": {"command": %[1]q, "args": ["--second"]},
    "other": {"command": %[1]q, "env": {"API_TOKEN": "theirs-0123456789"}},
    "caged": {"command": "mcpcage", "args": ["run", "claude-desktop-tester"], "env": {"MCPCAGE_SOCKET": %[2]q}}
  }
}
`, testserver, d.socket)
	must(t, os.WriteFile(cfgPath, []byte(original), 0o644), "write client config")
	mine := func(when string) {
		t.Helper()
		if show := d.mustCLI(t, "servers", "show", "claude-desktop-tester", "--json"); !strings.Contains(show, `"MINE=1"`) || strings.Contains(show, "--second") {
			t.Fatalf("%s: the user's own server changed:\n%s", when, show)
		}
		if ls := d.mustCLI(t, "secret", "ls"); !strings.Contains(ls, "claude-desktop-other.API_TOKEN\n") {
			t.Fatalf("%s: the user's own secret is gone:\n%s", when, ls)
		}
	}

	out := d.mustCLI(t, "client", "setup", "claude-desktop", "--home", home)
	for _, want := range []string{"network: tester gets no network", "tester runs as server claude-desktop-tester-2: claude-desktop-tester is taken",
		"other runs as server claude-desktop-other-2", "repointed: caged ran `mcpcage run claude-desktop-tester` through \"mcpcage\" with a socket of its own"} {
		if !strings.Contains(out, want) {
			t.Errorf("setup's output lacks %q:\n%s", want, out)
		}
	}
	mine("after setup")
	after, _ := os.ReadFile(cfgPath)
	var parsed struct {
		MCPServers map[string]struct {
			Command string            `json:"command"`
			Args    []string          `json:"args"`
			Env     map[string]string `json:"env"`
		} `json:"mcpServers"`
	}
	must(t, json.Unmarshal(after, &parsed), "rewritten config")
	for entry, server := range map[string]string{"tester": "claude-desktop-tester-2", "tester ": "claude-desktop-tester-3", "other": "claude-desktop-other-2", "caged": "claude-desktop-tester"} {
		e := parsed.MCPServers[entry]
		if e.Command != filepath.Join(env.bin, "mcpcage") || strings.Join(e.Args, " ") != "run "+server {
			t.Errorf("entry %q: %s %v, want run %s", entry, e.Command, e.Args, server)
		}
	}
	if _, kept := parsed.MCPServers["caged"].Env["MCPCAGE_SOCKET"]; kept {
		t.Errorf("the repointed entry kept its socket of its own:\n%s", after)
	}
	if show := d.mustCLI(t, "servers", "show", "claude-desktop-tester-3"); !strings.Contains(show, "--second") {
		t.Fatalf("the second entry's server:\n%s", show)
	}

	d.mustCLI(t, "client", "restore", "claude-desktop", "--home", home)
	mine("after restore")
	if list := d.mustCLI(t, "servers"); strings.Contains(list, "claude-desktop-tester-") || strings.Contains(list, "claude-desktop-other") {
		t.Fatalf("restore left imported servers:\n%s", list)
	}
	if ls := d.mustCLI(t, "secret", "ls"); strings.Contains(ls, "claude-desktop-other-2") {
		t.Fatalf("restore left the imported secret:\n%s", ls)
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
	// The session's end prepares a sandbox for the next one; the server's
	// removal discards it (it stayed for warm_idle, with the user's mount
	// and image: found by a red-team helper).
	_ = c.Close()
	warmOf := func() string {
		st := d.status(t)
		if st.Warm == nil {
			return ""
		}
		for _, e := range st.Warm.Entries {
			if e.Server == "mine" {
				return e.Container
			}
		}
		return ""
	}
	testenv.WaitFor(t, "a warm sandbox for mine", 30*time.Second, func() (bool, string) {
		return warmOf() != "", fmt.Sprintf("%+v", d.status(t).Warm)
	})
	d.mustCLI(t, "server", "rm", "mine")
	testenv.WaitFor(t, "mine's warm sandbox discarded", 30*time.Second, func() (bool, string) {
		st := d.status(t).Warm
		return warmOf() == "" && st.Building == 0 && len(d.containers()) == 0, fmt.Sprintf("%+v, containers %v", st, d.containers())
	})
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
	// A capability url: the key in its path is in no
	// record or listing (found by a red-team helper).
	const key = "sk-ak-0123456789abcdef0123"
	d.mustCLI(t, "server", "add", "zap", "--url", "https://actions.example.com/mcp/"+key+"/sse")
	added := d.record(t, "server.add", func(r map[string]any) bool { return str(r, "server") == "zap" })
	if u := str(added, "url"); u != "https://actions.example.com/mcp/REDACTED/sse" {
		t.Fatalf("server.add url %q, want the key redacted", u)
	}
	// A token on a server's command line is in no record either.
	const token = "ghp_0123456789abcdefghijABCDEFGH"
	d.mustCLI(t, "server", "add", "withtoken", "--", "/bin/true", "--token", token)
	tokenAdd := d.record(t, "server.add", func(r map[string]any) bool { return str(r, "server") == "withtoken" })
	if args := fmt.Sprint(tokenAdd["command"], tokenAdd["args"]); strings.Contains(args, token) || !strings.Contains(args, "[redacted]") {
		t.Fatalf("server.add command %v args %v: want the token redacted", tokenAdd["command"], tokenAdd["args"])
	}
	if list := d.mustCLI(t, "servers"); strings.Contains(list, key) {
		t.Fatalf("servers shows the url's key:\n%s", list)
	}
}

// TestClientSetupDocker: a client's `docker run` entry (the official
// GitHub server's form) becomes an image-based server of the user's own,
// its credential moved to the user's secret store; an image the
// administrator does not allow, or a mount target inside another mount
// (see TestUserMountTargetsWhereTheUserChangesNothing), leaves its entry
// as it is; restore undoes it all. The image is built here and imported into containerd.
func TestClientSetupDocker(t *testing.T) {
	setup(t)
	uid, userHome := testUser(t)
	const ref, token = "docker.io/mcpcage/testserver:setup", "ghp_itest_0123456789abcdef"
	d := startDaemon(t, "[daemon]\nuser_images = [\"docker.io/mcpcage/*\"]\n")
	d.openToOtherUsers(t)
	archive := ociArchiveWith(t, ref, map[string]any{"Env": []string{"PATH=/bin"}, "Entrypoint": []string{"/bin/testserver"},
		"Cmd": []string{"--from-cmd"}, "WorkingDir": "/etc"})
	if out, err := exec.Command("ctr", "--address", env.containerd, "-n", d.namespace, "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("import image: %v %s", err, out)
	}

	home, err := os.MkdirTemp(userHome, "setup-")
	must(t, err, "home")
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	cfgPath := filepath.Join(home, ".config", "Claude", "claude_desktop_config.json")
	must(t, os.MkdirAll(filepath.Dir(cfgPath), 0o755), "mkdir")
	original := `{
  "mcpServers": {
    "github": {"command": "docker", "args": ["run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "-e", "LOG_LEVEL=debug", "mcpcage/testserver:setup", "stdio"],
               "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "` + token + `"}},
    "elsewhere": {"command": "docker", "args": ["run", "-i", "--rm", "ghcr.io/someone/server"]},
    "nested": {"command": "docker", "args": ["run", "-i", "--rm", "-v", "` + home + `:/data", "-v", "/etc/hostname:/data/x/h", "mcpcage/testserver:setup"]}
  }
}
`
	must(t, os.WriteFile(cfgPath, []byte(original), 0o600), "write client config")
	for _, p := range []string{home, filepath.Join(home, ".config"), filepath.Dir(cfgPath), cfgPath} {
		must(t, os.Chown(p, uid, uid), "chown")
	}

	out, err := d.cli(t, uid, "client", "setup", "claude-desktop", "--home", home)
	if err != nil {
		t.Fatalf("client setup: %v\n%s", err, out)
	}
	for _, want := range []string{"left as is: elsewhere: servers of your own may not run image ghcr.io/someone/server:latest",
		"left as is: nested: mount target /data/x/h lies inside the mount at /data",
		"github: a credential goes to your secret store as claude-desktop-github.GITHUB_PERSONAL_ACCESS_TOKEN", "now runs 1 server(s) through mcpcage"} {
		if !strings.Contains(out, want) {
			t.Errorf("setup output lacks %q:\n%s", want, out)
		}
	}
	after, _ := os.ReadFile(cfgPath)
	for what, text := range map[string]string{"setup's output": out, "the rewritten client config": string(after)} {
		if strings.Contains(text, token) {
			t.Errorf("the token is in %s", what)
		}
	}
	if !strings.Contains(string(after), `"github": {"command":`) || !strings.Contains(string(after), `"run","claude-desktop-github"]`) ||
		!strings.Contains(string(after), `"ghcr.io/someone/server"`) {
		t.Fatalf("rewritten config:\n%s", after)
	}
	if ls, err := d.cli(t, uid, "secret", "ls"); err != nil || strings.TrimSpace(ls) != "claude-desktop-github.GITHUB_PERSONAL_ACCESS_TOKEN" {
		t.Fatalf("the user's secrets: %v %q", err, ls)
	}
	if show, err := d.cli(t, uid, "servers", "show", "claude-desktop-github"); err != nil || !strings.Contains(show, "docker.io/mcpcage/testserver:setup") ||
		!strings.Contains(show, "(the image's entrypoint) stdio") {
		t.Fatalf("servers show: %v\n%s", err, show)
	}

	// The server runs from the image: its entrypoint with the entry's
	// args in place of the image's CMD, in the image's workdir, as the
	// user, with the credential from the user's store.
	c := d.connectAs(t, "claude-desktop-github", uid)
	if got, _ := callText(t, c, "env", map[string]any{"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}); !strings.Contains(got, "="+token+" ") || !strings.Contains(got, fmt.Sprintf(" uid=%d ", uid)) {
		t.Fatalf("the server's token and identity: %q", got)
	}
	if got, _ := callText(t, c, "env", map[string]any{"name": "LOG_LEVEL"}); !strings.HasPrefix(got, "LOG_LEVEL=debug ") {
		t.Fatalf("LOG_LEVEL: %q", got)
	}
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/proc/self/cmdline"}); got != "/bin/testserver\x00stdio\x00" {
		t.Fatalf("the server's argv: %q", got)
	}
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "where"}); got != "in /etc" {
		t.Fatalf("the image's working directory: %q", got)
	}
	_ = c.Close()
	d.waitClean("the image session")
	for _, rec := range d.auditRecords(t) {
		if b, _ := json.Marshal(rec); strings.Contains(string(b), token) {
			t.Fatalf("the token is in the audit log: %s", b)
		}
	}
	if strings.Contains(d.log.String(), token) {
		t.Fatal("the token is in the daemon's log")
	}

	if out, err := d.cli(t, uid, "client", "restore", "claude-desktop", "--home", home); err != nil {
		t.Fatalf("restore: %v %s", err, out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != original {
		t.Fatalf("restore did not bring the original back:\n%s", b)
	}
	if ls, _ := d.cli(t, uid, "secret", "ls"); strings.TrimSpace(ls) != "" {
		t.Fatalf("restore left the secret: %q", ls)
	}
	if list, _ := d.cli(t, uid, "servers"); strings.Contains(list, "claude-desktop-github") {
		t.Fatalf("restore left the server:\n%s", list)
	}
}

// TestClientRestoreByRootActsAsTheHomesOwner: root runs `mcpcage client
// restore` (or setup) for a user's home (sudo -E, --home). The home's
// state file says what the client's config is and where its backup is:
// a user who writes it names a file of root's (here a stand-in for
// /etc/sudoers.d/u) as the config and a file of theirs as the backup.
// Root wrote the user's file over root's. Now the command acts as the
// home's owner: the write is the user's, and refused.
func TestClientRestoreByRootActsAsTheHomesOwner(t *testing.T) {
	uid, d := userDaemon(t)
	_, userHome := testUser(t)
	home, err := os.MkdirTemp(userHome, "restore-")
	must(t, err, "home")
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	rootDir := filepath.Join(d.dir, "root-only")
	must(t, os.MkdirAll(rootDir, 0o755), "root's directory")
	victim := filepath.Join(rootDir, "sudoers-stand-in")
	must(t, os.WriteFile(victim, []byte("root's own\n"), 0o440), "root's file")
	planted := filepath.Join(home, "backup")
	must(t, os.WriteFile(planted, []byte("mcpcage-itest ALL=(ALL) NOPASSWD:ALL\n"), 0o440), "the user's file")
	state := filepath.Join(home, ".config", "mcpcage", "clients.json")
	must(t, os.MkdirAll(filepath.Dir(state), 0o700), "mkdir")
	must(t, os.WriteFile(state, []byte(fmt.Sprintf(`{"claude-desktop": {"path": %q, "backup": %q}}`, victim, planted)), 0o600), "state")
	for _, p := range []string{home, filepath.Join(home, ".config"), filepath.Dir(state), state, planted} {
		must(t, os.Chown(p, uid, uid), "chown")
	}
	out, err := d.cli(t, 0, "client", "restore", "claude-desktop", "--home", home)
	got, rerr := os.ReadFile(victim)
	must(t, rerr, "read root's file")
	if string(got) != "root's own\n" {
		t.Fatalf("root's file was overwritten by the user's (%q) through a restore run by root: %v\n%s", got, err, out)
	}
	// Refused as the user: the state file names another file than the
	// client's config (and, as the user, root's file could not be
	// written anyway).
	if err == nil || !strings.Contains(out, "acting as mcpcage-itest") || !(strings.Contains(out, "permission denied") || strings.Contains(out, "refused")) {
		t.Fatalf("restore by root for the user's home: %v\n%s\nwant it to act as the home's owner and be refused", err, out)
	}
}

// TestClientRestoreWritesOnlyTheClientsConfig: root running `client
// restore` for a home of root's whose ~/.config is a user's (a chrooted
// SFTP account's layout) acted as root on the user's state file, which
// named a file for root to write and one of the user's to write there
// (found by a red-team helper: a user's words in a root-only directory).
func TestClientRestoreWritesOnlyTheClientsConfig(t *testing.T) {
	d := startDaemon(t, "")
	uid, _ := testUser(t)
	home := filepath.Join(t.TempDir(), "home")
	must(t, os.Mkdir(home, 0o755), "home")
	cfgDir := filepath.Join(home, ".config")
	must(t, os.MkdirAll(filepath.Join(cfgDir, "mcpcage"), 0o755), "config")
	for _, p := range []string{cfgDir, filepath.Join(cfgDir, "mcpcage")} {
		must(t, os.Chown(p, uid, uid), "chown")
	}
	victimDir := t.TempDir() // root's, 0700
	victim := filepath.Join(victimDir, "owned")
	payload := filepath.Join(cfgDir, "payload")
	must(t, os.WriteFile(payload, []byte("written by the user's words"), 0o644), "payload")
	state, _ := json.Marshal(map[string]any{"claude-desktop": map[string]any{"path": victim, "backup": payload}})
	must(t, os.WriteFile(filepath.Join(cfgDir, "mcpcage", "clients.json"), state, 0o644), "state")
	must(t, os.Chown(filepath.Join(cfgDir, "mcpcage", "clients.json"), uid, uid), "chown state")
	out, err := d.cli(t, 0, "client", "restore", "claude-desktop", "--home", home)
	if err == nil {
		t.Fatalf("restore of a state file naming %s succeeded:\n%s", victim, out)
	}
	if _, err := os.Stat(victim); err == nil {
		t.Fatalf("root wrote %s where the user's state file said:\n%s", victim, out)
	}
	if !strings.Contains(out, "acting as") && !strings.Contains(out, "refused") {
		t.Fatalf("restore's error does not say why:\n%s", out)
	}
}

// TestClientSetupMovesCredentialsByValue: setup moved an entry's env
// values to the secret store only when the variable's name said it held
// a credential, so Notion's OPENAPI_MCP_HEADERS (an Authorization header)
// and a DATABASE_URL with a password became plain values of the imported
// server's definition (kept with it, shown by `mcpcage servers show`)
// (left in an earlier note). Values are now read too: the definition
// holds secret: references, and the server still gets the values.
func TestClientSetupMovesCredentialsByValue(t *testing.T) {
	d := startDaemon(t, "")
	home := t.TempDir()
	cfgPath := filepath.Join(home, ".config", "Claude", "claude_desktop_config.json")
	must(t, os.MkdirAll(filepath.Dir(cfgPath), 0o755), "mkdir")
	headers := `{"Authorization": "Bearer ntn_0123456789abcdef", "Notion-Version": "2022-06-28"}`
	dsn := "postgres://app:s3cret-dsn@db.example/app"
	entry, err := json.Marshal(map[string]any{"mcpServers": map[string]any{"notion": map[string]any{
		"command": filepath.Join(env.bin, "testserver"),
		"env":     map[string]string{"OPENAPI_MCP_HEADERS": headers, "DATABASE_URL": dsn, "LOG_LEVEL": "debug"}}}})
	must(t, err, "marshal")
	must(t, os.WriteFile(cfgPath, entry, 0o644), "write client config")
	out := d.mustCLI(t, "client", "setup", "claude-desktop", "--home", home)
	after, err := os.ReadFile(cfgPath)
	must(t, err, "read the rewritten config")
	if strings.Contains(string(after), "ntn_") || strings.Contains(string(after), "s3cret-dsn") {
		t.Fatalf("the client's file still holds the credentials:\n%s\nsetup said:\n%s", after, out)
	}
	show := d.mustCLI(t, "servers", "show", "claude-desktop-notion", "--json")
	for _, want := range []string{"OPENAPI_MCP_HEADERS=secret:claude-desktop-notion.OPENAPI_MCP_HEADERS", "DATABASE_URL=secret:claude-desktop-notion.DATABASE_URL", "LOG_LEVEL=debug"} {
		if !strings.Contains(show, want) {
			t.Errorf("the imported server lacks %s:\n%s", want, show)
		}
	}
	c := d.connect(t, "claude-desktop-notion", mcp.ProtocolVersion20251125)
	for name, value := range map[string]string{"OPENAPI_MCP_HEADERS": headers, "DATABASE_URL": dsn} {
		if got, _ := callText(t, c, "env", map[string]any{"name": name}); !strings.Contains(got, name+"="+value+" ") {
			t.Errorf("the server's %s: %q, want the value from the secret store", name, got)
		}
	}
}

// TestClientSetupReportsProjectFiles: Claude Code runs the servers of a
// project's own .mcp.json once the user approves them, and setup neither
// rewrote nor mentioned them, so "all caged" hid them (left in an earlier
// note). They are reported NOT through mcpcage, with what to do; the
// project's file is not changed.
func TestClientSetupReportsProjectFiles(t *testing.T) {
	d := startDaemon(t, "")
	home, project, linked := t.TempDir(), t.TempDir(), t.TempDir()
	shared := `{"mcpServers": {"repo-tool": {"command": "node", "args": ["tool.js"]}}}`
	must(t, os.WriteFile(filepath.Join(project, ".mcp.json"), []byte(shared), 0o644), "write the project's file")
	// A project whose file is a symbolic link, which Claude Code follows
	// (found by a review: setup skipped it).
	elsewhere := filepath.Join(t.TempDir(), "servers.json")
	must(t, os.WriteFile(elsewhere, []byte(`{"mcpServers": {"linked-tool": {"command": "./bin/mcpcage", "args": ["run", "x"]}}}`), 0o644), "write")
	must(t, os.Symlink(elsewhere, filepath.Join(linked, ".mcp.json")), "symlink")
	cfg, err := json.Marshal(map[string]any{"projects": map[string]any{project: map[string]any{"enabledMcpjsonServers": []string{"repo-tool"}}, linked: map[string]any{}}})
	must(t, err, "marshal")
	must(t, os.WriteFile(filepath.Join(home, ".claude.json"), cfg, 0o600), "write ~/.claude.json")
	out := d.mustCLI(t, "client", "setup", "claude-code", "--home", home)
	for _, want := range []string{fmt.Sprintf("repo-tool (project %s, its .mcp.json; approved in Claude Code): NOT through mcpcage", project),
		fmt.Sprintf("linked-tool (project %s, its .mcp.json; not approved yet", linked)} {
		if !strings.Contains(out, want) {
			t.Errorf("setup's output lacks %q:\n%s", want, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(project, ".mcp.json")); string(b) != shared {
		t.Fatalf("setup changed the project's own file:\n%s", b)
	}
}
