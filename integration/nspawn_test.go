package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// nspawnCache keeps the debootstrapped base tree between local runs; CI
// builds it fresh.
const nspawnCache = "/var/cache/mcpcage-nspawn/base"

// machine is a Debian tree booted with systemd-nspawn.
type machine struct {
	t       *testing.T
	root    string
	cmd     *exec.Cmd
	init    int
	cgroups []string
	log     string
}

func baseTree(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nspawnCache, "usr/lib/systemd/systemd")); err == nil && !testenv.InCI() {
		return nspawnCache
	}
	// Every run builds in a directory of its own: runs sharing the
	// machine never meet in a half-built tree.
	must(t, os.MkdirAll(filepath.Dir(nspawnCache), 0o755), "cache dir")
	tmp := fmt.Sprintf("%s.tmp-%d", nspawnCache, os.Getpid())
	must(t, os.RemoveAll(tmp), "remove a partial tree")
	mirror := "http://deb.debian.org/debian"
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,ca-certificates", "bookworm", tmp, mirror).CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(string(out), 3000))
	}
	// The tree's apt uses the host's sources (the mirrors reachable here).
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		must(t, os.WriteFile(filepath.Join(tmp, "etc/apt/sources.list"), b, 0o644), "apt sources")
	}
	if matches, _ := filepath.Glob("/etc/apt/sources.list.d/*"); len(matches) > 0 {
		for _, m := range matches {
			b, err := os.ReadFile(m)
			must(t, err, "apt sources")
			must(t, os.WriteFile(filepath.Join(tmp, "etc/apt/sources.list.d", filepath.Base(m)), b, 0o644), "apt sources")
		}
	}
	must(t, os.WriteFile(filepath.Join(tmp, "etc/hostname"), []byte("mcpcage-test\n"), 0o644), "hostname")
	if testenv.InCI() {
		// CI builds fresh and keeps nothing: the tree is this run's.
		t.Cleanup(func() { _ = os.RemoveAll(tmp) })
		return tmp
	}
	// Replace the cache (another run may have just filled it: then it is
	// as good as ours).
	old := fmt.Sprintf("%s.old-%d", nspawnCache, os.Getpid())
	if err := os.Rename(nspawnCache, old); err == nil {
		must(t, os.RemoveAll(old), "remove the stale cache")
	}
	if err := os.Rename(tmp, nspawnCache); err != nil {
		must(t, os.RemoveAll(tmp), "remove this run's tree")
	}
	return nspawnCache
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// boot copies the base tree and boots it.
func boot(t *testing.T) *machine {
	t.Helper()
	base := baseTree(t)
	m := &machine{t: t, root: filepath.Join("/var/tmp", fmt.Sprintf("mcpcage-nspawn-%d", os.Getpid()))}
	must(t, os.RemoveAll(m.root), "remove a stale machine")
	if out, err := exec.Command("cp", "-a", base, m.root).CombinedOutput(); err != nil {
		t.Fatalf("copy the tree: %v %s", err, out)
	}
	t.Cleanup(func() { _ = os.RemoveAll(m.root) })
	// nspawn in cgroups of its own, below ours, in every hierarchy.
	f, err := os.Open("/proc/self/cgroup")
	must(t, err, "cgroups")
	sc := bufio.NewScanner(f)
	name := fmt.Sprintf("nspawn-itest-%d", os.Getpid())
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		h := parts[1]
		switch h {
		case "":
			h = "unified"
		case "name=systemd":
			h = "systemd"
		}
		dir := filepath.Join("/sys/fs/cgroup", h, parts[2], name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			continue
		}
		if h == "cpuset" {
			for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), k))
				_ = os.WriteFile(filepath.Join(dir, k), b, 0o644) // best effort, like the hierarchies: nspawn fails clearly without it
			}
		}
		m.cgroups = append(m.cgroups, dir)
	}
	_ = f.Close()
	script := ""
	for _, d := range m.cgroups {
		script += fmt.Sprintf("echo $$ > %s/cgroup.procs; ", d)
	}
	script += fmt.Sprintf("exec systemd-nspawn -q -D %s -M mcpcage-itest-%d -b --register=no --keep-unit --console=read-only --capability=all '--system-call-filter=bpf keyctl add_key request_key pidfd_getfd perf_event_open landlock_create_ruleset landlock_add_rule landlock_restrict_self fanotify_init fanotify_mark open_by_handle_at'", m.root, os.Getpid())
	m.log = filepath.Join(t.TempDir(), "nspawn.log")
	lf, err := os.Create(m.log)
	must(t, err, "nspawn log")
	m.cmd = exec.Command("sh", "-c", script)
	m.cmd.Stdout, m.cmd.Stderr = lf, lf
	must(t, m.cmd.Start(), "start systemd-nspawn")
	t.Cleanup(m.stop)
	nspawnLog := func() string { b, _ := os.ReadFile(m.log); return tail(string(b), 3000) }
	// The machine's init is nspawn's child in a pid namespace of its own.
	// nspawn's first child is a helper that sets the machine up and exits
	// (taking it for the init was a race that a loaded machine lost), so
	// the init is looked for on every poll.
	findInit := func() int {
		self, _ := os.Readlink("/proc/self/ns/pid")
		out, _ := exec.Command("pgrep", "-P", fmt.Sprint(m.cmd.Process.Pid)).Output()
		for _, f := range strings.Fields(string(out)) {
			ns, err := os.Readlink("/proc/" + f + "/ns/pid")
			if err == nil && ns != self {
				pid, _ := strconv.Atoi(f)
				return pid
			}
		}
		return 0
	}
	testenv.WaitFor(t, "nspawn to start an init", nspawnBootWait, func() (bool, string) {
		m.init = findInit()
		return m.init != 0, "nspawn log:\n" + nspawnLog()
	})
	testenv.WaitFor(t, "the machine to boot", nspawnBootWait, func() (bool, string) {
		if pid := findInit(); pid != 0 {
			m.init = pid
		}
		var stderr bytes.Buffer
		cmd := exec.Command("nsenter", "-t", fmt.Sprint(m.init), "-a", "systemctl", "is-system-running", "--wait")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		s := strings.TrimSpace(string(out))
		alive := "alive"
		if _, serr := os.Stat(fmt.Sprintf("/proc/%d", m.init)); serr != nil {
			alive = "gone"
		}
		return s == "running" || s == "degraded", fmt.Sprintf("state %q (%v: %s; the machine's init, pid %d, is %s); nspawn log:\n%s",
			s, err, strings.TrimSpace(stderr.String()), m.init, alive, nspawnLog())
	})
	// runc inside needs the v1 controllers writable in the machine.
	if out, err := m.root_("sh", "-c", "for m in $(findmnt -rn -t cgroup -o TARGET); do mount -o remount,bind,rw $m; done"); err != nil {
		t.Fatalf("make the machine's cgroup controllers writable: %v\n%s", err, out)
	}
	return m
}

