package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/bpf"
	mcpcaged "github.com/mcpcage/mcpcage/daemon"
	"github.com/mcpcage/mcpcage/internal/testenv"
	"github.com/mcpcage/mcpcage/internal/testshard"
	"github.com/mcpcage/mcpcage/internal/tracepointhold"
)

// env is shared by all tests of the package.
var env struct {
	once       sync.Once
	err        error
	bin        string // directory with mcpcaged, mcpcage, testserver
	containerd string // containerd socket
	work       string
	runDir     string // under itestRoot: this run's binaries
	cdCmd      *exec.Cmd

	mu         sync.Mutex
	namespaces map[string]*runNamespace // this run's containerd namespaces
}

// runNamespace is one containerd namespace of this run: one daemon's,
// restarts included.
type runNamespace struct {
	// crashed: its daemon's last exit was a kill (SIGKILL), and no later
	// start of it reached readiness, which reaps what the crash left.
	crashed bool
}

// itestRoot holds one directory per test run (binaries every sandbox can
// see: not under /tmp, /root or /home, which sandboxes get private copies of).
const itestRoot = "/var/lib/mcpcage-itest"

// stampedEnv marks the processes of stampSelf: "parent" the test binary
// exec'd again once the exec stamper ran, "child" the one that runs the
// tests.
const stampedEnv = "MCPCAGE_ITEST_STAMPED"

// stampSelf loads the daemon's exec stamper (pinned: the daemons the
// tests start find it), execs this test binary again, and runs the tests
// in a child of that process (a fork and one exec). So the test process,
// the agent of many tests, has its exec recorded (mcpcaged refuses a
// compiled agent older than the record, whose environment at exec it
// cannot know), and where a test plays the shim itself (it speaks the
// shim's protocol) it is a process exec'd once by a parent the record
// knows, as a client's mcpcage run is, whatever ran the tests (go test,
// itself older than the record on a fresh machine). Without root nothing
// happens (the tests that need it say so).
func stampSelf() {
	if os.Geteuid() != 0 {
		return
	}
	self, err := os.Executable()
	switch os.Getenv(stampedEnv) {
	case "child":
		return
	case "parent":
		if err == nil {
			held := holdObservedTracepoints()
			code := runTestsInChild(self)
			if held != nil {
				_ = held.Close()
			}
			// The run's pins, whatever became of its tests' process: the
			// exec stamper's programs go with them.
			if rerr := os.RemoveAll(os.Getenv(pinDirEnv)); rerr != nil {
				fmt.Fprintf(os.Stderr, "integration: FAIL: left behind: %v\n", rerr)
				code = 1
			}
			os.Exit(code)
		}
	default:
		dir, derr := newRunPinDir()
		if derr != nil {
			fmt.Fprintf(os.Stderr, "integration: %v\n", derr)
			os.Exit(1)
		}
		_ = os.Setenv(pinDirEnv, dir) // for the tests' process and its daemons (a valid name: cannot fail)
		s, lerr := mcpcaged.LoadExecStamps(dir)
		if lerr != nil {
			fmt.Fprintf(os.Stderr, "integration: the exec stamper did not load (%v): tests whose agent is this process will be refused\n", lerr)
			return
		}
		_ = s.Close() // pinned: it stays
		if err == nil {
			err = syscall.Exec(self, os.Args, append(os.Environ(), stampedEnv+"=parent"))
		}
	}
	fmt.Fprintf(os.Stderr, "integration: exec this test binary again under the exec stamper: %v\n", err)
	os.Exit(1)
}

// holdObservedTracepoints keeps the daemons' syscall tracepoints
// registered for the run (package tracepointhold): each daemon's stop
// detaches its observers without waiting 1.6 s for the kernel, during
// which the other tests' daemons could attach none. Nil when not wanted
// or not possible (said on stderr).
func holdObservedTracepoints() *tracepointhold.Held {
	if !tracepointhold.Wanted() {
		return nil
	}
	held, err := tracepointhold.Hold("syscalls", bpf.ObservedSyscallTracepoints())
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: tracepoints not held (every daemon's stop waits for the kernel): %v\n", err)
		return nil
	}
	return held
}

