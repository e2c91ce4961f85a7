package identity

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestScriptArg(t *testing.T) {
	tests := []struct {
		exe    string
		args   string // space-separated argv after argv[0]
		script string // "" : unidentified
	}{
		{"/usr/bin/node", "agent.js --port 3", "agent.js"},
		{"/usr/bin/node", "-- -", ""}, // stdin, not a file named "-"
		{"/usr/bin/python3", "-I -- -", ""},
		{"/usr/bin/perl", "-- -", ""},
		{"/usr/bin/ruby", "--disable-gems -- -", ""},
		{"/usr/lib/electron34/electron", "/tmp/app.js", ""}, // electron runs whatever app it is given
		{"/usr/bin/node", "--no-warnings --max-old-space-size=4096 agent.js", "agent.js"},
		{"/usr/bin/node", "--title x agent.js", "agent.js"},
		{"/usr/bin/node", "-r ./evil.js agent.js", ""},
		{"/usr/bin/node", "--require=./evil.js agent.js", ""},
		{"/usr/bin/node", "--import ./evil.mjs agent.js", ""},
		{"/usr/bin/node", "--inspect agent.js", ""},
		{"/usr/bin/node", "-e code", ""},
		{"/usr/bin/node", "--some-new-option agent.js", ""},                      // might take a value: refuse to guess
		{"/usr/bin/node", "--some-new-option=1 agent.js", ""},                    // node hands unknown options to V8: refuse them with a value too
		{"/usr/bin/node", "--experimental_loader=/home/u/evil.mjs agent.js", ""}, // node reads '_' as '-'
		{"/usr/bin/node", "--experimental_loader /home/u/evil.mjs agent.js", ""},
		{"/usr/bin/node", "--Require=./evil.js agent.js", ""}, // unknown spelling: refused, not skipped
		{"/usr/bin/node", "--pending_deprecation --max_old_space_size=64 agent.js", "agent.js"},
		{"/usr/bin/node", "--title=x agent.js", "agent.js"},
		{"/usr/bin/node", "", ""},
		{"/usr/bin/node", "-- agent.js", "agent.js"},
		{"/usr/bin/python3.12", "-I -u -W ignore agent.py", "agent.py"},
		{"/usr/bin/python3", "-Wignore -BIu agent.py x", "agent.py"},
		{"/usr/bin/python3", "-I -X importtime -Xutf8=1 agent.py", "agent.py"},
		{"/usr/bin/python3", "-u agent.py", ""},                        // not isolated: .pth files, PYTHON* variables
		{"/usr/bin/python3", "-W I agent.py", ""},                      // the I is -W's value
		{"/usr/bin/python3", "-I -X pycache_prefix=/tmp agent.py", ""}, // bytecode from elsewhere
		{"/usr/bin/python3", "-I -Xpresite=evil agent.py", ""},
		{"/usr/bin/python3", "-I -W ignore::antigravity.X agent.py", ""}, // imports antigravity, which runs $BROWSER
		{"/usr/bin/python3", "-I -Werror::evil.mod.Warning agent.py", ""},
		{"/usr/bin/python3", "-I -W ignore::DeprecationWarning -W default:x:UserWarning:mod.sub:3 agent.py", "agent.py"},
		{"/usr/bin/python3", "-I -c print(1)", ""},
		{"/usr/bin/python3", "-c print(1)", ""},
		{"/usr/bin/python3", "-Bc print(1)", ""},
		{"/usr/bin/python3", "-m http.server", ""},
		{"/usr/bin/bash", "-eu -o pipefail /opt/agent.sh", "/opt/agent.sh"},
		{"/usr/bin/bash", "+o posix agent.sh", "agent.sh"},
		{"/usr/bin/bash", "-c mcpcage", ""},
		{"/usr/bin/bash", "--rcfile x agent.sh", ""},
		{"/usr/bin/bash", "--login agent.sh", ""},
		{"/usr/bin/bash", "-el agent.sh", ""},
		{"/usr/bin/zsh", "agent.sh", ""}, // ~/.zshenv first
		{"/usr/bin/zsh", "-f agent.sh", "agent.sh"},
		{"/usr/bin/bash", "", ""},
		{"/bin/sh", "-", ""},
		{"/usr/bin/perl", "-w agent.pl", "agent.pl"},
		{"/usr/bin/perl", "-Ilib agent.pl", ""},
		{"/usr/bin/deno", "run -A agent.ts", "agent.ts"},
		{"/usr/bin/deno", "run --config evil agent.ts", ""},
		{"/usr/bin/bun", "run agent.ts", ""}, // a bunfig.toml's preload, which no command line shows
		{"/usr/bin/ruby", "agent.rb", ""},    // RubyGems loads the user's gems first
		{"/usr/bin/ruby3.1", "--disable-gems -w agent.rb", "agent.rb"},
		{"/usr/bin/ruby", "--disable=gems agent.rb", "agent.rb"},
		{"/usr/bin/ruby", "--disable-all agent.rb", "agent.rb"},
		{"/usr/bin/ruby", "--disable=all agent.rb", "agent.rb"},
		{"/usr/bin/ruby", "--disable gems agent.rb", ""},               // a spelling not read: the script might be "gems"
		{"/usr/bin/ruby", "--disable=gem agent.rb", ""},                // ruby takes the abbreviation; mcpcage does not
		{"/usr/bin/ruby", "--disable=gems --enable=gems agent.rb", ""}, // gems back on
		{"/usr/bin/ruby", "--disable-gems -rmod agent.rb", ""},         // -r loads code
		{"/usr/bin/lua5.4", "agent.lua", "agent.lua"},
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
		{"/usr/bin/node", "NODE_OPTIONS=--experimental_loader=/tmp/evil.mjs", "NODE_OPTIONS"},
		{"/usr/bin/node", "NODE_OPTIONS=--some-new-option=1", "NODE_OPTIONS"},
		{"/usr/bin/node", "NODE_OPTIONS=--max_old_space_size=4096 --no_warnings", ""},
		{"/usr/bin/node", "ELECTRON_RUN_AS_NODE=1", "ELECTRON_RUN_AS_NODE"},
		{"/usr/bin/bash", "BASH_FUNC_ls%%=() { evil; }", "BASH_FUNC_ls%%"},
		{"/usr/bin/bash", "BASH_ENV=/tmp/x", "BASH_ENV"},
		{"/usr/bin/bash", "BASH_ENV=", ""},
		{"/usr/bin/bash", "BASH_COMPAT=50", "BASH_COMPAT"}, // every BASH_ variable
		{"/usr/bin/bash", "ENV=/tmp/x\x00HOME=/home/u", "ENV"},
		{"/usr/bin/bash", "HOME=/home/u\x00LANG=C.UTF-8", ""},
		{"/usr/bin/node", "NODE_PATH=/tmp/mods", "NODE_PATH"},
		{"/usr/bin/node", "NODE_COMPILE_CACHE=/tmp/cache", "NODE_COMPILE_CACHE"},
		{"/usr/bin/node", "NODE_SOMETHING_NEW=1", "NODE_SOMETHING_NEW"}, // an allow-list
		{"/usr/bin/node", "NODE_ENV=production\x00NODE_EXTRA_CA_CERTS=/etc/ca.pem", ""},
		{"/usr/bin/node", "OPENSSL_CONF=/tmp/engine.cnf", "OPENSSL_CONF"},
		// -I makes python ignore PYTHON* itself; the loader's are refused.
		{"/usr/bin/python3", "PYTHONPATH=/tmp/evil\x00PYTHONPYCACHEPREFIX=/tmp/c", ""},
		{"/usr/bin/python3", "LD_PRELOAD=/tmp/evil.so", "LD_PRELOAD"},
		{"/usr/bin/python3", "GCONV_PATH=/tmp/gconv", "GCONV_PATH"},
		{"/usr/bin/perl", "PERL5OPT=-Mevil", "PERL5OPT"},
		{"/usr/bin/lua5.4", "LUA_INIT=@/tmp/evil.lua", "LUA_INIT"},
		{"/usr/bin/lua5.4", "LUA_INIT_5_4=@/tmp/evil.lua", "LUA_INIT_5_4"}, // read before LUA_INIT
		{"/usr/bin/lua", "LUA_CPATH_5_4=/tmp/?.so", "LUA_CPATH_5_4"},
		{"/usr/bin/luajit", "LUA_PATH=/tmp/?.lua", "LUA_PATH"},
		{"/usr/bin/ruby", "RUBYOPT=-revil", "RUBYOPT"},
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
		"/opt/Claude/claude": false, "/usr/bin/sleep": false, "/usr/bin/nodemon": false,
		"/usr/lib/electron34/electron": true, "/usr/bin/electron": true} {
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
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
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
		p, err := h.Agent(nodeAgent(t, dir, args...), ShimRule{})
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

// pythonAgent runs python3 with args in dir and env; the script spawns a
// child (the shim's stand-in) and prints its pid.
func pythonAgent(t *testing.T, dir string, env []string, python, argv0 string, args ...string) (child int) {
	t.Helper()
	cmd := exec.Command(python, args...)
	cmd.Args[0], cmd.Dir, cmd.Env = argv0, dir, env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		pid, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("python agent printed %q", s)
		}
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
		return pid
	case <-time.After(10 * time.Second):
		t.Fatal("python agent printed no child pid in 10s")
	}
	return 0
}

