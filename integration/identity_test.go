package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The test binary doubles as the agents of these tests, by mode:
//
//	spawn   start `mcpcage run test` as a child and wait for it (an honest agent)
//	helper  start cloneparent, which forks `mcpcage run test` with
//	        clone(CLONE_PARENT): the shim's parent is this process, its forker is not
//	borrow  fork a child (which becomes the shim), then exec the trusted agent
//	child   wait until the parent runs the trusted agent, then exec the shim
//	stallborrow  fork a child (stallchild), then exec the trusted agent,
//	        whose exec a slow file system holds past its point of no return
//	stallchild   wait until /proc shows the parent running the trusted
//	        agent (its exec still under way), then exec the shim
//	hold    do nothing until its input ends (the trusted agent, exec'd by borrow)
//	launch  start `mcpcage run test` through a launcher, `sh -c 'exec mcpcage
//	        run test'` (what a configuration of someone else's can make a
//	        genuine client do; the launcher could give it pipes of its own)
//	connect start a program of the attacker's (fakeshim) that speaks the
//	        shim's protocol itself
//	fakeshim  ask the daemon for a session with its own stdio, as a shim
//	        does, and say what it answered on stderr as the shim would
const idHelper = "MCPCAGE_IDHELPER"

func init() {
	mode := os.Getenv(idHelper)
	if mode == "" {
		return
	}
	trusted, shim := os.Getenv("MCPCAGE_IDHELPER_TRUSTED"), os.Getenv("MCPCAGE_IDHELPER_SHIM")
	withMode := func(m string) []string {
		env := []string{idHelper + "=" + m}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, idHelper+"=") {
				env = append(env, kv)
			}
		}
		return env
	}
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "identity helper %s: %v\n", mode, err)
		os.Exit(3)
	}
	// inMode is this binary in another mode, on this process's stdio.
	inMode := func(m string) *exec.Cmd {
		self, err := os.Executable()
		if err != nil {
			fail(err)
		}
		cmd := exec.Command(self)
		cmd.Env = withMode(m)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd
	}
	switch mode {
	case "spawn":
		cmd := exec.Command(shim, "run", "test")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail(err)
		}
	case "helper":
		cmd := exec.Command(os.Getenv("MCPCAGE_IDHELPER_CLONEPARENT"), shim, "run", "test")
		cmd.Env = withMode("")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail(err)
		}
	case "borrow":
		self, err := os.Executable()
		if err != nil {
			fail(err)
		}
		// The child learns of the exec from a pipe: this process holds
		// its write end, close-on-exec, so the exec closes it.
		execd, held, err := os.Pipe()
		if err != nil {
			fail(err)
		}
		child := exec.Command(self)
		child.Env = withMode("child")
		child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
		child.ExtraFiles = []*os.File{execd} // fd 3
		if err := child.Start(); err != nil {
			fail(err)
		}
		err = syscall.Exec(trusted, []string{trusted}, withMode("hold"))
		runtime.KeepAlive(held) // open until the exec closes it (or the exit of a failed one)
		fail(err)
	case "child":
		// The shim process exists (forked above) before its parent execs
		// the trusted agent: exactly the borrow the daemon must refuse.
		execd := os.NewFile(3, "exec pipe")
		_, _ = io.Copy(io.Discard, execd) // EOF: the parent exec'd, or died
		_ = execd.Close()
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", os.Getppid())); exe != trusted {
			fail(fmt.Errorf("parent never exec'd %s (runs %s)", trusted, exe))
		}
		fail(syscall.Exec(shim, []string{shim, "run", "test"}, withMode("")))
	case "stallborrow":
		if err := inMode("stallchild").Start(); err != nil {
			fail(err)
		}
		fail(syscall.Exec(trusted, []string{trusted}, withMode("hold")))
	case "stallchild":
		// The attacker's side: it polls, as it may; the exec it waits for
		// is held for SECONDS by the file system.
		for {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", os.Getppid())); exe == trusted {
				break
			}
			time.Sleep(time.Millisecond)
		}
		fail(syscall.Exec(shim, []string{shim, "run", "test"}, withMode("")))
	case "wipe-spawn":
		// What Chromium's setproctitle does in every Electron process
		// (and an attacker's preloaded code to hide itself): the
		// environment's memory, which /proc/PID/environ shows, is
		// overwritten; then the shim starts as in spawn.
		if err := wipeEnviron(); err != nil {
			fail(err)
		}
		cmd := exec.Command(shim, "run", "test")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail(err)
		}
	case "rawexec":
		// exec MCPCAGE_IDHELPER_PROG with MCPCAGE_IDHELPER_ARGV and
		// MCPCAGE_IDHELPER_ENV (\x01-separated) as they are: os/exec
		// keeps only the last of two variables of one name.
		split := func(k string) []string { return strings.Split(os.Getenv(k), "\x01") }
		fail(syscall.Exec(os.Getenv("MCPCAGE_IDHELPER_PROG"), split("MCPCAGE_IDHELPER_ARGV"), split("MCPCAGE_IDHELPER_ENV")))
	case "launch":
		cmd := exec.Command("/bin/sh", "-c", `exec "$0" run test`, shim)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail(err)
		}
	case "connect":
		if err := inMode("fakeshim").Run(); err != nil {
			fail(err)
		}
	case "fakeshim":
		c, err := api.Dial(os.Getenv("MCPCAGE_SOCKET"))
		if err != nil {
			fail(err)
		}
		reply, err := c.DoPassing(api.Request{Op: api.OpRun, Server: "test", PassStdio: true}, []int{0, 1})
		if err != nil {
			fail(err)
		}
		if !reply.OK {
			fmt.Fprintf(os.Stderr, "mcpcage: %s\n", reply.Error)
			os.Exit(1)
		}
		_, _ = io.Copy(io.Discard, c.Conn) // admitted: hold the session until the daemon ends it
	case "hold":
		// The trusted agent, until the test closes its input or kills it.
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	os.Exit(0)
}

// wipeEnviron zeroes this process's environment as exec laid it out
// (/proc/self/stat fields 50 and 51), through /proc/self/mem.
func wipeEnviron() error {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:])) // from field 3
	start, err1 := strconv.ParseInt(f[50-3], 10, 64)
	end, err2 := strconv.ParseInt(f[51-3], 10, 64)
	if err1 != nil || err2 != nil || end <= start {
		return fmt.Errorf("environment bounds %q %q", f[50-3], f[51-3])
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() { _ = mem.Close() }()
	_, err = mem.WriteAt(make([]byte, end-start-1), start)
	if env, _ := os.ReadFile("/proc/self/environ"); bytes.Contains(env, []byte("=")) {
		return fmt.Errorf("the environment is still there: %q", env)
	}
	return err
}

