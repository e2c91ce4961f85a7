package integration

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"

	"github.com/mcpcage/mcpcage/internal/testenv"
	"github.com/mcpcage/mcpcage/sandbox/landlock"
)

// attack runs the hostile helper through the test server's run_command
// tool and returns its one-line verdict.
func attack(t *testing.T, c *mcpClient, args ...string) string {
	t.Helper()
	out, _ := callText(t, c, "run_command", map[string]any{"command": filepath.Join(env.bin, "hostile"), "args": args})
	return strings.TrimSpace(out)
}

func TestEscapeSuite(t *testing.T) {
	d := startDaemon(t, "")
	// A file planted in root's real home, the delegator's home here.
	planted := fmt.Sprintf("/root/.mcpcage-itest-secret-%d", time.Now().UnixNano())
	if err := os.WriteFile(planted, []byte("top secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Remove(planted) }()
	// A setuid-root copy of the helper, to try to become root.
	suid := filepath.Join(env.bin, "hostile-suid")
	copyFile(t, filepath.Join(env.bin, "hostile"), suid)
	must(t, os.Chmod(suid, 0o4755), "chmod setuid")

	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	tests := []struct {
		name, attack, arg string
		want              string // prefix of the verdict
		logged            string // the syscall the daemon must report, if any
	}{
		{"read /etc/shadow", "read", "/etc/shadow", "DENIED", ""},
		{"read /etc/ssh host keys", "read", "/etc/ssh/ssh_host_ed25519_key", "DENIED", ""},
		{"read planted file in the user's home", "read", planted, "DENIED", ""},
		{"read the daemon's state", "read", filepath.Join(d.dir, "state", "seccomp.sock"), "DENIED", ""},
		{"write outside the mounts", "write", "/usr/local/pwned", "DENIED", ""},
		{"write into the repository", "write", filepath.Join(env.bin, "pwned"), "DENIED", ""},
		{"mount", "mount", "", "DENIED", "mount"},
		{"ptrace", "ptrace", "", "DENIED", "ptrace"},
		{"bpf", "bpf", "", "DENIED", "bpf"},
		{"unshare a user namespace", "unshare-user", "", "DENIED", "unshare"},
		{"keyctl", "keyctl", "", "DENIED", "add_key"},
		{"load a kernel module", "init-module", "", "DENIED", "finit_module"},
		{"raw socket", "raw-socket", "", "DENIED", ""},
		{"ICMP ping socket (no egress hook sees it)", "ping", "", "DENIED operation not permitted", ""},
		{"ICMPv6 ping socket", "ping6", "", "DENIED operation not permitted", ""},
		{"ping socket, protocol with garbage above 32 bits", "ping-high-bits", "", "DENIED operation not permitted", ""},
		{"vsock (the hypervisor's services)", "vsock", "", "DENIED operation not permitted", ""},
		{"SCTP socket", "sctp", "", "DENIED operation not permitted", ""},
		{"SCTP as SOCK_SEQPACKET's default protocol", "sctp-default", "", "DENIED operation not permitted", ""},
		{"DCCP socket (no connect hook)", "dccp", "", "DENIED operation not permitted", ""},
		{"socketpair of another family than unix", "socketpair-inet", "", "DENIED operation not permitted", ""},
		{"netlink sock_diag (the host's sockets)", "netlink-diag", "", "DENIED operation not permitted", ""},
		{"netlink route socket (getaddrinfo) still opens", "netlink-route", "", "ESCAPED", ""},
		{"io_uring", "io-uring", "", "DENIED", "io_uring_setup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{tt.attack}
			if tt.arg != "" {
				args = append(args, tt.arg)
			}
			got := attack(t, c, args...)
			if !strings.HasPrefix(got, tt.want) {
				t.Fatalf("%s: %q, want %s", tt.attack, got, tt.want)
			}
			if tt.logged != "" {
				d.waitLog(`msg="sandbox denied a system call"`)
				d.waitLog("syscall=" + tt.logged + " ")
			}
		})
	}
	t.Run("setuid binary does not give root", func(t *testing.T) {
		got, _ := callText(t, c, "run_command", map[string]any{"command": suid, "args": []string{"euid"}})
		if strings.TrimSpace(got) != "euid=65534" {
			t.Fatalf("setuid helper reports %q, want euid=65534", got)
		}
	})
	if _, err := os.Stat(filepath.Join(env.bin, "pwned")); err == nil {
		t.Fatal("the sandbox wrote into the host")
	}
	// The daemon kept serving throughout, and the denials were attributed.
	if !strings.Contains(d.log.String(), "session=") || !strings.Contains(d.log.String(), "action=EPERM") {
		t.Fatalf("denials not logged per session:\n%s", d.log.String())
	}
}

func TestLimits(t *testing.T) {
	setup(t) // env.bin is known after setup
	d := startDaemon(t, "[servers.small]\ncommand = [\""+filepath.Join(env.bin, "testserver")+"\"]\nmemory = \"96MiB\"\npids = 32\n")
	t.Run("fork bomb held by the pids limit", func(t *testing.T) {
		c := d.connect(t, "small", mcp.ProtocolVersion20251125)
		got := attack(t, c, "fork-bomb")
		if !strings.HasPrefix(got, "DENIED") {
			t.Fatalf("fork bomb: %q", got)
		}
		// Meanwhile another session is served normally.
		other := d.connect(t, "test", mcp.ProtocolVersion20251125)
		if echo, _ := callText(t, other, "echo", map[string]any{"text": "alive"}); echo != "alive" {
			t.Fatalf("other session: %q", echo)
		}
		_ = c.Close()
		d.waitLog("server hit its process limit")
	})
	t.Run("memory bomb ends the session with a clear error", func(t *testing.T) {
		c := d.connect(t, "small", mcp.ProtocolVersion20251125)
		_, err := c.CallTool(ctxT(t, 60*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "allocate", Arguments: map[string]any{"mib": 512}}})
		if err == nil {
			t.Fatal("allocating 512 MiB under a 96 MiB limit succeeded")
		}
		if code := c.shimExit(t); code == 0 {
			t.Fatal("shim exited 0")
		}
		if !strings.Contains(c.stderr.String(), "exceeded its memory limit of 96 MiB") {
			t.Fatalf("shim stderr: %q", c.stderr.String())
		}
		d.waitLog("server killed for exceeding its memory limit")
	})
	d.waitClean("limit tests")
}