// TestPythonSitePackagesInjection: a .pth file in the user's
// site-packages (under HOME, which the caller picks) runs before the
// script; the daemon must not name such a run after the script. An -I
// run ignores it, and is identified.
func TestPythonSitePackagesInjection(t *testing.T) {
	const python = "/usr/bin/python3"
	_, err := os.Stat(python)
	testenv.Require(t, err == nil, python)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := "import subprocess, sys, time\nc = subprocess.Popen(['sleep', '30'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint(c.pid, flush=True)\ntime.sleep(30)\n"
	script := filepath.Join(dir, "agent.py")
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// The attacker's HOME, with a .pth that leaves a mark (it could as
	// well start the shim itself).
	home := filepath.Join(dir, "home")
	ver, err := exec.Command(python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
	if err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(home, ".local", "lib", "python"+strings.TrimSpace(string(ver)), "site-packages")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(dir, "injected")
	if err := os.WriteFile(filepath.Join(site, "evil.pth"), []byte("import os; open("+strconv.Quote(mark)+", 'w').close()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + home}
	h := NewHasher()
	real, err := filepath.EvalSymlinks(python)
	if err != nil {
		t.Fatal(err)
	}
	rules := []Rule{{Name: "py-agent", Exe: []string{real}, Script: []string{script}, ScriptSHA256: []string{sha(src)}}}

	injected, err := h.Agent(pythonAgent(t, dir, env, python, python, "agent.py"), ShimRule{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("the .pth file did not run (%v): the test shows nothing", err)
	}
	if injected.Script.Path != "" || !strings.Contains(injected.Script.Why, "-I") {
		t.Errorf("a run with the user's site-packages was identified as the script: %+v", injected.Script)
	}
	if n := Name(injected, rules); n != "exe:"+injected.Exe {
		t.Errorf("a run with the user's site-packages named %q, want the bare interpreter", n)
	}

	if err := os.Remove(mark); err != nil {
		t.Fatal(err)
	}
	isolated, err := h.Agent(pythonAgent(t, dir, env, python, "python3", "-I", "agent.py"), ShimRule{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the .pth file ran under -I")
	}
	if isolated.Script.Path != script || isolated.Script.SHA256 != sha(src) {
		t.Errorf("python3 -I agent.py: script %+v, want %s", isolated.Script, script)
	}
	if n := Name(isolated, rules); n != "py-agent" {
		t.Errorf("python3 -I agent.py named %q, want py-agent", n)
	}

	// A program path the user controls: a venv-like directory with its
	// own pyvenv.cfg beside a link to the real python.
	venv := filepath.Join(dir, "venv")
	if err := os.MkdirAll(filepath.Join(venv, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(python, filepath.Join(venv, "bin", "python3")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(venv, "pyvenv.cfg"), []byte("home = /usr/bin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, argv0 := range map[string]string{"by path": filepath.Join(venv, "bin", "python3"), "by PATH": "python3"} {
		env := []string{"PATH=" + filepath.Join(venv, "bin") + ":/usr/bin", "HOME=" + home}
		p, err := h.Agent(pythonAgent(t, dir, env, python, argv0, "-I", "agent.py"), ShimRule{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Script.Path != "" || !strings.Contains(p.Script.Why, venv) {
			t.Errorf("%s: a python run from a user's directory was identified: %+v", name, p.Script)
		}
	}
}

// The script path comes from the agent's argv: a path that names a FIFO
// or a device is refused without being opened (an open, as root, acts on
// it: a FIFO's writer is woken, a watchdog armed).
func TestScriptOpenedOnlyWhenARegularFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(in) }()
	if _, err := unix.InotifyAddWatch(in, fifo, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
		t.Fatal(err)
	}
	_, err = NewHasher().openScript(os.Getpid(), fifo, nil)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("openScript(a FIFO) = %v, want it refused as not a regular file", err)
	}
	// An open is reported as it happens: read at once, nothing queued
	// means none happened.
	buf := make([]byte, 4096)
	if n, err := unix.Read(in, buf); n > 0 || !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("the FIFO was opened (%d bytes of inotify events, %v)", n, err)
	}
}

// The script is found and read with the agent's own file-system
// credentials: mcpcaged shows the script's hash to the session's user,
// so a path the agent may not read (a file of root's, one in a
// directory it cannot search) is not hashed.
func TestScriptHashedOnlyWhenTheAgentMayReadIt(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "root (to run an agent as another user)")
	dir, err := os.MkdirTemp("", "script-cred-") // in /tmp: every user searches it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(dir, 0o755))
	private := filepath.Join(dir, "private")
	must(os.Mkdir(private, 0o700))
	files := map[string]os.FileMode{
		filepath.Join(dir, "open.py"):       0o644,
		filepath.Join(dir, "roots-only.py"): 0o600,
		filepath.Join(private, "hidden.py"): 0o644,
	}
	for p, mode := range files {
		must(os.WriteFile(p, []byte("print('x')\n"), mode))
	}
	agent := exec.Command("sleep", "30")
	agent.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	must(agent.Start())
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	tests := []struct {
		path    string
		wantErr string
	}{
		{filepath.Join(dir, "open.py"), ""},
		{filepath.Join(dir, "roots-only.py"), "the agent (uid 4242) may not read it"},
		{filepath.Join(private, "hidden.py"), "permission denied"},
	}
	// An agent that became a setuid program since its exec (real uid
	// 4242, effective and file-system uid root's) is checked as who
	// started it.
	python, err := exec.LookPath("python3")
	testenv.Require(t, err == nil, "python3")
	setuid := exec.Command(python, "-c", "import os, sys, time; os.setresuid(4242, 0, 0); print('ok', flush=True); time.sleep(30)")
	out, err := setuid.StdoutPipe()
	must(err)
	must(setuid.Start())
	t.Cleanup(func() { _ = setuid.Process.Kill(); _ = setuid.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ok\n" {
		t.Fatalf("the setuid stand-in: %q, %v", line, err)
	}
	for _, tt := range tests {
		for _, a := range []struct {
			name string
			pid  int
		}{{"agent", agent.Process.Pid}, {"setuid", setuid.Process.Pid}} {
			t.Run(filepath.Base(tt.path)+"/"+a.name, func(t *testing.T) {
				s, err := NewHasher().openScript(a.pid, tt.path, nil)
				switch {
				case tt.wantErr == "" && (err != nil || s.SHA256 != sha("print('x')\n")):
					t.Errorf("openScript = %+v, %v; want it hashed", s, err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || s.SHA256 != ""):
					t.Errorf("openScript = %+v, %v; want it refused (%q), no hash", s, err, tt.wantErr)
				}
			})
		}
	}
}