// trustedAgent copies the test binary to a path of its own, the
// registered agent's executable.
func trustedAgent(t *testing.T) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	dst := filepath.Join(t.TempDir(), "trusted-agent")
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// cloneparentBin is testdata/cloneparent, built once.
func cloneparentBin(t *testing.T) string {
	t.Helper()
	return testdataBin(t, "cloneparent")
}

// waitLine waits for one line on a process's stderr.
func waitLine(t *testing.T, stderr *syncBuffer) []string {
	t.Helper()
	testenv.WaitFor(t, "a line from the shim", 20*time.Second, func() (bool, string) {
		return strings.Contains(stderr.String(), "\n"), fmt.Sprintf("%q", stderr.String())
	})
	return strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
}

// TestAgentCloneParentIsRefused: a program the trusted agent started
// forks the shim with clone(CLONE_PARENT), so that the shim's parent is
// the trusted agent, whose exec predates the shim. The kernel's fork
// record names the real forker: refused, in one line on the shim's
// stderr. The agent's own spawn still runs.
func TestAgentCloneParentIsRefused(t *testing.T) {
	trusted := trustedAgent(t)
	d := startDaemon(t, fmt.Sprintf("[agents.trusted]\nexe = [%q]\n", trusted))
	if st := d.mustCLI(t, "status"); !strings.Contains(st, "sched_process_fork") || !strings.Contains(st, "SO_PEERPIDFD") {
		t.Fatalf("status does not say agents are bound by fork record and peer pidfd:\n%s", st)
	}
	helperEnv := append(os.Environ(), "MCPCAGE_SOCKET="+d.socket, "MCPCAGE_IDHELPER_SHIM="+filepath.Join(env.bin, "mcpcage"),
		"MCPCAGE_IDHELPER_CLONEPARENT="+cloneparentBin(t))

	sneaky := exec.Command(trusted)
	sneaky.Env = append(helperEnv, idHelper+"=helper")
	stdin, err := sneaky.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close() }()
	stderr := &syncBuffer{}
	sneaky.Stderr = stderr
	sneaky.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sneaky.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-sneaky.Process.Pid, syscall.SIGKILL); _ = sneaky.Wait() }()
	lines := waitLine(t, stderr)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "mcpcage: refused: ") || !strings.Contains(lines[0], "not started by its parent process") ||
		!strings.Contains(lines[0], trusted) {
		t.Fatalf("shim stderr = %q, want one line refusing the shim forked by another process", stderr.String())
	}
	t.Logf("shim: %s", lines[0])
	d.waitLog("session refused: the process that connected does not speak for its parent's program")
	if n := len(d.sessions(t)); n != 0 {
		t.Fatalf("%d sessions after a refusal", n)
	}

	// The trusted agent's own spawn: a session, bound by the kernel.
	honest := exec.Command(trusted)
	honest.Env = append(helperEnv, idHelper+"=spawn")
	r := startRaw(t, honest)
	r.initialize()
	list := d.waitSessions(t, 1)
	if list[0].Agent != "trusted" || list[0].AgentBinding != "kernel" {
		t.Fatalf("honest agent's session: %+v", list[0])
	}
	r.closeInput()
	r.wait()
	d.waitSessions(t, 0)
}

// sessions lists the daemon's live sessions.
func (d *daemon) sessions(t *testing.T) []api.SessionInfo {
	t.Helper()
	var list []api.SessionInfo
	if err := json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	return list
}

// waitSessions waits until the daemon lists n sessions.
func (d *daemon) waitSessions(t *testing.T, n int) []api.SessionInfo {
	t.Helper()
	var list []api.SessionInfo
	testenv.WaitFor(t, fmt.Sprintf("%d sessions", n), 20*time.Second, func() (bool, string) {
		list = d.sessions(t)
		return len(list) == n, fmt.Sprintf("%d sessions: %+v", len(list), list)
	})
	return list
}

// honestSession runs the trusted agent at path trusted starting the shim
// itself: a session as agent trusted, bound by the kernel, then closed.
// It returns the identity helper's environment for d.
func honestSession(t *testing.T, d *daemon, trusted string) []string {
	t.Helper()
	helperEnv := append(os.Environ(), "MCPCAGE_SOCKET="+d.socket, "MCPCAGE_IDHELPER_TRUSTED="+trusted,
		"MCPCAGE_IDHELPER_SHIM="+filepath.Join(env.bin, "mcpcage"))
	honest := exec.Command(trusted)
	honest.Env = append(helperEnv, idHelper+"=spawn")
	r := startRaw(t, honest)
	r.initialize()
	if list := d.waitSessions(t, 1); list[0].Agent != "trusted" || list[0].AgentBinding != "kernel" {
		t.Fatalf("the honest agent's session: %+v", list[0])
	}
	r.closeInput()
	r.wait()
	d.waitSessions(t, 0)
	return helperEnv
}