// runTestsInChild runs this test binary (self) with this process's
// arguments in children that die with it, and returns the exit code. The
// tests are shared out among shardCount() children at once (testshard),
// each with its own containerd, binaries and namespaces, as concurrent
// runs on one machine have; the exec stamper's pins are theirs together.
func runTestsInChild(self string) int {
	return testshard.Run(self, os.Args[1:], testshard.Options{
		Shards: shardCount(),
		First:  longTests,
		Alone:  aloneTests,
		Env:    append(os.Environ(), stampedEnv+"=child"),
		Prepare: func(cmd *exec.Cmd) {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		},
	})
}

func TestMain(m *testing.M) {
	stampSelf()
	code := testshard.Serve(m)
	if env.cdCmd != nil && env.cdCmd.Process != nil {
		// Teardown: whatever fails here, every process of this run is
		// ended, and the tests have reported already.
		if left := teardown(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "integration: FAIL: this run left behind (removed now):\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	// The run's pin directory is removed by the process that made it
	// (stampSelf): the parent of children (others of which may still use
	// it), or this one when the tests run where they started.
	dirs := []string{env.work, env.runDir}
	if os.Getenv(stampedEnv) != "child" {
		dirs = append(dirs, os.Getenv(pinDirEnv))
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "integration: FAIL: left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// stopContainerd ends this run's containerd: SIGTERM, then SIGKILL after
// 10 s.
func stopContainerd() {
	_ = env.cdCmd.Process.Signal(syscall.SIGTERM) // an exit already under way is waited for below
	done := make(chan struct{})
	go func() { _ = env.cdCmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = env.cdCmd.Process.Kill()
		<-done
	}
}

// setup builds the binaries and starts containerd, once.
func setup(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := exec.LookPath("containerd")
	testenv.Require(t, err == nil, "containerd installed (apt-get install containerd runc)")
	_, err = exec.LookPath("runc")
	testenv.Require(t, err == nil, "runc installed")
	env.once.Do(func() { env.err = doSetup() })
	if env.err != nil {
		t.Fatalf("test environment: %v", env.err)
	}
}

func doSetup() error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	// Binaries live where every sandbox can see them: not under /tmp,
	// /root or /home, which sandboxes get private copies of.
	// One directory per run, so that two runs on one machine never
	// overwrite each other's binaries; TestMain removes it.
	if err := os.MkdirAll(itestRoot, 0o755); err != nil {
		return err
	}
	runDir, err := os.MkdirTemp(itestRoot, "run-")
	if err != nil {
		return err
	}
	if err := os.Chmod(runDir, 0o755); err != nil {
		return err
	}
	env.runDir = runDir
	env.bin = filepath.Join(runDir, "bin")
	if err := os.MkdirAll(env.bin, 0o755); err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg, tags string }{
		{"mcpcaged", "./cmd/mcpcaged", ""}, {"mcpcage", "./cmd/mcpcage", ""}, {"mcpcage-init", "./cmd/mcpcage-init", ""},
		{"testserver", "./testdata/testserver", ""}, {"hostile", "./testdata/hostile", ""}, {"remoteserver", "./testdata/remoteserver", ""},
		{"mcpcaged-failpoints", "./cmd/mcpcaged", "failpoints"}, // (daemon/audit/failpoint.go)
	} {
		cmd := exec.Command("go", "build", "-tags="+b.tags, "-o", filepath.Join(env.bin, b.out), b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static: mcpcage-init runs in any sandbox
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	// The plain Python server, beside the Go ones.
	py, err := os.ReadFile(filepath.Join(root, "testdata", "pyserver", "server.py"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(env.bin, "pyserver.py"), py, 0o755); err != nil {
		return err
	}
	// The sandbox user (nobody) must be able to reach the test server.
	for dir := env.bin; dir != "/"; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by other users; the sandboxed test server could not be executed", dir)
		}
	}
	env.work, err = os.MkdirTemp("", "mcpcage-itest-")
	if err != nil {
		return err
	}
	cfg := filepath.Join(env.work, "containerd.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		return err
	}
	env.containerd = filepath.Join(env.work, "containerd.sock")
	log, err := os.Create(filepath.Join(env.work, "containerd.log"))
	if err != nil {
		return err
	}
	env.cdCmd = exec.Command("containerd", "--config", cfg, "--root", filepath.Join(env.work, "cd-root"),
		"--state", filepath.Join(env.work, "cd-state"), "--address", env.containerd)
	env.cdCmd.Stdout, env.cdCmd.Stderr = log, log
	env.cdCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := env.cdCmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	up, seen := testenv.Poll(20*time.Second, func() (bool, string) {
		out, err := exec.Command("ctr", "--address", env.containerd, "version").CombinedOutput()
		return err == nil, fmt.Sprintf("%v %s", err, out)
	})
	if !up {
		b, _ := os.ReadFile(log.Name())
		return fmt.Errorf("containerd did not come up: %s\n%s", seen, b)
	}
	return nil
}

// daemon is one mcpcaged under test.
type daemon struct {
	t          testing.TB
	dir        string
	socket     string
	namespace  string
	containerd string // its containerd's socket
	config     string
	cmd        *exec.Cmd
	log        *syncBuffer
	exited     chan struct{}
	shimCred   *syscall.Credential // when set, shims run with these credentials
	extraEnv   []string            // for mcpcaged
	noWait     bool                // start returns at once (socket activation starts it on demand)
	wrap       []string            // a command mcpcaged runs under (socket activation)
	binary     string              // in env.bin: "mcpcaged", or "mcpcaged-failpoints"
}

// startDaemon runs mcpcaged with the test server and extra config text
// (TOML appended to the generated file).
func startDaemon(t testing.TB, extra string, opts ...func(*daemon)) *daemon {
	t.Helper()
	setup(t)
	return startDaemonOn(t, env.containerd, extra, opts...)
}

// testIsTheShim is a [daemon] section that makes this test binary a
// mcpcage the daemon trusts as a shim (shim_paths, beside the real one),
// for tests that speak the shim's side of the protocol themselves (the
// test process is exec'd once by its parent: see stampSelf).
func testIsTheShim(t testing.TB) string {
	t.Helper()
	setup(t) // env.bin is known after setup
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("[daemon]\nshim_paths = [%q, %q]\n", self, filepath.Join(env.bin, "mcpcage"))
}

// failpoints has startDaemon run bin/mcpcaged-failpoints (built with the
// tag "failpoints") with env, the failpoints' variables.
func failpoints(env ...string) func(*daemon) {
	return func(d *daemon) { d.binary, d.extraEnv = "mcpcaged-failpoints", append(d.extraEnv, env...) }
}

// startDaemonOn is startDaemon with the containerd at socket address;
// opts change the daemon before it starts.
func startDaemonOn(t testing.TB, address, extra string, opts ...func(*daemon)) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp(env.work, "d-")
	if err != nil {
		t.Fatal(err)
	}
	// The run's prefix in every namespace: what is this run's on the
	// machine (cgroups, pinned links) is told apart from other runs'.
	ns := runNamespacePrefix() + filepath.Base(dir)[2:]
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "mcpcage.sock"), namespace: strings.ToLower(ns), containerd: address, binary: "mcpcaged"}
	for _, o := range opts {
		o(d)
	}
	env.mu.Lock()
	if env.namespaces == nil {
		env.namespaces = map[string]*runNamespace{}
	}
	env.namespaces[d.namespace] = &runNamespace{}
	env.mu.Unlock()
	d.config = filepath.Join(dir, "config.toml")
	daemonSection := fmt.Sprintf(`[daemon]
socket = %q
state_dir = %q
containerd_address = %q
containerd_namespace = %q
bpf_pin_dir = %q
log_level = "debug"
metrics_address = "127.0.0.1:0"
`, d.socket, filepath.Join(dir, "state"), d.containerd, d.namespace, pinRoot())
	if !strings.Contains(extra, "stop_timeout") {
		daemonSection += "stop_timeout = \"1s\"\n"
	}
	if !strings.Contains(extra, "audit_log") {
		daemonSection += fmt.Sprintf("audit_log = %q\n", filepath.Join(dir, "log", "audit.jsonl"))
	}
	if !strings.Contains(extra, "default_decision") {
		// Tests of other layers run in observe mode; consent tests say "deny".
		daemonSection += "default_decision = \"allow\"\n"
	}
	if !strings.Contains(extra, "[daemon]") {
		extra = daemonSection + extra
	} else {
		extra = strings.Replace(extra, "[daemon]", daemonSection, 1)
	}
	body := extra + fmt.Sprintf("\n[servers.test]\ncommand = [%q]\n", filepath.Join(env.bin, "testserver"))
	if err := os.WriteFile(d.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		code := d.stop()
		// A daemon killed and not restarted leaves its sessions running:
		// remove them now, not at the end of the run.
		if crashed(d.namespace) {
			for _, problem := range reapNamespace(d.namespace) {
				t.Logf("clean-up after the killed mcpcaged: %s", problem)
			}
			return
		}
		// One that stopped cleanly removed its sandboxes, warm ones
		// included: what is left is this test's to report (the run's
		// teardown would only say which namespace).
		if code != 0 {
			return // the test saw why, or will
		}
		if left := d.leftAfterStop(); len(left) > 0 {
			t.Errorf("mcpcaged stopped cleanly but left %s in its namespace %s; its log:\n%s", strings.Join(left, ", "), d.namespace, tail(d.log.String(), 8000))
			if d.containerd == env.containerd {
				for _, problem := range reapNamespace(d.namespace) {
					t.Logf("clean-up: %s", problem)
				}
			}
		}
	})
	d.start()
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.log = &syncBuffer{}
	argv := append(append([]string(nil), d.wrap...), filepath.Join(env.bin, d.binary), "--config", d.config)
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(os.Environ(), d.extraEnv...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	cmd, exited := d.cmd, d.exited
	go func() {
		_ = cmd.Wait() // the exit status is read from ProcessState
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			setCrashed(d.namespace, true)
		}
		close(exited)
	}()
	if d.noWait {
		return
	}
	// Ready is when the socket answers a status request: a daemon answers
	// once New has reaped what a crashed predecessor left. The log is for
	// diagnostics only.
	testenv.WaitFor(d.t, "mcpcaged to answer a status request on "+d.socket, 20*time.Second, func() (bool, string) {
		select {
		case <-exited:
			d.t.Fatalf("mcpcaged exited during start-up (%v):\n%s", cmd.ProcessState, d.log.String())
		default:
		}
		return d.answers()
	})
	setCrashed(d.namespace, false)
}

