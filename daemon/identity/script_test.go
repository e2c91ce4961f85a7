package identity

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestScriptArg(t *testing.T) {
	tests := []struct {
		exe    string
		args   string // space-separated argv after argv[0]
		script string // "" : unidentified
	}{
		{"/usr/bin/node", "agent.js --port 3", "agent.js"},
		{"/usr/bin/node", "--no-warnings --max-old-space-size=4096 agent.js", "agent.js"},
		{"/usr/bin/node", "--title x agent.js", "agent.js"},
		{"/usr/bin/node", "-r ./evil.js agent.js", ""},
		{"/usr/bin/node", "--require=./evil.js agent.js", ""},
		{"/usr/bin/node", "--import ./evil.mjs agent.js", ""},
		{"/usr/bin/node", "--inspect agent.js", ""},
		{"/usr/bin/node", "-e code", ""},
		{"/usr/bin/node", "--some-new-option agent.js", ""}, // might take a value: refuse to guess
		{"/usr/bin/node", "", ""},
		{"/usr/bin/node", "-- agent.js", "agent.js"},
		{"/usr/bin/python3.12", "-u -W ignore agent.py", "agent.py"},
		{"/usr/bin/python3", "-Wignore -Bu agent.py x", "agent.py"},
		{"/usr/bin/python3", "-c print(1)", ""},
		{"/usr/bin/python3", "-Bc print(1)", ""},
		{"/usr/bin/python3", "-m http.server", ""},
		{"/usr/bin/bash", "-eu -o pipefail /opt/agent.sh", "/opt/agent.sh"},
		{"/usr/bin/bash", "+o posix agent.sh", "agent.sh"},
		{"/usr/bin/bash", "-c mcpcage", ""},
		{"/usr/bin/bash", "--rcfile x agent.sh", ""},
		{"/usr/bin/bash", "", ""},
		{"/bin/sh", "-", ""},
		{"/usr/bin/perl", "-w agent.pl", "agent.pl"},
		{"/usr/bin/perl", "-Ilib agent.pl", ""},
		{"/usr/bin/deno", "run -A agent.ts", "agent.ts"},
		{"/usr/bin/deno", "run --config evil agent.ts", ""},
		{"/usr/bin/bun", "run agent.ts", "agent.ts"},
		{"/usr/bin/php8.2", "-f agent.php", "agent.php"},
		{"/bin/busybox", "sh agent.sh", ""},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.exe)+" "+tt.args, func(t *testing.T) {
			g, ok := interpreterOf(tt.exe)
			if !ok {
				t.Fatalf("%s is not an interpreter", tt.exe)
			}
			var args []string
			if tt.args != "" {
				args = strings.Split(tt.args, " ")
			}
			got, why := g.scriptArg(args)
			if got != tt.script || (got == "") == (why == "") {
				t.Fatalf("script %q (why %q), want %q", got, why, tt.script)
			}
		})
	}
}

func TestInjectedEnvironment(t *testing.T) {
	tests := []struct {
		exe, env, want string
	}{
		{"/usr/bin/node", "PATH=/bin\x00NODE_OPTIONS=--max-old-space-size=4096 --no-warnings", ""},
		{"/usr/bin/node", "NODE_OPTIONS=--require /tmp/evil.js", "NODE_OPTIONS"},
		{"/usr/bin/node", "NODE_OPTIONS=--title x", ""},
		{"/usr/bin/node", "ELECTRON_RUN_AS_NODE=1", "ELECTRON_RUN_AS_NODE"},
		{"/usr/bin/bash", "BASH_FUNC_ls%%=() { evil; }", "BASH_FUNC_ls%%"},
		{"/usr/bin/bash", "BASH_ENV=/tmp/x", "BASH_ENV"},
		{"/usr/bin/bash", "BASH_ENV=", ""},
		{"/usr/bin/python3", "PYTHONPATH=/tmp/evil", "PYTHONPATH"},
		{"/usr/bin/python3", "LD_PRELOAD=/tmp/evil.so", "LD_PRELOAD"},
	}
	for _, tt := range tests {
		g, _ := interpreterOf(tt.exe)
		if got := g.injected([]byte(tt.env)); got != tt.want {
			t.Errorf("%s with %q: injected %q, want %q", tt.exe, tt.env, got, tt.want)
		}
	}
}