// TestShimSpeaksOnlyForTheAgentThatStartedIt: an MCP client's
// configuration is a file of its user's, which any other code of theirs
// can change (a .mcp.json in a repository, --mcp-config, HOME pointed
// elsewhere), so a genuine client can be made to start a program of the
// attacker's as an MCP server. Found by a red-team helper: that program,
// the trusted agent's own child, could connect to mcpcaged itself, or
// set up pipes of its own and exec `mcpcage run`, and the session ran
// as the trusted agent with input that was not the agent's. Now the
// process that connects must run the mcpcage the daemon trusts, exec'd
// once since the agent forked it; allow_shim_launchers lets a launcher
// through, unverified.
func TestShimSpeaksOnlyForTheAgentThatStartedIt(t *testing.T) {
	trusted := trustedAgent(t)
	agents := fmt.Sprintf("\n[agents.trusted]\nexe = [%q]\n", trusted)
	d := startDaemon(t, agents)
	helperEnv := honestSession(t, d, trusted)
	for _, tc := range []struct{ mode, refusal string }{
		{"launch", "mcpcage run was not started by its agent directly: its process exec'd 2 programs since its parent forked it"},
		{"connect", "the process that connected is not mcpcage"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := exec.Command(trusted)
			cmd.Env = append(helperEnv, idHelper+"="+tc.mode)
			agent, refused := d.agentOrRefusal(t, cmd)
			if agent != "" || !strings.Contains(refused, tc.refusal) {
				t.Fatalf("the trusted agent's child: session as %q, refusal %q; want refused: %q", agent, refused, tc.refusal)
			}
			t.Logf("shim: %s", refused)
		})
	}
	d.waitLog("session refused: the process that connected does not speak for its parent's program")
	refusals := 0
	for _, rec := range d.auditRecords(t) {
		if rec["type"] == "session.refused" {
			refusals++
		}
	}
	if refusals != 2 {
		t.Fatalf("%d session.refused records, want 2 (one a refusal)", refusals)
	}

	// An administrator who must let a launcher through: the session runs,
	// and says that its binding is unverified.
	lax := startDaemon(t, "[daemon]\nallow_shim_launchers = true\n"+agents)
	cmd := exec.Command(trusted)
	cmd.Env = append(append([]string{}, helperEnv...), "MCPCAGE_SOCKET="+lax.socket, idHelper+"=launch")
	r := startRaw(t, cmd)
	r.initialize()
	list := lax.waitSessions(t, 1)
	if list[0].Agent != "trusted" || !strings.HasPrefix(list[0].AgentBinding, "unverified: mcpcage run was not started by its agent directly: its process exec'd 2 programs") {
		t.Fatalf("a launched shim with allow_shim_launchers: %+v", list[0])
	}
	r.closeInput()
	r.wait()
}

// javaClient is an MCP client in Java that starts `mcpcage run test`
// with ProcessBuilder (Java's default: posix_spawn of the JDK's
// jspawnhelper, which then execs the program), calls echo and prints the
// answers.
const javaClient = `import java.io.*;
import java.nio.charset.StandardCharsets;

public class Client {
    public static void main(String[] args) throws Exception {
        Process p = new ProcessBuilder(args[0], "run", "test").redirectError(ProcessBuilder.Redirect.INHERIT).start();
        Writer w = new OutputStreamWriter(p.getOutputStream(), StandardCharsets.UTF_8);
        BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        w.write("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"java\",\"version\":\"1\"}}}\n");
        w.write("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
        w.write("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"from java\"}}}\n");
        w.flush();
        for (String line; (line = r.readLine()) != null; ) {
            System.out.println(line);
            if (line.contains("\"id\":2")) break;
        }
        w.close();
        System.exit(p.waitFor());
    }
}
`

// TestJavaClientIsItsAgent: a JDK starts every child through its
// jspawnhelper, so the shim a Java client starts has exec'd twice since
// the client forked it; the first was the client's own JDK's helper,
// root's, so the session is the client's, bound by the kernel. (Found by a
// red-team review of the check that refuses shims a launcher exec'd.)
func TestJavaClientIsItsAgent(t *testing.T) {
	java, err := exec.LookPath("java")
	testenv.Require(t, err == nil, "java (default-jdk-headless)")
	java, err = filepath.EvalSymlinks(java)
	must(t, err, "resolve java")
	dir := t.TempDir()
	src := filepath.Join(dir, "Client.java")
	must(t, os.WriteFile(src, []byte(javaClient), 0o644), "write the client")
	d := startDaemon(t, "")
	for _, mechanism := range []string{"", "VFORK"} {
		t.Run("launch mechanism "+cmp.Or(mechanism, "default"), func(t *testing.T) {
			args := []string{src, filepath.Join(env.bin, "mcpcage")}
			if mechanism != "" {
				args = append([]string{"-Djdk.lang.Process.launchMechanism=" + mechanism}, args...)
			}
			cmd := exec.Command(java, args...)
			cmd.Env = append(os.Environ(), "MCPCAGE_SOCKET="+d.socket)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), `"id":2`) || !strings.Contains(string(out), "from java") {
				t.Fatalf("the Java client: %v\n%s", err, out)
			}
			var agents []string
			for _, rec := range d.auditRecords(t) {
				if rec["type"] != "session.start" {
					continue
				}
				if a, ok := rec["agent_detail"].(map[string]any); ok && a["pid"] == float64(cmd.Process.Pid) {
					agents = append(agents, fmt.Sprintf("%v %v", a["exe"], a["binding"]))
				}
			}
			if want := java + " kernel"; len(agents) != 1 || agents[0] != want {
				t.Fatalf("sessions of the Java client: %q, want one of agent %q\n%s", agents, want, out)
			}
		})
	}
}

func TestAgentForkThenExecIsRefused(t *testing.T) {
	trusted := trustedAgent(t)
	d := startDaemon(t, fmt.Sprintf("[agents.trusted]\nexe = [%q]\n", trusted))
	st := d.mustCLI(t, "status")
	if !strings.Contains(st, "agent identity:") || !strings.Contains(st, "kernel exec record") || !strings.Contains(st, "ptrace_scope:") {
		t.Fatalf("status does not say how agents are bound:\n%s", st)
	}
	helperEnv := honestSession(t, d, trusted)

	// Another program forks the shim, then execs the trusted agent.
	borrow := exec.Command(os.Args[0])
	borrow.Env = append(helperEnv, idHelper+"=borrow")
	stdin, err := borrow.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close() }()
	stderr := &syncBuffer{}
	borrow.Stderr = stderr
	if err := borrow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = borrow.Process.Kill(); _ = borrow.Wait() }()
	lines := waitLine(t, stderr)
	out := stderr.String()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "mcpcage: refused: ") || !strings.Contains(lines[0], "exec'd another program after starting it") ||
		!strings.Contains(lines[0], trusted) {
		t.Fatalf("shim stderr = %q, want one line refusing the borrowed identity", out)
	}
	t.Logf("shim: %s", lines[0])
	d.waitLog("session refused: the process that connected does not speak for its parent's program")
	if strings.Contains(d.log.String(), "agent=trusted") && len(d.sessions(t)) != 0 {
		t.Fatalf("a session ran as the trusted agent:\n%s", d.log.String())
	}
}