func TestNonRootDelegatorRunsAsThemself(t *testing.T) {
	uid, home := testUser(t)
	d := startDaemon(t, "")
	d.openToOtherUsers(t)
	must(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700), "mkdir")
	must(t, os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), []byte("PRIVATE KEY"), 0o600), "plant key")
	must(t, os.Chown(filepath.Join(home, ".ssh", "id_ed25519"), uid, uid), "chown")
	c := d.connectAs(t, "test", uid)
	got, _ := callText(t, c, "env", map[string]any{"name": "HOME"})
	if !strings.Contains(got, fmt.Sprintf("uid=%d", uid)) {
		t.Fatalf("server identity %q, want uid %d", got, uid)
	}
	if v := attack(t, c, "read", filepath.Join(home, ".ssh", "id_ed25519")); !strings.HasPrefix(v, "DENIED") {
		t.Fatalf("reading the user's ssh key: %q", v)
	}
	// $HOME is a fresh private tmpfs: writable, but not the user's.
	sandboxHome := strings.TrimPrefix(strings.Fields(got)[0], "HOME=")
	if v := attack(t, c, "write", sandboxHome+"/note"); v != "ESCAPED" {
		t.Fatalf("writing the sandbox's own home: %q", v)
	}
	if _, err := os.Stat(filepath.Join(home, "note")); err == nil {
		t.Fatal("a write to $HOME reached the user's real home")
	}
}