func TestInterpreterNames(t *testing.T) {
	for exe, want := range map[string]bool{"/usr/bin/node": true, "/usr/bin/python3.11": true, "/usr/bin/bash": true, "/bin/dash": true,
		"/usr/bin/zsh": true, "/usr/bin/perl5.36": true, "/usr/local/bin/bun": true, "/usr/bin/deno": true, "/usr/bin/ruby3.1": true,
		"/opt/Claude/claude": false, "/usr/bin/sleep": false, "/usr/bin/nodemon": false} {
		if got := IsInterpreter(exe); got != want {
			t.Errorf("IsInterpreter(%s) = %v, want %v", exe, got, want)
		}
	}
	rules := []Rule{{Name: "node-any", Exe: []string{"/usr/bin/node"}}, {Name: "my-agent", Exe: []string{"/usr/bin/node"}, Script: []string{"/a.js"}},
		{Name: "claude", Exe: []string{"/opt/Claude/claude"}}}
	for agent, want := range map[string]bool{"exe:/usr/bin/bash": true, "node-any": true, "my-agent": false, "claude": false,
		"script:/a.js": false, "exe:/opt/Claude/claude": false} {
		if got := AnyScript(agent, rules); got != want {
			t.Errorf("AnyScript(%s) = %v, want %v", agent, got, want)
		}
	}
}

func TestBind(t *testing.T) {
	const since = 1000
	tests := []struct {
		name      string
		parent    Stamp
		parentOK  bool
		shim      Stamp
		shimOK    bool
		unstamped uint64
		borrowed  bool
		binding   string
	}{
		{"exec before fork", Stamp{Exec: 2000}, true, Stamp{Start: 3000, Exec: 3001}, true, 0, false, BoundKernel},
		{"exec after fork", Stamp{Exec: 4000}, true, Stamp{Start: 3000, Exec: 3001}, true, 0, true, ""},
		{"exec at fork time", Stamp{Exec: 3000}, true, Stamp{Start: 3000, Exec: 3001}, true, 0, true, ""},
		{"parent exec'd after an unstamped shim", Stamp{Exec: 2000}, true, Stamp{}, false, 0, true, ""},
		{"parent older than the record", Stamp{}, false, Stamp{Start: 3000}, true, 0, false, BoundKernel},
		{"both older than the record", Stamp{}, false, Stamp{}, false, 0, false, "unverified"},
		{"shim forked before the record", Stamp{}, false, Stamp{Start: 500, Exec: 1500}, true, 0, false, "unverified"},
		{"lost stamps", Stamp{}, false, Stamp{Start: 3000}, true, 2, false, "unverified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bind(tt.parent, tt.parentOK, tt.shim, tt.shimOK, since, tt.unstamped)
			if errors.Is(err, ErrBorrowed) != tt.borrowed || (err != nil && !tt.borrowed) {
				t.Fatalf("err = %v, want borrowed %v", err, tt.borrowed)
			}
			if !strings.HasPrefix(b, tt.binding) || (tt.binding == "" && b != "") {
				t.Fatalf("binding %q, want %q", b, tt.binding)
			}
		})
	}
}

// nodeAgent runs `node [args] script` in dir; the script spawns a child
// (the shim's stand-in) and prints its pid.
func nodeAgent(t *testing.T, dir string, args ...string) (child int) {
	t.Helper()
	cmd := exec.Command("node", args...)
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		pid, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("node agent printed %q", s)
		}
		return pid
	case <-time.After(10 * time.Second):
		t.Fatal("node agent printed no child pid in 10s")
	}
	return 0
}

func TestNodeScriptsToldApart(t *testing.T) {
	_, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := `const c = require("child_process").spawn("sleep", ["30"], {stdio: "ignore"});
console.log(c.pid); setInterval(() => {}, 1000); // %s
`
	for _, name := range []string{"a.js", "b.js"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Replace(src, "%s", name, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := filepath.Join(dir, "a.js")
	rules := []Rule{{Name: "agent-a", Exe: []string{mustExe(t, "node")}, Script: []string{a}, ScriptSHA256: []string{sha(strings.Replace(src, "%s", "a.js", 1))}}}
	h := NewHasher()
	identify := func(args ...string) Process {
		t.Helper()
		p, err := h.Agent(nodeAgent(t, dir, args...))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pa := identify("a.js") // relative to the working directory
	pb := identify("--no-warnings", filepath.Join(dir, "b.js"))
	if !pa.Interpreter || pa.Script.Path != a || pa.Script.SHA256 != sha(strings.Replace(src, "%s", "a.js", 1)) {
		t.Errorf("a: %+v", pa)
	}
	if pb.Script.Path != filepath.Join(dir, "b.js") || pb.Script.SHA256 == pa.Script.SHA256 {
		t.Errorf("b: %+v", pb)
	}
	if n := Name(pa, rules); n != "agent-a" {
		t.Errorf("a named %q, want agent-a", n)
	}
	if n := Name(pb, rules); n != "script:"+filepath.Join(dir, "b.js") {
		t.Errorf("b named %q, want script:%s", n, filepath.Join(dir, "b.js"))
	}
	// a.js with b.js preloaded runs b's code: not a.js's identity.
	pr := identify("-r", "./b.js", "a.js")
	if pr.Script.Path != "" || !strings.Contains(pr.Script.Why, "-r") {
		t.Errorf("preloaded: %+v", pr)
	}
	if n := Name(pr, rules); n != "exe:"+pr.Exe {
		t.Errorf("preloaded named %q, want the bare interpreter", n)
	}
}

func mustExe(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