// A process that forks the shim and then execs the trusted agent, whose
// exec a file system of its own (FUSE) holds in the ELF loader: /proc
// showed the trusted program and its digest while the kernel's exec
// stamp, written only at the exec's end, was still the one the shim was
// forked under; the shim was bound to the trusted agent (binding kernel)
// and its consent allowed the call (found by a red-team helper). Now the
// stamp marks the exec at its point of no return (sched_prepare_exec),
// before the image changes, and the session is refused.
func TestAgentExecHeldMidwayIsRefused(t *testing.T) {
	setup(t)
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "/dev/fuse (modprobe fuse)")
	backing := trustedAgent(t)
	slowexec := filepath.Join(env.bin, "slowexec")
	if out, err := exec.Command("clang", "-O2", "-o", slowexec, "../testdata/slowexec/slowexec.c", "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("build testdata/slowexec (clang, from make deps): %v\n%s", err, out)
	}
	content, err := os.ReadFile(backing)
	must(t, err, "read the trusted agent")
	digest := sha256.Sum256(content)
	sum := hex.EncodeToString(digest[:])
	mnt, hold := t.TempDir(), filepath.Join(t.TempDir(), "hold")
	slow := exec.Command(slowexec, mnt, backing, "20", hold)
	slowErr := &syncBuffer{}
	slow.Stderr = slowErr
	must(t, slow.Start(), "start slowexec")
	t.Cleanup(func() {
		_ = os.Remove(hold)
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		_ = slow.Process.Kill()
		_ = slow.Wait()
	})
	testenv.WaitFor(t, "the FUSE mount", 10*time.Second, func() (bool, string) {
		return strings.Contains(slowErr.String(), "mounted"), slowErr.String()
	})
	trusted := filepath.Join(mnt, "f")
	d := startDaemon(t, fmt.Sprintf("[agents.trusted]\nexe = [%q]\nsha256 = [%q]\n", trusted, sum))
	d.mustCLI(t, "grant", "--agent", "trusted", "--server", "test", "--tool", "echo")
	if st := d.mustCLI(t, "status"); !strings.Contains(st, "sched_prepare_exec") || strings.Contains(st, "execs are marked only once") {
		t.Fatalf("status does not say execs are marked at their point of no return:\n%s", st)
	}
	helperEnv := honestSession(t, d, trusted) // (and the daemon has its digest)
	// What any reader of the file may do: drop its cached pages, so that
	// the next exec reads them from the file system, which holds them.
	f, err := os.Open(trusted)
	must(t, err, "open the trusted agent")
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED), "drop its cached pages")
	_ = f.Close()
	must(t, os.WriteFile(hold, nil, 0o644), "hold the file system's reads")
	borrow := exec.Command(os.Args[0])
	borrow.Env = append(helperEnv, idHelper+"=stallborrow")
	stderr := &syncBuffer{}
	borrow.Stderr = stderr
	stdin, err := borrow.StdinPipe()
	must(t, err, "stdin")
	defer func() { _ = stdin.Close() }()
	// Its own process group: the shim it forks is killed with it (a shim
	// given a session would otherwise hold the pipes open).
	borrow.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	borrow.WaitDelay = 5 * time.Second
	must(t, borrow.Start(), "start the borrower")
	defer func() { _ = syscall.Kill(-borrow.Process.Pid, syscall.SIGKILL); _ = borrow.Wait() }()
	var list []api.SessionInfo
	testenv.WaitFor(t, "the shim refused, or a session", 20*time.Second, func() (bool, string) {
		list = d.sessions(t)
		return strings.Contains(stderr.String(), "\n") || len(list) > 0, fmt.Sprintf("shim stderr %q", stderr.String())
	})
	if len(list) > 0 {
		t.Fatalf("a process that forked the shim before its held exec of the trusted agent got a session: %+v", list)
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "mcpcage: refused: ") {
		t.Fatalf("shim stderr = %q, want one line refusing the borrowed identity", stderr.String())
	}
	t.Logf("shim: %s", lines[0])
	if !strings.Contains(slowErr.String(), "holding a read") {
		t.Fatalf("the exec was never held (slowexec: %s): the test did not test the window", slowErr.String())
	}
	d.record(t, "session.refused", func(r map[string]any) bool { return true })
}

func TestNodeScriptAgentsToldApart(t *testing.T) {
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	node, _ = filepath.EvalSymlinks(node)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Two MCP "clients": node scripts that spawn the shim and relay.
	src := `const c = require("child_process").spawn(process.env.MCPCAGE_SHIM, ["run", "test"], {stdio: ["pipe", "pipe", "inherit"]});
process.stdin.pipe(c.stdin); c.stdout.pipe(process.stdout); c.on("exit", (code) => process.exit(code)); // %s
`
	sums := map[string]string{}
	for _, name := range []string{"a.js", "b.js"} {
		body := strings.Replace(src, "%s", name, 1)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(body))
		sums[name] = hex.EncodeToString(s[:])
	}
	a, b := filepath.Join(dir, "a.js"), filepath.Join(dir, "b.js")
	d := startDaemon(t, fmt.Sprintf("[agents.node-a]\nexe = [%q]\nscript = [%q]\nscript_sha256 = [%q]\n", node, a, sums["a.js"]))
	run := func(args ...string) *rawSession {
		cmd := exec.Command(node, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "MCPCAGE_SOCKET="+d.socket, "MCPCAGE_SHIM="+filepath.Join(env.bin, "mcpcage"))
		r := startRaw(t, cmd)
		r.initialize()
		return r
	}
	run("a.js") // relative to its working directory
	run(b)
	agents := map[string]api.SessionInfo{}
	for _, s := range d.waitSessions(t, 2) {
		agents[s.Agent] = s
	}
	sa, okA := agents["node-a"]
	sb, okB := agents["script:"+b]
	if !okA || !okB {
		t.Fatalf("agents %v, want node-a and script:%s", agents, b)
	}
	if sa.AgentExe != node || !strings.Contains(sa.AgentScript, a) || !strings.Contains(sa.AgentScript, sums["a.js"]) ||
		!strings.Contains(sb.AgentScript, sums["b.js"]) {
		t.Fatalf("sessions do not show the scripts: %+v %+v", sa, sb)
	}
	// The listing shows them, and a grant to bare node needs --any-script.
	if out := d.mustCLI(t, "sessions"); !strings.Contains(out, a) || !strings.Contains(out, b) {
		t.Fatalf("mcpcage sessions:\n%s", out)
	}
	out, err := d.cli(t, 0, "grant", "--agent", "exe:"+node, "--server", "test", "--tool", "echo")
	if err == nil || !strings.Contains(out, "--any-script") {
		t.Fatalf("grant to bare node: %v\n%s", err, out)
	}
	out = d.mustCLI(t, "grant", "--agent", "exe:"+node, "--server", "test", "--tool", "echo", "--any-script")
	if !strings.Contains(out, "warning: --any-script") {
		t.Fatalf("grant --any-script printed no warning:\n%s", out)
	}
	if out := d.mustCLI(t, "consents"); !strings.Contains(out, "(any script)") {
		t.Fatalf("consents do not mark the bare interpreter:\n%s", out)
	}
}