// answers reports whether the daemon's socket accepts a connection and
// answers a status request, or what went wrong.
func (d *daemon) answers() (bool, string) {
	c, err := api.Dial(d.socket)
	if err != nil {
		return false, err.Error()
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return false, err.Error()
	}
	r, err := c.Do(api.Request{Op: api.OpStatus})
	switch {
	case err != nil:
		return false, err.Error()
	case !r.OK:
		return false, "status: " + r.Error
	}
	return true, "a status reply"
}

// stop sends SIGTERM and waits; it returns the exit code.
// dumpGoroutines has mcpcaged print every goroutine's stack to its log
// (Go's SIGQUIT dump), and exit: a test that caught it stalled fails
// with the dump, which says where it waits (stop prints the log of a
// failed test). Once per daemon.
func (d *daemon) dumpGoroutines(why string) {
	if _, done := dumpedDaemons.LoadOrStore(d.cmd.Process.Pid, true); done {
		return
	}
	d.t.Logf("mcpcaged stalled (%s): its goroutines are dumped to its log, and it exits", why)
	_ = d.cmd.Process.Signal(syscall.SIGQUIT)
}

// dumpedDaemons holds the pids of the daemons dumpGoroutines signalled
// (a daemon is copied by value in places: no lock in it).
var dumpedDaemons sync.Map