// TestNoSetIDFilesLeftOnTheHost: nosuid on a sandbox's mounts holds only
// inside it, so a server could leave a set-user-ID program in a writable
// mount that runs, for whoever starts it on the host, as the server's
// user: root's, for a server run as root (found by a red-team helper:
// chmod 4755 and open(O_CREAT, 04755) both worked). Every way the hostile
// helper knows is refused, reported, and leaves no such file.
func TestNoSetIDFilesLeftOnTheHost(t *testing.T) {
	setup(t) // env.bin is known after setup
	for _, user := range []string{"", "root"} {
		t.Run("user="+cmp.Or(user, "default"), func(t *testing.T) {
			work := t.TempDir()
			must(t, os.Chmod(work, 0o777), "chmod")
			server := fmt.Sprintf("[servers.w]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n", filepath.Join(env.bin, "testserver"), work)
			if user != "" {
				server += fmt.Sprintf("user = %q\n", user)
			}
			d := startDaemon(t, server)
			c := d.connect(t, "w", mcp.ProtocolVersion20251125)
			got := attack(t, c, "setid", "/work")
			if !strings.HasPrefix(got, "DENIED no set-ID file") || !strings.Contains(got, "openat2: function not implemented") {
				t.Fatalf("setid: %q, want every way refused", got)
			}
			t.Logf("setid: %s", got)
			entries, err := os.ReadDir(work)
			must(t, err, "read the mount's source")
			for _, e := range entries {
				fi, err := os.Stat(filepath.Join(work, e.Name()))
				must(t, err, "stat")
				if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
					t.Fatalf("the server left %s %v on the host", e.Name(), fi.Mode())
				}
			}
			d.waitLog(`msg="sandbox denied a system call"`)
			d.waitLog("syscall=fchmodat ") // Go's Chmod
			d.waitLog("mode:04755")
		})
	}
}

func TestLandlockInSandbox(t *testing.T) {
	setup(t) // env.bin is known after setup
	testenv.Require(t, landlock.ABI() > 0, "Landlock in the kernel")
	server := "[servers.rootish]\ncommand = [\"" + filepath.Join(env.bin, "testserver") + "\"]\nuser = \"root\"\n"
	// Root without capabilities can write /run (a root-owned tmpfs in the
	// sandbox); only Landlock stops it, since /run is not a writable place.
	for _, tt := range []struct {
		landlock, want string
	}{{"auto", "DENIED"}, {"off", "ESCAPED"}} {
		t.Run("landlock="+tt.landlock, func(t *testing.T) {
			d := startDaemon(t, "[daemon]\nlandlock = \""+tt.landlock+"\"\n"+server)
			c := d.connect(t, "rootish", mcp.ProtocolVersion20251125)
			if got := attack(t, c, "write", "/run/x"); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("write /run/x with landlock=%s: %q, want %s", tt.landlock, got, tt.want)
			}
			if got := attack(t, c, "write", "/tmp/x"); got != "ESCAPED" {
				t.Fatalf("write /tmp/x (allowed): %q", got)
			}
			d.waitLog(`server runs as root inside its sandbox`)
		})
	}
}

func TestSecretInjection(t *testing.T) {
	setup(t) // env.bin is known after setup
	const secret = "s3cr3t-value-7f4c1d"
	d := startDaemon(t, "[servers.withsecret]\ncommand = [\""+filepath.Join(env.bin, "testserver")+"\"]\nenv = { API_TOKEN = \"secret:itest-token\" }\n")
	mcpcage := func(stdin string, args ...string) string {
		cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), append(args, "--socket", d.socket)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mcpcage %v: %v %s", args, err, out)
		}
		return string(out)
	}
	// Unset: a clear launch error.
	cmd := d.shimCmd("withsecret")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "mcpcage secret set itest-token") {
		t.Fatalf("launch without the secret: %v %q", err, stderr.String())
	}
	mcpcage(secret+"\n", "secret", "set", "itest-token")
	if ls := mcpcage("", "secret", "ls"); strings.TrimSpace(ls) != "itest-token" {
		t.Fatalf("secret ls = %q", ls)
	}
	c := d.connect(t, "withsecret", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "env", map[string]any{"name": "API_TOKEN"}); !strings.Contains(got, "API_TOKEN="+secret+" ") {
		t.Fatalf("server sees %q", got)
	}
	// The server puts it on a command line (mysql -pSECRET): the kernel's
	// copy of argv went into process.exec records and traces as it was
	// (found by a red-team helper).
	callText(t, c, "run_command", map[string]any{"command": "/bin/echo", "args": []any{"-p" + secret, "--token=" + secret, "plain"}})
	run := d.record(t, "process.exec", func(r map[string]any) bool { return strings.HasSuffix(str(r, "path"), "/echo") })
	if argv := fmt.Sprint(run["argv"]); strings.Contains(argv, secret) || !strings.Contains(argv, "[redacted]") || !strings.Contains(argv, "plain") {
		t.Fatalf("process.exec argv %s: want the secret redacted, the rest kept", argv)
	}
	// An agent puts the value, or a credential, in an argument's name:
	// the audit's redacted arguments kept every key as it was.
	const credential = "ghp_keyKEYkeyKEYkeyKEYkeyKEY0123"
	callText(t, c, "env", map[string]any{"name": "HOME", "x-" + secret: 1, credential: map[string]any{"password=" + secret: 2}})
	call := d.record(t, "tool.call", func(r map[string]any) bool {
		return strings.Contains(fmt.Sprint(r["arguments"]), "[redacted key")
	})
	if args := fmt.Sprint(call["arguments"]); strings.Contains(args, credential) || !strings.Contains(args, "HOME") {
		t.Errorf("tool.call arguments %s: want the credential-shaped key hidden, the rest kept", args)
	}
	// The server names an input request by the value it holds (2026-07-28
	// era; sampling is refused): the record's input_key and reason quoted
	// it (found by a review helper).
	modern := d.connectWith(t, "withsecret", "")
	_, _ = modern.CallTool(ctxT(t, 30e9), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "ask_client", Arguments: map[string]any{"kind": "sampling", "key_env": "API_TOKEN"}}})
	refused := d.record(t, "server.request", func(r map[string]any) bool { return str(r, "decision") == "deny" })
	if k := str(refused, "input_key"); strings.Contains(k, secret) || !strings.Contains(k, "[redacted]") {
		t.Errorf("server.request input_key %q: want the secret redacted", k)
	}
	_ = modern.Close()
	show := mcpcage("", "servers", "show", "withsecret")
	spec := mcpcage("", "servers", "show", "withsecret", "--spec")
	audit, err := os.ReadFile(filepath.Join(d.dir, "log", "audit.jsonl"))
	must(t, err, "read the audit log")
	for what, text := range map[string]string{"daemon log": d.log.String(), "servers show": show, "servers show --spec": spec, "shim stderr": c.stderr.String(), "audit log": string(audit)} {
		if strings.Contains(text, secret) {
			t.Errorf("the secret's value appears in the %s", what)
		}
	}
	if !strings.Contains(show, "API_TOKEN=secret:itest-token") {
		t.Errorf("servers show does not name the secret reference:\n%s", show)
	}
}