// Interpreter options that run other code before the script leave it
// unidentified, however they are spelled: node reads "_" as "-" in option
// names (--experimental_loader loaded a module, yet the script was
// identified), and python imports the module of a dotted -W category at
// start-up (-W ignore::antigravity.X runs $BROWSER before the script).
// Each agent here spawns `mcpcage run test` on its own stdio; the session
// names the agent the daemon identified.
func TestAgentOptionsThatRunCodeLeaveTheScriptUnidentified(t *testing.T) {
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	python, err := exec.LookPath("/usr/bin/python3") // Debian's: a pyenv shim in PATH is a shell script
	testenv.Require(t, err == nil, "/usr/bin/python3")
	lua, err := exec.LookPath("lua5.4")
	testenv.Require(t, err == nil, "lua5.4 (make deps)")
	ruby, err := exec.LookPath("ruby")
	testenv.Require(t, err == nil, "ruby (make deps)")
	node, _ = filepath.EvalSymlinks(node)
	python, _ = filepath.EvalSymlinks(python)
	lua, _ = filepath.EvalSymlinks(lua)
	ruby, _ = filepath.EvalSymlinks(ruby)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.Chmod(dir, 0o755), "chmod")
	files := map[string]string{
		"a.js":  `process.exit(require("child_process").spawnSync(process.env.MCPCAGE_SHIM, ["run", "test"], {stdio: "inherit"}).status);` + "\n",
		"a.py":  "import os, subprocess, sys\nsys.exit(subprocess.call([os.environ['MCPCAGE_SHIM'], 'run', 'test']))\n",
		"a.lua": "os.exit(os.execute('exec ' .. os.getenv('MCPCAGE_SHIM') .. ' run test'))\n",
		"a.rb":  "exit system(ENV['MCPCAGE_SHIM'], 'run', 'test')\n",
		// What the interpreter runs before the script when told to: a
		// versioned LUA_INIT, a did_you_mean newer than ruby's own in a
		// gem directory (the user's ~/.local/share/gem is on the path
		// without any variable; GEM_PATH names one here).
		"evil.lua": "io.open(os.getenv('EVIL_MARK'), 'w'):write('x')\n",
		"gems/specifications/did_you_mean-99.0.0.gemspec": `Gem::Specification.new do |s|
  s.name = "did_you_mean"; s.version = "99.0.0"; s.summary = "x"; s.authors = ["x"]
  s.files = ["lib/did_you_mean.rb"]; s.require_paths = ["lib"]
end
`,
		"gems/gems/did_you_mean-99.0.0/lib/did_you_mean.rb": "File.write(ENV['EVIL_MARK'], 'x'); module DidYouMean; end\n",
		"loader.js": "export async function resolve(s, c, next) { return next(s, c); }\n",
		// Loaded by NODE_OPTIONS=--require: renames NODE_OPTIONS in the
		// environment's memory (what /proc/PID/environ shows) to hide
		// itself, then lets the script run.
		"hide.js": `const fs = require("fs");
const st = fs.readFileSync("/proc/self/stat", "latin1");
const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
const start = Number(f[50 - 3]), end = Number(f[51 - 3]);
const fd = fs.openSync("/proc/self/mem", "r+");
const env = Buffer.alloc(end - start);
fs.readSync(fd, env, 0, env.length, start);
for (let i = env.indexOf("NODE_OPTIONS="); i >= 0; i = env.indexOf("NODE_OPTIONS=", i + 1)) {
	if (i === 0 || env[i - 1] === 0) fs.writeSync(fd, Buffer.from("X"), 0, 1, start + i);
}
fs.closeSync(fd);
if (fs.readFileSync("/proc/self/environ", "latin1").includes("\0NODE_OPTIONS=")) throw new Error("NODE_OPTIONS still shows");
`,
	}
	for name, body := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755), "mkdir for %s", name)
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644), "write %s", name)
	}
	a, py, loader := filepath.Join(dir, "a.js"), filepath.Join(dir, "a.py"), filepath.Join(dir, "loader.js")
	luaA, rbA, gems := filepath.Join(dir, "a.lua"), filepath.Join(dir, "a.rb"), filepath.Join(dir, "gems")
	// Lua starts programs only through sh (os.execute), which execs the
	// shim: a launcher, let through here (the test is of scripts).
	d := startDaemon(t, fmt.Sprintf("[daemon]\nallow_shim_launchers = true\n\n[agents.node-a]\nexe = [%q]\nscript = [%q]\n\n[agents.py-a]\nexe = [%q]\nscript = [%q]\n\n"+
		"[agents.lua-a]\nexe = [%q]\nscript = [%q]\n\n[agents.rb-a]\nexe = [%q]\nscript = [%q]\n", node, a, python, py, lua, luaA, ruby, rbA))
	tests := []struct {
		name string
		exe  string
		args []string
		env  []string
		want string
	}{
		{"node, plain", node, []string{a}, nil, "node-a"},
		{"node, harmless options with underscores", node, []string{"--pending_deprecation", "--max_old_space_size=64", a}, nil, "node-a"},
		{"node --experimental_loader=", node, []string{"--experimental_loader=" + loader, a}, nil, "exe:" + node},
		{"node, a V8 option mcpcage does not know", node, []string{"--stack-trace-limit=20", a}, nil, "exe:" + node},
		{"NODE_OPTIONS=--experimental_loader=", node, []string{a}, []string{"NODE_OPTIONS=--experimental_loader=" + loader}, "exe:" + node},
		{"NODE_OPTIONS=--require, hidden in memory after exec", node, []string{a}, []string{"NODE_OPTIONS=--require " + filepath.Join(dir, "hide.js")}, "exe:" + node},
		{"python -I -W with a built-in category", python, []string{"-I", "-W", "ignore::DeprecationWarning", py}, nil, "py-a"},
		{"python -I -W with a module's category", python, []string{"-I", "-W", "ignore::antigravity.X", py}, []string{"BROWSER=/bin/true"}, "exe:" + python},
		{"lua, plain", lua, []string{luaA}, nil, "lua-a"},
		{"lua, LUA_INIT_5_4 (read before LUA_INIT)", lua, []string{luaA},
			[]string{"LUA_INIT_5_4=@" + filepath.Join(dir, "evil.lua"), "EVIL_MARK=" + filepath.Join(dir, "evil-lua-ran")}, "exe:" + lua},
		{"ruby --disable-gems", ruby, []string{"--disable-gems", rbA}, []string{"GEM_PATH=" + gems}, "rb-a"},
		{"ruby with RubyGems, which loads a newer did_you_mean from the gem path", ruby, []string{rbA},
			[]string{"GEM_PATH=" + gems, "EVIL_MARK=" + filepath.Join(dir, "evil-ruby-ran")}, "exe:" + ruby},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.exe, tt.args...)
			cmd.Dir = dir
			cmd.Env = append(append(os.Environ(), "MCPCAGE_SOCKET="+d.socket, "MCPCAGE_SHIM="+filepath.Join(env.bin, "mcpcage")), tt.env...)
			r := startRaw(t, cmd)
			r.initialize()
			prefix := fmt.Sprintf("%d@", cmd.Process.Pid)
			var got *api.SessionInfo
			testenv.WaitFor(t, "the agent's session listed", 10*time.Second, func() (bool, string) {
				for _, s := range d.sessions(t) {
					if strings.HasPrefix(s.AgentInstance, prefix) {
						got = &s
						return true, ""
					}
				}
				return false, "no session of agent pid " + prefix
			})
			if got.Agent != tt.want {
				t.Fatalf("agent %q (script %q), want %q", got.Agent, got.AgentScript, tt.want)
			}
			// The attack is real: the other code ran before the script.
			for _, kv := range tt.env {
				if mark, ok := strings.CutPrefix(kv, "EVIL_MARK="); ok {
					if _, err := os.Stat(mark); err != nil {
						t.Fatalf("the code the interpreter was told to load first did not run: %v", err)
					}
				}
			}
		})
	}
}

