package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

// runRoot holds the binaries of one run where every sandbox can see them
// (not under /tmp, /root or /home, which sandboxes get private copies of),
// as the integration tests do.
const runRoot = "/var/lib/mcpcage-bench"

// env is what one run starts, and stops in close.
type env struct {
	log        io.Writer
	repo       string // repository root
	work       string // temporary: containerd's and the daemons' state, logs
	runDir     string // under runRoot: this run's binaries
	bin        string // runDir/bin
	containerd string // socket of the private containerd
	id         string // suffix of this run's containerd namespaces
	procs      []*exec.Cmd
	daemons    []*daemon
}

// daemon is one mcpcaged of the run.
type daemon struct {
	name      string // "always", "batch", "memory"
	socket    string
	namespace string
	auditLog  string // its audit log (rotated files beside it)
	cmd       *exec.Cmd
}

// newEnv copies the binaries from repo/bin and starts a private containerd.
func newEnv(repo string, log io.Writer) (*env, error) {
	e := &env{log: log, repo: repo}
	var err error
	if e.work, err = os.MkdirTemp("", "mcpcage-bench-"); err != nil {
		return nil, err
	}
	e.id = strings.ToLower(filepath.Base(e.work)[len("mcpcage-bench-"):])
	if err := os.MkdirAll(runRoot, 0o755); err != nil {
		return e, err
	}
	if e.runDir, err = os.MkdirTemp(runRoot, "run-"); err != nil {
		return e, err
	}
	e.bin = filepath.Join(e.runDir, "bin")
	if err := os.MkdirAll(e.bin, 0o755); err != nil {
		return e, err
	}
	if err := os.Chmod(e.runDir, 0o755); err != nil {
		return e, err
	}
	for _, b := range []string{"mcpcaged", "mcpcage", "mcpcage-init", "testserver"} {
		if err := copyFile(filepath.Join(repo, "bin", b), filepath.Join(e.bin, b)); err != nil {
			return e, fmt.Errorf("binaries (make build): %w", err)
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(e.bin, "linerelay"), "./bench/cmd/linerelay")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return e, fmt.Errorf("build the line relay: %w\n%s", err, out)
	}
	return e, e.startContainerd()
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// start runs cmd with its output in work/name.log; close stops it.
func (e *env) start(name string, cmd *exec.Cmd) error {
	f, err := os.Create(filepath.Join(e.work, name+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: a Ctrl-C reaches only us, and we stop them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	track(cmd.Process.Pid)
	e.procs = append(e.procs, cmd)
	return nil
}

// logTail is the end of work/name.log, for error messages.
func (e *env) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(e.work, name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (e *env) startContainerd() error {
	cfg := filepath.Join(e.work, "containerd.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		return err
	}
	e.containerd = filepath.Join(e.work, "containerd.sock")
	cmd := exec.Command("containerd", "--config", cfg, "--root", filepath.Join(e.work, "cd-root"),
		"--state", filepath.Join(e.work, "cd-state"), "--address", e.containerd)
	if err := e.start("containerd", cmd); err != nil {
		return err
	}
	return waitFor(20*time.Second, func() error {
		out, err := exec.Command("ctr", "--address", e.containerd, "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("containerd did not answer: %v %s\n%s", err, out, e.logTail("containerd"))
		}
		return nil
	})
}

// startDaemon runs an mcpcaged with servers "everything"
// (mcp-server-everything stdio) and "test" (the Go test server), in
// observe mode (every call allowed), its metrics listener off.
//
// With warm, the daemon keeps warm sandboxes (its defaults); without,
// warm_sandboxes = 0 and every session builds its container.
func (e *env) startDaemon(name, auditSync string, warm bool) (*daemon, error) {
	return e.startDaemonDeciding(name, auditSync, warm, "allow")
}

// startDaemonDeciding is startDaemon with another default_decision.
func (e *env) startDaemonDeciding(name, auditSync string, warm bool, decision string) (*daemon, error) {
	return e.startDaemonWith(name, auditSync, warm, decision, "")
}

// guardConfig turns on the data-flow guard for the bench's server: its
// results taint the run and are scanned, its calls' arguments are
// scanned and decided by a rule (log: forwarded), and every call's
// record names the influences before it.
const guardConfig = `labels = ["confidential"]

[[flow]]
from = "confidential"
to = "confidential"
action = "log"

[[detector]]
name = "employee_id"
pattern = "EMP-[0-9]{6}"
`

// startDaemonWith is startDaemonDeciding with extra TOML after the
// [servers.everything] table.
func (e *env) startDaemonWith(name, auditSync string, warm bool, decision, extra string) (*daemon, error) {
	dir := filepath.Join(e.work, "d-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &daemon{name: name, socket: filepath.Join(dir, "mcpcage.sock"), namespace: "mcpcage-bench-" + e.id + "-" + name,
		auditLog: filepath.Join(dir, "audit.jsonl")}
	cfg := fmt.Sprintf(`[daemon]
socket = %q
state_dir = %q
containerd_address = %q
containerd_namespace = %q
audit_log = %q
audit_sync = %q
default_decision = %q
metrics_address = ""
stop_timeout = "1s"
warm_sandboxes = %d

[servers.test]
command = [%q]

[servers.everything]
command = ["mcp-server-everything", "stdio"]
%s`, d.socket, filepath.Join(dir, "state"), e.containerd, d.namespace,
		d.auditLog, auditSync, decision, warmCount(warm), filepath.Join(e.bin, "testserver"), extra)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(filepath.Join(e.bin, "mcpcaged"), "--config", path)
	if err := e.start("mcpcaged-"+name, d.cmd); err != nil {
		return nil, err
	}
	e.daemons = append(e.daemons, d)
	err := waitFor(20*time.Second, func() error {
		if d.cmd.ProcessState != nil {
			return fmt.Errorf("mcpcaged %s exited:\n%s", name, e.logTail("mcpcaged-"+name))
		}
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			return fmt.Errorf("mcpcaged %s did not answer on %s: %v\n%s", name, d.socket, err, e.logTail("mcpcaged-"+name))
		}
		return c.Close()
	})
	return d, err
}

func warmCount(warm bool) int {
	if warm {
		return 4
	}
	return 0
}

// warmReady waits until d's warm pool holds a prepared sandbox and
// prepares none: the next session starts warm.
func (d *daemon) warmReady() error {
	return waitFor(60*time.Second, func() error {
		var st api.Status
		if err := api.Call(d.socket, api.Request{Op: api.OpStatus}, &st); err != nil {
			return err
		}
		if st.Warm == nil || st.Warm.Disabled != "" {
			return fmt.Errorf("mcpcaged %s has no warm pool: %+v", d.name, st.Warm)
		}
		if st.Warm.Building > 0 || len(st.Warm.Entries) == 0 {
			return fmt.Errorf("mcpcaged %s prepared no warm sandbox within 60s: %+v", d.name, st.Warm)
		}
		return nil
	})
}

func (e *env) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(e.log, format+"\n", args...)
}

func waitFor(limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// close stops everything the run started, newest first: the daemons stop
// their sandboxes; containers still left are killed with ctr; then
// containerd, the containerd shims on its socket, and every other process
// left behind as an orphan (re-parented to us, the subreaper). It removes
// the run's directories unless something is still mounted under them.
func (e *env) close() error {
	var errs []error
	for i := len(e.procs) - 1; i >= 0; i-- {
		cmd := e.procs[i]
		if cmd.Args[0] == "containerd" {
			errs = append(errs, e.removeContainers())
		}
		stop(cmd.Process.Pid, 10*time.Second)
		_ = cmd.Wait() // stopped by us: its exit status says nothing
	}
	if e.containerd != "" {
		for _, p := range scan() {
			if p.comm == "containerd-shim" || strings.HasPrefix(p.comm, "containerd-shim") {
				if strings.Contains(strings.Join(p.args, " "), e.containerd) {
					e.logf("bench: stopping containerd-shim %d left by containerd", p.pid)
					stop(p.pid, 5*time.Second)
				}
			}
		}
	}
	errs = append(errs, e.removeCgroups())
	for _, p := range orphans() {
		e.logf("bench: stopping leftover process %d (%s)", p.pid, strings.Join(p.args, " "))
		stop(p.pid, 5*time.Second)
	}
	reap()
	for _, dir := range []string{e.work, e.runDir} {
		if dir == "" {
			continue
		}
		if m := mountedUnder(dir); m != "" {
			errs = append(errs, fmt.Errorf("%s still mounted; not removing %s", m, dir))
			continue
		}
		errs = append(errs, os.RemoveAll(dir))
	}
	_ = os.Remove(runRoot) // fails unless empty: another run is using it
	return errors.Join(errs...)
}

// removeContainers kills and removes what the daemons left in their
// namespaces (nothing, when they stopped cleanly).
func (e *env) removeContainers() error {
	var errs []error
	for _, d := range e.daemons {
		ctr := func(args ...string) ([]byte, error) {
			return exec.Command("ctr", append([]string{"--address", e.containerd, "-n", d.namespace}, args...)...).CombinedOutput()
		}
		out, err := ctr("containers", "ls", "-q")
		if err != nil {
			errs = append(errs, fmt.Errorf("list containers in %s: %v %s", d.namespace, err, out))
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			e.logf("bench: removing container %s left in %s", id, d.namespace)
			// A container without a task has nothing to kill: the remove below
			// reports what matters.
			_, _ = ctr("tasks", "kill", "-s", "SIGKILL", id)
			time.Sleep(200 * time.Millisecond)
			_, _ = ctr("tasks", "rm", "-f", id)
			if out, err := ctr("containers", "rm", id); err != nil {
				errs = append(errs, fmt.Errorf("remove container %s: %v %s", id, err, out))
			}
		}
		if out, err := ctr("namespaces", "rm", d.namespace); err != nil {
			errs = append(errs, fmt.Errorf("remove namespace %s: %v %s", d.namespace, err, out))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the per-namespace parent cgroups the sandboxes'
// cgroups (/NAMESPACE/mcpcage-ID) were made in: runc removes the leaves
// only. rmdir removes nothing but an empty cgroup.
func (e *env) removeCgroups() error {
	var errs []error
	for _, d := range e.daemons {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", d.namespace))
		if dir := filepath.Join("/sys/fs/cgroup", d.namespace); exists(dir) {
			dirs = append(dirs, dir) // cgroup v2
		}
		for _, dir := range dirs {
			if err := os.Remove(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// stop sends SIGTERM, then SIGKILL after limit.
func stop(pid int, limit time.Duration) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // gone already, at worst
			return
		}
		time.Sleep(50 * time.Millisecond)
		reap()
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// mountedUnder is a mount point under dir, or "".
func mountedUnder(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			return fields[4]
		}
	}
	return ""
}

// becomeSubreaper makes orphans of our descendants our children, so that
// close finds them.
func becomeSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}

// orphans are our children that no exec.Cmd of ours started: processes
// re-parented to us.
func orphans() []proc {
	var out []proc
	me := os.Getpid()
	for _, p := range scan() {
		if p.ppid == me && alive(p.pid) && !tracked(p.pid) {
			out = append(out, p)
		}
	}
	return out
}

// reap collects exited orphans (zombies no exec.Cmd waits for).
func reap() {
	for _, p := range scan() {
		if p.ppid == os.Getpid() && !alive(p.pid) && !tracked(p.pid) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

// grantBenchClient lets the bench client (node running client.mjs: the
// agent is the script) use every tool of "everything".
func (d *daemon) grantBenchClient(repo string) error {
	script, err := filepath.EvalSymlinks(filepath.Join(repo, "bench", "client.mjs"))
	if err != nil {
		return err
	}
	var rec api.Consent
	return api.Call(d.socket, api.Request{Op: api.OpGrant, Grant: &api.Grant{Agent: "script:" + script, Server: "everything", Tools: []string{"*"}}}, &rec)
}