// root_ runs a privileged setup command in the machine.
func (m *machine) root_(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(m.init), "-a"}, args...)...).CombinedOutput()
	return string(out), err
}

// run runs a command as a unit of the machine's systemd: confined by the
// machine's capabilities and seccomp filter, like any service there.
func (m *machine) run(args ...string) (string, error) {
	return m.root_(append([]string{"systemd-run", "--wait", "--pipe", "--quiet", "--"}, args...)...)
}

func (m *machine) mustRun(args ...string) string {
	m.t.Helper()
	out, err := m.run(args...)
	if err != nil {
		m.t.Fatalf("in the machine: %v: %v\n%s", args, err, tail(out, 4000))
	}
	return out
}

func (m *machine) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	// Teardown: each step is best effort, and the next one follows.
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_, _ = m.root_("systemctl", "poweroff", "--force")
		_ = m.cmd.Process.Kill()
		<-done
	}
	for _, d := range m.cgroups {
		_ = exec.Command("find", d, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";").Run()
	}
	m.cmd = nil
}

// statusLine finds one live kernel session in `mcpcage status`, however
// wide its columns are.
var statusLine = regexp.MustCompile(`(?m)^kernel sessions:\s+1 `)

func TestDebPackageInBootedDebian(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "nsenter", "dpkg-deb"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" (apt-get install debootstrap systemd-container)")
	}
	setup(t)
	deb, _ := buildPackages(t)
	bootTurn(t)
	m := boot(t)
	b, err := os.ReadFile(deb)
	must(t, err, "read .deb")
	must(t, os.WriteFile(filepath.Join(m.root, "root/mcpcage.deb"), b, 0o644), "copy .deb")
	ts, _ := os.ReadFile(filepath.Join(env.bin, "testserver"))
	must(t, os.MkdirAll(filepath.Join(m.root, "usr/local/libexec"), 0o755), "mkdir")
	must(t, os.WriteFile(filepath.Join(m.root, "usr/local/libexec/testserver"), ts, 0o755), "copy test server")

	// apt resolves containerd and runc from Debian.
	if out, err := m.root_("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /root/mcpcage.deb"); err != nil {
		t.Fatalf("apt install ./mcpcage.deb: %v\n%s", err, tail(out, 4000))
	}
	if out := m.mustRun("systemctl", "is-active", "mcpcaged.socket", "containerd.service"); out != "active\nactive\n" {
		t.Fatalf("after install: %q", out)
	}
	if out, _ := m.run("getent", "group", "mcpcage"); !strings.HasPrefix(out, "mcpcage:") {
		t.Fatalf("group mcpcage missing: %q", out)
	}
	if out, _ := m.run("systemctl", "is-active", "mcpcaged.service"); strings.TrimSpace(out) == "active" {
		t.Fatal("mcpcaged runs before anyone asked for it: it should be socket-activated")
	}
	// A server and observe mode, so a session needs no grant.
	conf := "\n[daemon]\ndefault_decision = \"allow\"\nrequire_ebpf = false\naudit_journal = true\n[servers.test]\ncommand = [\"/usr/local/libexec/testserver\"]\n" +
		// A host-network server on "public": its rules need the host's
		// addresses and routes (netlink, which the unit must allow).
		"[servers.pub]\ncommand = [\"/usr/local/libexec/testserver\"]\nnetwork = \"host\"\negress = [\"public:443\"]\n"
	cfgPath := filepath.Join(m.root, "etc/mcpcage/config.toml")
	old, _ := os.ReadFile(cfgPath)
	cfgText := strings.Replace(string(old), "[daemon]\n", "", 1) // the shipped file's [daemon] holds only comments
	must(t, os.WriteFile(cfgPath, []byte(cfgText+conf), 0o644), "config")

	// The first client starts the daemon through the socket; it reaches READY.
	status := m.mustRun("mcpcage", "status")
	for _, want := range []string{"containerd:", "connected (containerd", "sessions:", "audit log:", "healthy", "metrics:",
		"renames, deletions and attribute changes in writable mounts checked where the kernel acted (fanotify)"} {
		if !strings.Contains(status, want) {
			t.Errorf("mcpcage status inside the machine lacks %q:\n%s", want, status)
		}
	}
	if out := m.mustRun("systemctl", "show", "-p", "ActiveState,SubState,StatusText", "mcpcaged.service"); !strings.Contains(out, "ActiveState=active") || !strings.Contains(out, "StatusText=") {
		t.Fatalf("service after activation:\n%s", out)
	}
	t.Logf("enforcement in the machine:\n%s", grepLines(status, "enforcement"))

	// A session through the shim, inside the machine.
	session := `printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' '{"jsonrpc":"2.0","method":"notifications/initialized"}' '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"inside nspawn"}}}' | mcpcage run test`
	if out, err := m.run("sh", "-c", session); err != nil || !strings.Contains(out, `"text":"inside nspawn"`) {
		logs, _ := m.root_("journalctl", "-u", "mcpcaged", "--no-pager", "-n", "60")
		t.Fatalf("session inside the machine: %v\n%s\njournal:\n%s", err, tail(out, 2000), logs)
	}

	// The shim is executable, not readable, by users: every exec of it is
	// non-dumpable from its start (its pipes are its own).
	if out, err := m.run("stat", "-c", "%a", "/usr/bin/mcpcage"); err != nil || strings.TrimSpace(out) != "711" {
		t.Fatalf("mode of /usr/bin/mcpcage: %v %q, want 711", err, out)
	}

	// The host-network server on "public" under the unit's hardening:
	// its rules are built from the host's addresses and routes.
	pub := strings.Replace(session, "mcpcage run test", "mcpcage run pub", 1)
	if out, err := m.run("sh", "-c", pub); err != nil || !strings.Contains(out, `"text":"inside nspawn"`) {
		t.Fatalf("a public-egress session inside the machine: %v\n%s", err, tail(out, 2000))
	}
	if logs, _ := m.root_("journalctl", "-u", "mcpcaged", "--no-pager", "-o", "cat"); strings.Contains(logs, "addresses or routes could not be read") {
		t.Fatalf("the daemon could not read the host's addresses or routes under its unit:\n%s", tail(logs, 2000))
	}

	// The eBPF layer loads inside the machine's cgroup namespace (its
	// levels calibrated) and registers a live session's cgroup.
	live := `(printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' '{"jsonrpc":"2.0","method":"notifications/initialized"}' '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":3000}}}'; sleep 4) | mcpcage run test >/dev/null & sleep 2; mcpcage status; wait`
	if out := m.mustRun("sh", "-c", live); !statusLine.MatchString(out) || !regexp.MustCompile(`(?m)network:\s+kernel`).MatchString(out) {
		t.Fatalf("status during a session inside the machine:\n%s", out)
	}
	if logs, _ := m.root_("journalctl", "-u", "mcpcaged", "--no-pager", "-o", "cat"); !strings.Contains(logs, "eBPF programs loaded session_cgroup_level=") {
		t.Fatalf("no eBPF load record:\n%s", tail(logs, 2000))
	}
	// Kernel events reach the daemon in the machine: every session's end
	// record counts them, and the server's exec is in the log.
	// (The shim returns before the daemon writes session.end: poll.)
	// Three sessions: test, pub, and the live one.
	testenv.WaitFor(t, "three session.end records in the machine's audit log", 15*time.Second, func() (bool, string) {
		auditText, err := os.ReadFile(filepath.Join(m.root, "var/log/mcpcage/audit.jsonl"))
		must(t, err, "read the machine's audit log")
		var ends, execs int
		var noEvents []string
		for _, line := range strings.Split(strings.TrimSpace(string(auditText)), "\n") {
			var rec struct {
				Type         string `json:"type"`
				KernelEvents int    `json:"kernel_events"`
			}
			must(t, json.Unmarshal([]byte(line), &rec), "audit record %q", line)
			switch rec.Type {
			case "session.end":
				ends++
				if rec.KernelEvents == 0 {
					noEvents = append(noEvents, line)
				}
			case "process.exec":
				execs++
			}
		}
		if ends == 3 && (len(noEvents) > 0 || execs < 3) {
			t.Fatalf("kernel events in the machine: %d process.exec records (want 3 or more); sessions that ended with none:\n%s", execs, strings.Join(noEvents, "\n"))
		}
		return ends == 3, fmt.Sprintf("%d session.end records:\n%s", ends, tail(string(auditText), 3000))
	})

	// audit_journal copies audit records to the journal with their fields.
	if out, _ := m.root_("journalctl", "SYSLOG_IDENTIFIER=mcpcaged-audit", "-o", "json", "--no-pager"); !strings.Contains(out, `"MCPCAGE_TYPE":"tool.call"`) || !strings.Contains(out, `"MCPCAGE_HASH"`) {
		t.Fatalf("no audit records in the journal:\n%s", tail(out, 2000))
	}

	// systemctl reload re-reads the configuration; logs are structured in the journal.
	if out, err := m.run("systemctl", "reload", "mcpcaged"); err != nil {
		logs, _ := m.root_("journalctl", "-u", "mcpcaged", "--no-pager", "-n", "40")
		t.Fatalf("systemctl reload: %v\n%s\njournal:\n%s", err, out, logs)
	}
	testenv.WaitFor(t, "a structured reload record in the journal", 15*time.Second, func() (bool, string) {
		out, _ := m.root_("journalctl", "-u", "mcpcaged", "-o", "json", "--no-pager")
		return strings.Contains(out, "configuration reloaded") && strings.Contains(out, "MCPCAGE_SERVERS"), tail(out, 3000)
	})

	// Removal stops everything and keeps the audit log.
	if out, err := m.root_("sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq mcpcage"); err != nil {
		t.Fatalf("apt-get remove: %v\n%s", err, tail(out, 3000))
	}
	// (no pgrep in a minimal Debian)
	if out, _ := m.root_("sh", "-c", `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = mcpcaged ] && echo $p; done; true`); strings.TrimSpace(out) != "" {
		t.Fatalf("mcpcaged still running after removal: %s", out)
	}
	if out, _ := m.run("systemctl", "is-active", "mcpcaged.socket"); strings.TrimSpace(out) == "active" {
		t.Fatal("mcpcaged.socket still active after removal")
	}
	if _, err := os.Stat(filepath.Join(m.root, "var/log/mcpcage/audit.jsonl")); err != nil {
		t.Fatalf("removal lost the audit log: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.root, "etc/mcpcage/config.toml")); err != nil {
		t.Fatalf("removal (not purge) deleted the configuration: %v", err)
	}
}

// nspawnBootWait bounds each step of booting the test machine: generous,
// since other runs may share (and load) the machine.
const nspawnBootWait = 2 * time.Minute

// nspawnLock is held while a run boots and uses its test machine: two
// booting Debian systems on a small shared machine starve each other
// past any sensible timeout, so concurrent runs take turns.
const nspawnLock = "/run/lock/mcpcage-itest-nspawn.lock"

// bootTurn waits for this run's turn to boot a machine; the turn ends
// with the test.
func bootTurn(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(nspawnLock, os.O_CREATE|os.O_RDWR, 0o600)
	must(t, err, "open %s", nspawnLock)
	must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX), "wait for the nspawn turn")
	t.Cleanup(func() { _ = f.Close() }) // closing releases the lock
}