// agentOrRefusal runs cmd (an agent that starts `mcpcage run test` on its
// own stdio) and returns the agent its session runs as, or the shim's
// refusal line.
func (d *daemon) agentOrRefusal(t *testing.T, cmd *exec.Cmd) (agent, refused string) {
	t.Helper()
	r := startRaw(t, cmd)
	testenv.WaitFor(t, "a session of the agent, or the shim's refusal", 20*time.Second, func() (bool, string) {
		for _, line := range strings.Split(r.stderr.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "mcpcage: refused: "); ok {
				refused = "refused: " + rest
				return true, ""
			}
		}
		for _, s := range d.sessions(t) {
			if strings.HasPrefix(s.AgentInstance, fmt.Sprintf("%d@", cmd.Process.Pid)) {
				agent = s.Agent
				return true, ""
			}
		}
		return false, "stderr: " + r.stderr.String()
	})
	return agent, refused
}

// An agent is named by the paths of its executable and script, so those
// paths must name what runs. Each case here borrowed an agent's consents
// before the fix (found by a red-team helper):
//   - a private mount namespace (any user can make one: unshare -Urm) with
//     a file of one's own bind-mounted over the agent's executable or
//     script: the daemon read the agent's own view and named it by the
//     trusted path;
//   - LD_PRELOAD into a compiled agent: nothing looked at a compiled
//     agent's environment;
//   - a script started through a symbolic link that the attacker then
//     turned to the trusted script (and only then started the shim): the
//     daemon followed the link when it looked, and hashed the trusted
//     file (its digest pin passed too).
//
// Now the first two are refused and the script of the others left
// unidentified (the bare interpreter, which a script's grant does not
// cover).
func TestAgentsThatAreNotWhatTheirPathsNameAreNotIdentified(t *testing.T) {
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	node, _ = filepath.EvalSymlinks(node)
	_, err = exec.LookPath("unshare")
	testenv.Require(t, err == nil, "unshare (util-linux)")
	dir, err := filepath.EvalSymlinks(t.TempDir())
	must(t, err, "temp dir")
	must(t, os.Chmod(dir, 0o755), "chmod")
	spawn := `process.exit(require("child_process").spawnSync(process.env.MCPCAGE_SHIM, ["run", "test"], {stdio: "inherit"}).status); // %s` + "\n"
	a, evil, otherJS := filepath.Join(dir, "a.js"), filepath.Join(dir, "evil.js"), filepath.Join(dir, "other.js")
	must(t, os.WriteFile(a, []byte(fmt.Sprintf(spawn, "trusted")), 0o644), "write a.js")
	must(t, os.WriteFile(otherJS, []byte(fmt.Sprintf(spawn, "other")), 0o644), "write other.js")
	// The attacker's script turns the link it was started through to the
	// trusted script, then starts the shim.
	must(t, os.WriteFile(evil, []byte(`const fs = require("fs");
fs.symlinkSync(process.env.TRUSTED, process.env.LINK + ".tmp"); fs.renameSync(process.env.LINK + ".tmp", process.env.LINK);
`+fmt.Sprintf(spawn, "evil")), 0o644), "write evil.js")
	sum := sha256.Sum256([]byte(fmt.Sprintf(spawn, "trusted")))
	// The attacker's directory: theirs, not root's.
	home := filepath.Join(dir, "home")
	must(t, os.Mkdir(home, 0o755), "mkdir")
	must(t, os.Chown(home, 65534, 65534), "chown")
	link := filepath.Join(home, "cur.js")
	must(t, os.Symlink(evil, link), "symlink")
	// A root-owned link in a root-only directory is fine: it cannot have
	// pointed elsewhere at the start.
	rootLink := filepath.Join(dir, "agent-link.js")
	must(t, os.Symlink(a, rootLink), "symlink")

	trusted := trustedAgent(t)
	// What the attacker mounts over the trusted executable: another
	// program that starts the shim (a copy of this test binary, which
	// becomes a different file).
	other := filepath.Join(t.TempDir(), "other-agent")
	must(t, exec.Command("cp", os.Args[0], other).Run(), "copy")

	d := startDaemon(t, fmt.Sprintf("[agents.node-a]\nexe = [%q]\nscript = [%q]\nscript_sha256 = [%q]\n\n[agents.binagent]\nexe = [%q]\n",
		node, a, hex.EncodeToString(sum[:]), trusted))
	base := append(os.Environ(), "MCPCAGE_SOCKET="+d.socket, "MCPCAGE_SHIM="+filepath.Join(env.bin, "mcpcage"),
		"MCPCAGE_IDHELPER_SHIM="+filepath.Join(env.bin, "mcpcage"))
	// A tree of the attacker's to chroot into (a user namespace grants
	// CAP_SYS_CHROOT, no mount namespace needed): node, its libraries, the
	// shim and the daemon's socket hard-linked (the same files), and their
	// own script at the trusted script's path.
	tree := chrootTree(t, node, filepath.Join(env.bin, "mcpcage"), d.socket)
	// A mount namespace of the attacker's, with their program over the
	// trusted executable, that another process of theirs, left in the
	// host's namespaces, reaches through /proc/PID/root.
	holder := exec.Command("unshare", "-Urm", "sh", "-c", `mount --bind "$0" "$1" && echo ready && exec sleep 600`, other, trusted)
	holderOut, err := holder.StdoutPipe()
	must(t, err, "pipe")
	must(t, holder.Start(), "start the namespace holder")
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	if line, err := bufio.NewReader(holderOut).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("the namespace holder: %q, %v", line, err)
	}
	viaProc := fmt.Sprintf("cd /proc/%d/root%s && exec ./%s", holder.Process.Pid, filepath.Dir(trusted), filepath.Base(trusted))
	must(t, os.MkdirAll(filepath.Join(tree, dir), 0o755), "mkdir")
	must(t, os.WriteFile(filepath.Join(tree, a), []byte(fmt.Sprintf(spawn, "the attacker's")), 0o644), "write the fake a.js")
	tests := []struct {
		name    string
		argv    []string
		env     []string
		agent   string // the session's agent; "" when refused
		refusal string // in the shim's refusal
	}{
		{"the trusted script", []string{node, a}, nil, "node-a", ""},
		{"the trusted script through root's link", []string{node, rootLink}, nil, "node-a", ""},
		{"the trusted executable", []string{trusted}, []string{idHelper + "=spawn"}, "binagent", ""},
		{"a link the attacker turned to the trusted script", []string{node, link}, []string{"LINK=" + link, "TRUSTED=" + a}, "exe:" + node, ""},
		{"a script bind-mounted over the trusted one in a mount namespace of one's own",
			[]string{"unshare", "-Urm", "sh", "-c", `mount --bind "$0" "$1" && exec "$2" "$1"`, otherJS, a, node}, nil, "exe:" + node, ""},
		{"a script at the trusted one's path in a chroot of one's own (user namespace, no mount namespace)",
			[]string{"unshare", "-Ur", "chroot", tree, node, a}, nil, "", "is not the program its path names"},
		{"a program bind-mounted over the trusted executable in a mount namespace of one's own",
			[]string{"unshare", "-Urm", "sh", "-c", `mount --bind "$0" "$1" && exec "$1"`, other, trusted}, []string{idHelper + "=spawn"}, "", "is not the program its path names"},
		{"a program over the trusted executable in another process's mount namespace, run through /proc/PID/root",
			[]string{"sh", "-c", viaProc}, []string{idHelper + "=spawn"}, "", "lies in another mount namespace"},
		{"LD_PRELOAD into the trusted executable", []string{trusted}, []string{idHelper + "=spawn", "LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6"}, "", "environment variable LD_PRELOAD loads other code"},
		{"ELECTRON_RUN_AS_NODE for the trusted executable", []string{trusted}, []string{idHelper + "=spawn", "ELECTRON_RUN_AS_NODE=1"}, "", "environment variable ELECTRON_RUN_AS_NODE loads other code"},
		{"harmless NODE_OPTIONS for the trusted executable", []string{trusted}, []string{idHelper + "=spawn", "NODE_OPTIONS=--max-old-space-size=64"}, "binagent", ""},
		{"the trusted executable with a PATH over 510 bytes (the kernel keeps it cut; a compiled agent does not need it)",
			[]string{trusted}, []string{idHelper + "=spawn", "PATH=" + os.Getenv("PATH") + strings.Repeat(":/nonexistent", 50)}, "binagent", ""},
		{"NODE_OPTIONS over 510 bytes for the trusted executable", []string{trusted},
			[]string{idHelper + "=spawn", "NODE_OPTIONS=" + strings.Repeat("--no-warnings ", 40)}, "", "NODE_OPTIONS was over 510 bytes at exec"},
		{"the trusted executable, its environment overwritten after exec (Chromium's setproctitle, in every Electron client)",
			[]string{trusted}, []string{idHelper + "=wipe-spawn"}, "binagent", ""},
		{"LD_PRELOAD into the trusted executable, the environment overwritten after exec to hide it",
			[]string{trusted}, []string{idHelper + "=wipe-spawn", "LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6"}, "", "environment variable LD_PRELOAD loads other code"},
		{"ELECTRON_RUN_AS_NODE for the trusted executable, the environment overwritten after exec to hide it",
			[]string{trusted}, []string{idHelper + "=wipe-spawn", "ELECTRON_RUN_AS_NODE=1"}, "", "environment variable ELECTRON_RUN_AS_NODE loads other code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.argv[0], tt.argv[1:]...)
			cmd.Dir = dir
			cmd.Env = append(append([]string(nil), base...), tt.env...)
			agent, refused := d.agentOrRefusal(t, cmd)
			switch {
			case tt.refusal != "" && !strings.Contains(refused, tt.refusal):
				t.Fatalf("agent %q, refusal %q: want a refusal saying %q", agent, refused, tt.refusal)
			case tt.refusal == "" && agent != tt.agent:
				t.Fatalf("agent %q (refusal %q), want %q", agent, refused, tt.agent)
			}
			if refused != "" {
				t.Logf("shim: %s", refused)
			}
		})
		// The attacker's link, turned by the case above, is set back.
		_ = os.Remove(link)
		must(t, os.Symlink(evil, link), "symlink")
	}
}