func TestServerFilesystemOnOneFolder(t *testing.T) {
	setup(t) // env.bin is known after setup
	_, err := exec.LookPath("mcp-server-filesystem")
	testenv.Require(t, err == nil, "@modelcontextprotocol/server-filesystem (npm install -g @modelcontextprotocol/server-filesystem)")
	project := t.TempDir()
	must(t, os.WriteFile(filepath.Join(project, "README.md"), []byte("hello project"), 0o644), "write")
	must(t, os.Chmod(project, 0o777), "chmod")
	outside := filepath.Join(filepath.Dir(project), "outside.txt")
	must(t, os.WriteFile(outside, []byte("not yours"), 0o644), "write")
	cfg := fmt.Sprintf("[servers.fs]\ncommand = [\"mcp-server-filesystem\", \"/work\"]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n"+
		"[servers.fshostile]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n",
		project, filepath.Join(env.bin, "testserver"), project)
	d := startDaemon(t, cfg)
	c := d.connect(t, "fs", mcp.ProtocolVersion20251125)
	if got, isErr := callText(t, c, "read_text_file", map[string]any{"path": "/work/README.md"}); isErr || !strings.Contains(got, "hello project") {
		t.Fatalf("read inside: %q (isError %v)", got, isErr)
	}
	if got, isErr := callText(t, c, "write_file", map[string]any{"path": "/work/new.txt", "content": "written in the cage"}); isErr {
		t.Fatalf("write inside: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(project, "new.txt")); err != nil || string(b) != "written in the cage" {
		t.Fatalf("host file after write: %q %v", b, err)
	}
	if got, isErr := callText(t, c, "list_directory", map[string]any{"path": "/work"}); isErr || !strings.Contains(got, "new.txt") {
		t.Fatalf("list: %q", got)
	}
	if got, isErr := callText(t, c, "read_text_file", map[string]any{"path": "/etc/passwd"}); !isErr {
		t.Fatalf("read outside the allowed folder succeeded: %.100q", got)
	}
	// A server whose own checks are bypassed still cannot see the rest.
	h := d.connect(t, "fshostile", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, h, "list_dir", map[string]any{"path": "/work"}); !strings.Contains(got, "README.md") {
		t.Fatalf("hostile list of the mount: %q", got)
	}
	if v := attack(t, h, "read", outside); !strings.HasPrefix(v, "DENIED") {
		t.Fatalf("hostile read of %s: %q", outside, v)
	}
}

// testUser returns a non-root user for delegation tests, creating it once.
func testUser(t *testing.T) (int, string) {
	t.Helper()
	const name = "mcpcage-itest"
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command("useradd", "--create-home", "--uid", "1742", "--user-group", name).CombinedOutput()
		if _, lerr := user.Lookup(name); err != nil && lerr != nil { // another run may have just added it
			t.Fatalf("useradd: %v %s", err, out)
		}
	}
	u, err := user.Lookup(name)
	must(t, err, "lookup test user")
	uid, _ := strconv.Atoi(u.Uid)
	return uid, u.HomeDir
}

