package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// What a run leaves on the machine, and its removal. Several runs may
// share a machine: everything here looks at this run's alone, found by
// its directories (env.work, env.runDir), its private containerd and the
// prefix of its namespaces (runNamespacePrefix). Its pins are in a
// directory of its own (pinRoot()); the exec stamper's there is left to the
// run's end, which removes the directory.

// runNamespacePrefix begins every containerd namespace of this run, and
// so its cgroups and pin directories: "itest-<run>-".
func runNamespacePrefix() string {
	return "itest-" + strings.TrimPrefix(filepath.Base(env.work), "mcpcage-itest-") + "-"
}

func crashed(ns string) bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	st := env.namespaces[ns]
	return st != nil && st.crashed
}

func setCrashed(ns string, v bool) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if st := env.namespaces[ns]; st != nil {
		st.crashed = v
	}
}

// containerdUp: this run's containerd has not been stopped.
func containerdUp() bool { return env.cdCmd != nil && env.cdCmd.ProcessState == nil }

// ctr runs ctr against this run's containerd, in namespace ns unless it
// is "", and returns the words of its output.
func ctr(ns string, args ...string) ([]string, error) {
	argv := []string{"--address", env.containerd}
	if ns != "" {
		argv = append(argv, "-n", ns)
	}
	out, err := exec.Command("ctr", append(argv, args...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr %s: %v %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.Fields(string(out)), nil
}

// runNamespaces lists this run's namespaces (those with its prefix): of
// its daemons, known to its containerd, or with a cgroup or pin
// directory left.
func runNamespaces() []string {
	var all []string
	env.mu.Lock()
	for ns := range env.namespaces {
		all = append(all, ns)
	}
	env.mu.Unlock()
	if containerdUp() {
		names, _ := ctr("", "namespaces", "ls", "-q") // a containerd that does not answer is reported by runLeftovers
		all = append(all, names...)
	}
	for _, root := range append(cgroupRoots(), pinRoot()) {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.IsDir() {
				all = append(all, e.Name())
			}
		}
	}
	all = slices.DeleteFunc(all, func(ns string) bool { return !strings.HasPrefix(ns, runNamespacePrefix()) })
	slices.Sort(all)
	return slices.Compact(all)
}

// containerdNamespaces lists every namespace of this run's containerd
// (all of them are this run's) and this run's others.
func containerdNamespaces() ([]string, error) {
	names, err := ctr("", "namespaces", "ls", "-q")
	all := append(names, runNamespaces()...)
	slices.Sort(all)
	return slices.Compact(all), err
}

// cgroupRoots lists the cgroup hierarchies: the v1 controllers and the
// unified one on a hybrid host, /sys/fs/cgroup alone on a v2 host.
func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var roots []string
	for _, e := range ents {
		p, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", e.Name())) // cpu -> cpu,cpuacct
		if st, serr := os.Stat(p); err == nil && serr == nil && st.IsDir() {
			roots = append(roots, p)
		}
	}
	slices.Sort(roots)
	return slices.Compact(roots)
}

// cgroupsOf lists the cgroup directories of namespace ns in every
// hierarchy, children before their parents.
func cgroupsOf(ns string) []string {
	var dirs []string
	for _, root := range cgroupRoots() {
		var here []string
		_ = filepath.WalkDir(filepath.Join(root, ns), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				here = append(here, p)
			}
			return nil // an absent namespace directory is no leftover
		})
		slices.Reverse(here)
		dirs = append(dirs, here...)
	}
	return dirs
}

// runProcess is a process of this run.
type runProcess struct {
	pid  int
	args []string
}

func (p runProcess) String() string {
	return fmt.Sprintf("process %d: %s", p.pid, strings.Join(p.args, " "))
}

// runProcesses lists the processes this run started that still run:
// daemons, shims, servers and containerd shims, told by an executable or
// argument in this run's directories. This process and this run's
// containerd (until it is stopped) are not listed.
func runProcesses() []runProcess {
	ents, _ := os.ReadDir("/proc")
	var out []runProcess
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || (containerdUp() && pid == env.cdCmd.Process.Pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, a kernel thread or a zombie: nothing runs
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if ours(exe) || slices.ContainsFunc(args, ours) {
			out = append(out, runProcess{pid, args})
		}
	}
	return out
}

// ours: s names something in this run's directories.
func ours(s string) bool {
	return env.work != "" && strings.Contains(s, env.work+"/") || env.runDir != "" && strings.Contains(s, env.runDir+"/")
}

// runMount is a mount that mentions this run's directories or namespaces.
type runMount struct{ point, line string }

func runMounts() []runMount {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []runMount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 5 || !ours(line) && !strings.Contains(line, runNamespacePrefix()) {
			continue
		}
		point, err := strconv.Unquote(`"` + strings.ReplaceAll(f[4], `"`, `\"`) + `"`) // \040 and the like
		if err != nil {
			point = f[4]
		}
		out = append(out, runMount{point, line})
	}
	return out
}

// runLeftovers describes everything of this run that remains: containers
// and tasks in its containerd, processes, mounts, cgroups and pinned
// links.
func runLeftovers() []string {
	var left []string
	if containerdUp() {
		namespaces, err := containerdNamespaces()
		if err != nil {
			left = append(left, "could not list the namespaces of this run's containerd: "+err.Error())
		}
		for _, ns := range namespaces {
			for _, kind := range []string{"containers", "tasks"} {
				ids, err := ctr(ns, kind, "ls", "-q")
				if err != nil {
					left = append(left, "could not list "+kind+" of "+ns+": "+err.Error())
				}
				for _, id := range ids {
					left = append(left, fmt.Sprintf("%s %s/%s", strings.TrimSuffix(kind, "s"), ns, id))
				}
			}
		}
	}
	for _, p := range runProcesses() {
		left = append(left, p.String())
	}
	for _, m := range runMounts() {
		left = append(left, "mount "+m.line)
	}
	for _, ns := range runNamespaces() {
		for _, dir := range cgroupsOf(ns) {
			left = append(left, "cgroup "+dir)
		}
		if _, err := os.Stat(filepath.Join(pinRoot(), ns)); err == nil {
			left = append(left, "pin directory "+filepath.Join(pinRoot(), ns))
		}
	}
	return left
}