// chrootTree hard-links into a new directory (on the same file system)
// program and the shared libraries ldd lists for it, and extra files,
// each at its own path, and returns the directory.
func chrootTree(t *testing.T, program string, extra ...string) string {
	t.Helper()
	out, err := exec.Command("ldd", program).Output()
	must(t, err, "ldd %s", program)
	files := append([]string{program}, extra...)
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				files = append(files, f)
			}
		}
	}
	tree := t.TempDir()
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		must(t, err, "resolve %s", f)
		must(t, os.MkdirAll(filepath.Join(tree, filepath.Dir(f)), 0o755), "mkdir")
		must(t, os.Link(real, filepath.Join(tree, f)), "hard-link %s (the tree must be on its file system)", f)
	}
	return tree
}

// A variable set twice is read by programs differently: python's getenv
// takes the first PATH, which it searches for the program it was started
// as (and so finds its installation, a virtual environment's .pth files
// among it, even with -I), while the daemon took the last. Python
// started by name with the attacker's venv in the first PATH and /usr/bin
// in the second ran the attacker's .pth and was identified as the
// trusted script (found by a red-team helper). A variable set twice now
// leaves the script unidentified.
func TestAgentWithAVariableSetTwiceIsNotIdentified(t *testing.T) {
	python, err := filepath.EvalSymlinks("/usr/bin/python3")
	testenv.Require(t, err == nil, "/usr/bin/python3")
	dir, err := filepath.EvalSymlinks(t.TempDir())
	must(t, err, "temp dir")
	must(t, os.Chmod(dir, 0o755), "chmod")
	py := filepath.Join(dir, "a.py")
	must(t, os.WriteFile(py, []byte("import os, subprocess, sys\nsys.exit(subprocess.call([os.environ['MCPCAGE_SHIM'], 'run', 'test']))\n"), 0o644), "write a.py")
	ver, err := exec.Command(python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
	must(t, err, "python version")
	// The attacker's virtual environment: python itself, by a link, and a
	// .pth file that leaves a mark.
	home := filepath.Join(dir, "home")
	venv := filepath.Join(home, "v")
	site := filepath.Join(venv, "lib", "python"+strings.TrimSpace(string(ver)), "site-packages")
	mark := filepath.Join(home, "mark")
	must(t, os.MkdirAll(site, 0o755), "mkdir")
	must(t, os.MkdirAll(filepath.Join(venv, "bin"), 0o755), "mkdir")
	must(t, os.Symlink(python, filepath.Join(venv, "bin", "python3")), "symlink")
	must(t, os.WriteFile(filepath.Join(venv, "pyvenv.cfg"), []byte("home = /usr/bin\n"), 0o644), "pyvenv.cfg")
	must(t, os.WriteFile(filepath.Join(site, "evil.pth"), []byte(fmt.Sprintf("import os; open(%q, 'a').write('ran')\n", mark)), 0o644), "evil.pth")
	must(t, exec.Command("chown", "-R", "65534:65534", home).Run(), "chown")
	d := startDaemon(t, fmt.Sprintf("[agents.py-a]\nexe = [%q]\nscript = [%q]\n", python, py))
	base := "MCPCAGE_SOCKET=" + d.socket + "\x01MCPCAGE_SHIM=" + filepath.Join(env.bin, "mcpcage")
	tests := []struct {
		name, env, want string
		ranEvil         bool
	}{
		{"one PATH", "PATH=/usr/bin:/bin", "py-a", false},
		{"one PATH, the attacker's venv first", "PATH=" + filepath.Join(venv, "bin") + ":/usr/bin:/bin", "exe:" + python, true},
		{"two PATHs, the attacker's venv in the first", "PATH=" + filepath.Join(venv, "bin") + "\x01PATH=/usr/bin:/bin", "exe:" + python, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(mark)
			cmd := exec.Command(os.Args[0])
			cmd.Dir = dir
			cmd.Env = []string{idHelper + "=rawexec", "MCPCAGE_IDHELPER_PROG=" + python, "MCPCAGE_IDHELPER_ARGV=python3\x01-I\x01" + py,
				"MCPCAGE_IDHELPER_ENV=" + base + "\x01" + tt.env}
			agent, refused := d.agentOrRefusal(t, cmd)
			if _, err := os.Stat(mark); (err == nil) != tt.ranEvil {
				t.Fatalf("the attacker's .pth ran: %v, want %v (the case does not test what it says)", err == nil, tt.ranEvil)
			}
			if agent != tt.want {
				t.Fatalf("agent %q (refusal %q), want %q", agent, refused, tt.want)
			}
		})
	}
}