func (d *daemon) stop() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return -1
	}
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM) // a daemon that did not get it is caught below
		select {
		case <-d.exited:
		case <-time.After(40 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
			d.t.Errorf("mcpcaged did not stop on SIGTERM within 40s")
		}
	}
	if d.t.Failed() {
		d.t.Logf("mcpcaged log:\n%s", d.log.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

// shimCmd returns an unstarted `mcpcage run NAME` for this daemon.
func (d *daemon) shimCmd(name string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), "run", name)
	cmd.Env = append(os.Environ(), "MCPCAGE_SOCKET="+d.socket)
	if d.shimCred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.shimCred}
	}
	return cmd
}

// leftAfterStop lists the containers and tasks in the namespace of a
// daemon that has stopped; nil when its containerd does not answer (a
// test stopped it).
func (d *daemon) leftAfterStop() []string {
	var left []string
	for _, kind := range []string{"containers", "tasks"} {
		out, err := exec.Command("ctr", "--address", d.containerd, "-n", d.namespace, kind, "ls", "-q").Output()
		if err != nil {
			return nil
		}
		for _, id := range strings.Fields(string(out)) {
			left = append(left, strings.TrimSuffix(kind, "s")+" "+id)
		}
	}
	return left
}

// containers lists the containers in the daemon's namespace.
func (d *daemon) containers() []string { return d.ctrList("containers") }