// connectAs is connect with the shim running as uid.
func (d *daemon) connectAs(t *testing.T, name string, uid int) *mcpClient {
	t.Helper()
	d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	defer func() { d.shimCred = nil }()
	return d.connect(t, name, mcp.ProtocolVersion20251125)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err, "read %s", from)
	if err := os.Remove(to); !errors.Is(err, fs.ErrNotExist) {
		must(t, err, "remove %s", to)
	}
	must(t, os.WriteFile(to, b, 0o755), "write %s", to)
}

// TestAgentSecret: one agent's own value of a secret (mcpcage secret set
// NAME --agent) reaches that agent's sessions only; other agents get the
// default value.
func TestAgentSecret(t *testing.T) {
	setup(t)
	self, err := os.Executable()
	must(t, err, "executable")
	sh, err := filepath.EvalSymlinks("/bin/sh")
	must(t, err, "resolve /bin/sh")
	d := startDaemon(t, fmt.Sprintf("[agents.itest]\nexe = [%q]\n[agents.other]\nexe = [%q]\n[servers.withsecret]\ncommand = [%q]\nenv = { API_TOKEN = \"secret:gh-token\" }\n",
		self, sh, filepath.Join(env.bin, "testserver")))
	set := func(value string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"--socket", d.socket, "secret", "set", "gh-token"}, args...)...)
		cmd.Stdin = strings.NewReader(value + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := set("default-token-1234"); err != nil {
		t.Fatalf("secret set: %v %s", err, out)
	}
	if out, err := set("itest-own-token-5678", "--agent", "itest"); err != nil {
		t.Fatalf("secret set --agent itest: %v %s", err, out)
	}
	if out, err := set("x", "--agent", "nosuch"); err == nil || !strings.Contains(out, `no agent "nosuch" in the config`) {
		t.Fatalf("secret set for an unknown agent: %v %s", err, out)
	}
	if ls := d.mustCLI(t, "secret", "ls", "--agent", "itest"); strings.TrimSpace(ls) != "gh-token" {
		t.Fatalf("secret ls --agent itest = %q", ls)
	}
	c := d.connect(t, "withsecret", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "env", map[string]any{"name": "API_TOKEN"}); !strings.Contains(got, "API_TOKEN=itest-own-token-5678 ") {
		t.Fatalf("agent itest sees %q", got)
	}
	_ = c.Close()
	r := startRaw(t, d.viaShell("withsecret"))
	r.initialize()
	r.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"env","arguments":{"name":"API_TOKEN"}}}` + "\n")
	if l := r.response(`2`); !strings.Contains(l, "API_TOKEN=default-token-1234 ") {
		t.Fatalf("agent other sees %s", l)
	}
	r.closeInput()
	r.wait()
	if strings.Contains(d.log.String(), "itest-own-token-5678") {
		t.Error("the agent's secret appears in the daemon's log")
	}
}

// TestHiddenPathReplacedOnTheHostEndsTheSession: a hidden path is a mount
// on the host's dentry of it in the sandbox; when the host replaces it (a
// rename over a file, as an editor's save or passwd does; a directory
// removed and made again) the kernel drops that mount in every namespace,
// and the running session read the new file (found by a red-team helper).
// A hidden path that did not exist at the start was never masked. Now
// the session is killed once either is visible, and says why.
func TestHiddenPathReplacedOnTheHostEndsTheSession(t *testing.T) {
	setup(t)
	tests := []struct {
		name   string
		change func(t *testing.T, file, dir, later string)
		want   string // the path the record names
	}{
		{"a file renamed over", func(t *testing.T, file, _, _ string) {
			must(t, os.WriteFile(file+".new", []byte("new secret"), 0o644), "write")
			must(t, os.Rename(file+".new", file), "rename over the hidden file")
		}, "secret.txt"},
		{"a directory made again", func(t *testing.T, _, dir, _ string) {
			must(t, os.RemoveAll(dir), "remove the hidden directory")
			must(t, os.MkdirAll(dir, 0o755), "make it again")
		}, "sub"},
		{"a path made after the start", func(t *testing.T, _, _, later string) {
			must(t, os.WriteFile(later, []byte("new secret"), 0o644), "write")
		}, "later.txt"},
		{"a directory above it renamed, and the path made again", func(t *testing.T, file, _, _ string) {
			// The masks move with the renamed directory; the new file at
			// the old path is not masked.
			dir := filepath.Dir(file)
			must(t, os.Rename(dir, dir+".moved"), "rename the directory above")
			t.Cleanup(func() { _ = os.RemoveAll(dir + ".moved") })
			must(t, os.MkdirAll(dir, 0o755), "make it again")
			must(t, os.WriteFile(file, []byte("new secret"), 0o644), "write the file again")
		}, "secret.txt"},
		{"a directory above it renamed, and the file replaced there", func(t *testing.T, file, _, _ string) {
			// The mask moves with the directory; replacing the file at
			// its new place drops it, and nothing is at the old path
			// (found by a review of the check by statx, which looked at
			// the old path only).
			dir := filepath.Dir(file)
			must(t, os.Rename(dir, dir+".moved"), "rename the directory above")
			t.Cleanup(func() { _ = os.RemoveAll(dir + ".moved") })
			moved := filepath.Join(dir+".moved", filepath.Base(file))
			must(t, os.WriteFile(moved+".new", []byte("new secret"), 0o644), "write")
			must(t, os.Rename(moved+".new", moved), "rename over the moved hidden file")
		}, "secret.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(itestRoot, fmt.Sprintf("hidden-%d-%s", os.Getpid(), filepath.Base(t.TempDir())))
			must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755), "mkdir")
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			file, sub, later := filepath.Join(dir, "secret.txt"), filepath.Join(dir, "sub"), filepath.Join(dir, "later.txt")
			must(t, os.WriteFile(file, []byte("old secret"), 0o644), "write")
			d := startDaemon(t, fmt.Sprintf("[servers.h]\ncommand = [%q]\nhidden_paths = [%q, %q, %q]\n", filepath.Join(env.bin, "testserver"), file, sub, later))
			c := d.connect(t, "h", mcp.ProtocolVersion20251125)
			if got := attack(t, c, "read", file); strings.Contains(got, "secret") {
				t.Fatalf("the hidden file read at the start: %q", got)
			}
			tt.change(t, file, sub, later)
			lost := d.record(t, "sandbox.mask_lost", func(r map[string]any) bool { return str(r, "server") == "h" })
			if paths := fmt.Sprint(lost["paths"]); !strings.Contains(paths, filepath.Join(dir, tt.want)) {
				t.Fatalf("sandbox.mask_lost names %s, want %s", paths, tt.want)
			}
			end := d.record(t, "session.end", func(r map[string]any) bool { return str(r, "server") == "h" })
			if str(end, "reason") != string(api.ExitMaskLost) || !strings.Contains(str(end, "error"), "became visible") {
				t.Fatalf("session.end: %v, want reason mask_lost and why", end)
			}
		})
	}
}

// TestSecretsOfARunningSessionStayHidden: a session's records scrub every
// value its server was given, for as long as it runs. Two holes found by
// a red-team helper: once an administrator set a secret anew, a running
// session's records showed the old value (the server still holds it),
// and an admin server's arguments the kernel cut (31 bytes) were never
// checked for a secret's head, so a 40-byte token ran into the audit log
// as its first 31 bytes, readable by the user.
func TestSecretsOfARunningSessionStayHidden(t *testing.T) {
	setup(t) // env.bin is known after setup
	const (
		short = "short-old-9f3a1c"
		long  = "plainvalueAAAABBBBCCCCDDDDEEEEFFFFGGGG" // no credential look: only its being a secret hides it
	)
	d := startDaemon(t, "[servers.withsecrets]\ncommand = [\""+filepath.Join(env.bin, "testserver")+"\"]\nenv = { SHORT = \"secret:itest-short\", LONG = \"secret:itest-long\" }\n")
	set := func(name, value string) {
		cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), "secret", "set", name, "--socket", d.socket)
		cmd.Stdin = strings.NewReader(value + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("secret set %s: %v %s", name, err, out)
		}
	}
	set("itest-short", short)
	set("itest-long", long)
	c := d.connect(t, "withsecrets", mcp.ProtocolVersion20251125)
	run := func(marker string, args ...string) string {
		t.Helper()
		callText(t, c, "run_command", map[string]any{"command": "/bin/sh", "args": []string{"-c", "exec /bin/true " + marker + ` "$@"`, "sh", args[0]}})
		rec := d.record(t, "process.exec", func(r map[string]any) bool {
			return strings.HasSuffix(str(r, "path"), "/true") && strings.Contains(fmt.Sprint(r["argv"]), marker)
		})
		return fmt.Sprint(rec["argv"])
	}
	for _, tc := range []struct {
		name, marker, arg, hidden string
	}{
		{"an admin secret cut by the kernel", "m1", long, long[:8]},
		{"the same behind a flag", "m2", "--token=" + long, long[:8]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if argv := run(tc.marker, tc.arg); strings.Contains(argv, tc.hidden) || !strings.Contains(argv, "[redacted]") {
				t.Errorf("process.exec argv %s: want the secret redacted", argv)
			}
		})
	}
	// Set anew while the session runs: its server still holds the old
	// value, and its records still hide it.
	set("itest-short", "short-new-77b2e0")
	if argv := run("m3", "-p"+short); strings.Contains(argv, short) {
		t.Errorf("after the secret was set anew, process.exec argv %s shows the value the server holds", argv)
	}
}

// A consent for the files below one folder, held to it against the
// official filesystem server: found by a red-team helper, the prefix
// check the documentation taught (args.path.startsWith("/work/public/"))
// let "/work/public/../private/secret.txt" through, which the server
// resolves to the private file. pathUnder reads the path as the server
// resolves it: the traversal is refused before the server sees it.
func TestPathConditionHoldsAgainstTheFilesystemServer(t *testing.T) {
	setup(t)
	_, err := exec.LookPath("mcp-server-filesystem")
	testenv.Require(t, err == nil, "@modelcontextprotocol/server-filesystem (npm install -g @modelcontextprotocol/server-filesystem)")
	project := t.TempDir()
	for _, dir := range []string{"public", "private"} {
		must(t, os.MkdirAll(filepath.Join(project, dir), 0o755), "mkdir")
	}
	must(t, os.WriteFile(filepath.Join(project, "public", "notes.txt"), []byte("public notes"), 0o644), "write")
	must(t, os.WriteFile(filepath.Join(project, "private", "secret.txt"), []byte("PRIVATE KEY"), 0o644), "write")
	srv := fmt.Sprintf("command = [\"mcp-server-filesystem\", \"/work\"]\nmounts = [{ source = %q, target = \"/work\", readonly = true }]\n", project)
	d := consentDaemon(t, "[servers.fs]\n"+srv+"[servers.fsprefix]\n"+srv)
	// The hazard is real: a prefix check lets the server read the file.
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "fsprefix", "--tool", "read_text_file", "--when", `args.path.startsWith("/work/public/")`)
	p := d.connect(t, "fsprefix", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, p, "read_text_file", map[string]any{"path": "/work/public/../private/secret.txt"}); got != "PRIVATE KEY" {
		t.Fatalf("the traversal under a prefix check: %q; want the server to have read the private file (else this test shows nothing)", got)
	}
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "fs", "--tool", "read_text_file", "--when", `pathUnder(args.path, "/work/public")`)
	c := d.connect(t, "fs", mcp.ProtocolVersion20251125)
	if got, isErr := callText(t, c, "read_text_file", map[string]any{"path": "/work/public/notes.txt"}); isErr || got != "public notes" {
		t.Fatalf("read below the folder: %q (isError %v)", got, isErr)
	}
	for _, path := range []string{"/work/public/../private/secret.txt", "/work/private/secret.txt", "/work/public/./../private/secret.txt"} {
		if got, isErr := callText(t, c, "read_text_file", map[string]any{"path": path}); !isErr || strings.Contains(got, "PRIVATE") {
			t.Fatalf("read of %s under a consent for /work/public: %q (isError %v)", path, got, isErr)
		}
	}
}