// TestShimsPipesAreItsOwn: mcpcage run holds the MCP client's pipes until
// the daemon has them. Found by a red-team helper: the shim was dumpable,
// so any program of the same user could open /proc/SHIM/fd/0 for writing
// and send the daemon tool calls as the agent's (a writer that outlives
// the shim's hand-off), even for an agent that makes itself non-dumpable
// to keep such programs away. The shim is now non-dumpable as it starts.
// Here the shim (uid 65534) waits for a daemon that never answers; a
// shell of the same user may not open its stdin or stdout.
func TestShimsPipesAreItsOwn(t *testing.T) {
	setup(t)
	dir, err := os.MkdirTemp("", "mcpcage-itest-shim-")
	must(t, err, "a directory other users can reach")
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755), "chmod")
	sock := filepath.Join(dir, "stalled.sock")
	ln, err := net.Listen("unix", sock)
	must(t, err, "listen")
	defer func() { _ = ln.Close() }()
	must(t, os.Chmod(sock, 0o666), "chmod")
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c // never answered: the shim waits with the client's pipes
		}
	}()
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}
	// The client's pipes are the user's own (a shell of uid 65534 makes
	// them), as an MCP client's are.
	client := exec.Command("sh", "-c", `sleep 600 | "$0" --socket "$1" run github | cat >/dev/null`, filepath.Join(env.bin, "mcpcage"), sock)
	client.SysProcAttr = nobody
	must(t, client.Start(), "start the client")
	t.Cleanup(func() { _ = syscall.Kill(-client.Process.Pid, syscall.SIGKILL); _ = client.Wait() })
	var shimPid int
	select {
	case c := <-accepted:
		defer func() { _ = c.Close() }()
		raw, err := c.(*net.UnixConn).SyscallConn()
		must(t, err, "raw conn")
		must(t, raw.Control(func(fd uintptr) {
			cred, cerr := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			must(t, cerr, "peer credentials")
			shimPid = int(cred.Pid)
		}), "control")
	case <-time.After(30 * time.Second):
		t.Fatal("the shim did not connect")
	}
	for _, fd := range []string{"0>", "1<"} {
		redir := fmt.Sprintf("exec 3%s/proc/%d/fd/%s && echo opened", fd[1:], shimPid, fd[:1])
		probe := exec.Command("sh", "-c", redir)
		probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := probe.CombinedOutput()
		if err == nil || strings.Contains(string(out), "opened") || !strings.Contains(string(out), "ermission denied") {
			t.Fatalf("a program of the shim's user opening its fd %s: %v %s; want permission denied", fd[:1], err, out)
		}
	}
}