// reapNamespace removes what a daemon of namespace ns left, as a crashed
// daemon leaves it: tasks, containers, their containerd shims, cgroups,
// mounts and pinned links. It returns what it could not remove.
func reapNamespace(ns string) []string {
	var problems []string
	if containerdUp() {
		tasks, err := ctr(ns, "tasks", "ls", "-q")
		if err != nil {
			problems = append(problems, err.Error())
		}
		for _, id := range tasks {
			if _, err := ctr(ns, "tasks", "rm", "-f", id); err != nil { // -f: kill it first
				problems = append(problems, err.Error())
			}
		}
		containers, err := ctr(ns, "containers", "ls", "-q")
		if err != nil {
			problems = append(problems, err.Error())
		}
		for _, id := range containers {
			if _, err := ctr(ns, "containers", "rm", id); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	// A containerd shim ends once its task is deleted; one that does not,
	// or that outlived its containerd, is killed.
	shims := func() []runProcess {
		var out []runProcess
		for _, p := range runProcesses() {
			if i := slices.Index(p.args, "-namespace"); i >= 0 && i+1 < len(p.args) && p.args[i+1] == ns {
				out = append(out, p)
			}
		}
		return out
	}
	if gone, _ := testenv.Poll(10*time.Second, func() (bool, string) { return len(shims()) == 0, "" }); !gone {
		for _, p := range shims() {
			problems = append(problems, "killed "+p.String())
			_ = syscall.Kill(p.pid, syscall.SIGKILL) // gone meanwhile is as good
		}
	}
	if !strings.HasPrefix(ns, runNamespacePrefix()) {
		return problems // a name other runs may use: its cgroups and pins are not this run's to touch
	}
	problems = append(problems, removeCgroups(cgroupsOf(ns), true)...)
	for _, m := range runMounts() {
		if strings.Contains(m.line, ns) {
			if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				problems = append(problems, fmt.Sprintf("unmount %s: %v", m.point, err))
			}
		}
	}
	if err := os.RemoveAll(filepath.Join(pinRoot(), ns)); err != nil {
		problems = append(problems, err.Error())
	}
	return problems
}

// removeCgroups removes cgroup directories, children first. With kill,
// the processes in them are killed first; without, a cgroup that holds a
// process or a child stays.
func removeCgroups(dirs []string, kill bool) []string {
	var problems []string
	for _, dir := range dirs {
		if kill {
			b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL) // in this run's cgroup: this run's process; gone meanwhile is as good
				}
			}
		}
		within := time.Duration(0)
		if kill {
			within = 10 * time.Second // killed processes leave their cgroup soon after
		}
		if ok, seen := testenv.Poll(within, func() (bool, string) {
			err := syscall.Rmdir(dir)
			return err == nil || errors.Is(err, syscall.ENOENT), fmt.Sprint(err)
		}); !ok && kill {
			problems = append(problems, fmt.Sprintf("remove cgroup %s: %s", dir, seen))
		}
	}
	return problems
}

// teardown ends this run: it removes what killed daemons left, checks
// that nothing else of the run remains, stops containerd and checks
// again. It returns what remained (and was then removed).
func teardown() []string {
	var left []string
	for _, ns := range runNamespaces() {
		if crashed(ns) {
			if problems := reapNamespace(ns); len(problems) > 0 {
				fmt.Fprintf(os.Stderr, "integration: clean-up after the killed mcpcaged of %s:\n  %s\n", ns, strings.Join(problems, "\n  "))
			}
		}
	}
	// Each namespace's own cgroup directory stays by design (runc removes
	// a session's cgroup, never its parent): gone, when empty, for
	// every namespace of the run; the sessions' cgroups stay and count.
	for _, ns := range runNamespaces() {
		var top []string
		for _, root := range cgroupRoots() {
			top = append(top, filepath.Join(root, ns))
		}
		removeCgroups(top, false)
	}
	check := func() []string {
		var found []string
		// What is ending (a shim after its task's deletion) is given a moment.
		_, _ = testenv.Poll(10*time.Second, func() (bool, string) { found = runLeftovers(); return len(found) == 0, "" })
		return found
	}
	left = append(left, check()...)
	if len(left) > 0 {
		namespaces, _ := containerdNamespaces() // unlisted ones were reported
		for _, ns := range namespaces {
			reapNamespace(ns) // what remains after it is reported below
		}
	}
	stopContainerd()
	// Without containerd: its shims and their servers must be gone too.
	after := check()
	for _, p := range runProcesses() {
		_ = syscall.Kill(p.pid, syscall.SIGKILL) // this run's: gone meanwhile is as good
	}
	for _, m := range runMounts() {
		_ = unix.Unmount(m.point, unix.MNT_DETACH) // reported in after
	}
	for _, ns := range runNamespaces() {
		removeCgroups(cgroupsOf(ns), true)
		_ = os.RemoveAll(filepath.Join(pinRoot(), ns)) // reported in after
	}
	for _, a := range after {
		if !slices.Contains(left, a) {
			left = append(left, a)
		}
	}
	return left
}