// tasks lists the tasks in the daemon's namespace.
func (d *daemon) tasks() []string { return d.ctrList("tasks") }

func (d *daemon) ctrList(kind string) []string {
	d.t.Helper()
	out, err := exec.Command("ctr", "--address", d.containerd, "-n", d.namespace, kind, "ls", "-q").CombinedOutput()
	if err != nil {
		d.t.Fatalf("ctr %s ls: %v %s", kind, err, out)
	}
	return strings.Fields(string(out))
}

// leftovers describes anything a session left behind: containers, tasks,
// mounts or cgroups of this daemon's namespace, and FIFO directories.
// The prepared sandboxes of the warm pool are not leftovers: what belongs
// to them is left out, and while one is being prepared the answer is
// "being prepared" (it would show as a container of no session).
func (d *daemon) leftovers() []string {
	d.t.Helper()
	var st api.Status
	_ = api.Call(d.socket, api.Request{Op: api.OpStatus}, &st) // a stopped daemon has no warm sandboxes: count everything
	var warm []string
	if st.Warm != nil {
		if st.Warm.Building > 0 {
			return []string{fmt.Sprintf("%d warm sandbox(es) being prepared", st.Warm.Building)}
		}
		for _, e := range st.Warm.Entries {
			warm = append(warm, strings.TrimPrefix(e.Container, "mcpcage-"))
		}
	}
	var found []string
	add := func(what string) {
		for _, id := range warm {
			if strings.Contains(what, id) {
				return
			}
		}
		found = append(found, what)
	}
	for _, c := range d.containers() {
		add("container " + c)
	}
	for _, c := range d.tasks() {
		add("task " + c)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	sc := bufio.NewScanner(bytes.NewReader(mounts))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "mcpcage-") && strings.Contains(sc.Text(), d.namespace) {
			add("mount " + sc.Text())
		}
	}
	for _, cg := range []string{"/sys/fs/cgroup/unified/" + d.namespace, "/sys/fs/cgroup/pids/" + d.namespace, "/sys/fs/cgroup/memory/" + d.namespace} {
		ents, _ := os.ReadDir(cg)
		for _, e := range ents {
			if e.IsDir() {
				add("cgroup " + filepath.Join(cg, e.Name()))
			}
		}
	}
	for _, dir := range []string{"fifo", "stdio", "roots"} {
		fifos, _ := os.ReadDir(filepath.Join(d.dir, "state", dir))
		for _, f := range fifos {
			add(dir + " dir " + f.Name())
		}
	}
	return found
}

// waitClean waits until the namespace holds nothing of mcpcage's.
func (d *daemon) waitClean(what string) {
	d.t.Helper()
	testenv.WaitFor(d.t, what+" to leave nothing behind", 20*time.Second, func() (bool, string) {
		left := d.leftovers()
		return len(left) == 0, fmt.Sprint(left)
	})
}

// openToOtherUsers lets users other than root reach d: its directories
// and its socket (a test user's shim, CLI or server).
func (d *daemon) openToOtherUsers(t *testing.T) {
	t.Helper()
	for _, p := range []string{env.work, d.dir} {
		must(t, os.Chmod(p, 0o755), "open %s to other users", p)
	}
	must(t, os.Chmod(d.socket, 0o666), "open the daemon's socket to other users")
}

// waitLog waits for a substring in the daemon's log.
func (d *daemon) waitLog(sub string) {
	d.t.Helper()
	testenv.WaitFor(d.t, fmt.Sprintf("%q in the mcpcaged log", sub), 20*time.Second, func() (bool, string) {
		if strings.Contains(d.log.String(), sub) {
			return true, ""
		}
		return false, fmt.Sprintf("%d bytes of log without it (the whole log follows the failure)", d.log.Len())
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
