package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// kernelStamps adapts the real stamper, as the daemon does.
type kernelStamps struct{ *bpf.ExecStamps }

func (k kernelStamps) Lookup(pidfd int) (Stamp, bool, error) {
	st, ok, err := k.ExecStamps.Lookup(pidfd)
	return Stamp(st), ok, err
}

func (k kernelStamps) Lost() Lost { return Lost(k.ExecStamps.Lost()) }

// waitStamped waits for the kernel's exec stamp of pid.
func waitStamped(t *testing.T, s *bpf.ExecStamps, pid int) { waitStampedRunning(t, s, pid, "") }

// waitStampedRunning waits for the kernel's exec stamp of pid with no
// exec under way and, unless prog is "", the stamp of its exec of prog
// (argv[0]): a child a shell started has a stamp from its fork on, and
// one asked about mid-exec is, rightly, refused as exec'ing (seen in CI:
// a test asked as soon as the shell printed the child's pid).
func waitStampedRunning(t *testing.T, s *bpf.ExecStamps, pid int, prog string) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	testenv.WaitFor(t, fmt.Sprintf("the exec stamp of %d (%q)", pid, prog), 5*time.Second, func() (bool, string) {
		st, ok, err := s.Lookup(fd)
		switch {
		case err != nil:
			return true, "" // a lookup error ends the wait: the caller's checks report it
		case !ok:
			return false, "no stamp"
		case st.Pending:
			return false, "an exec under way"
		case prog != "" && string(bytes.SplitN(st.Argv, []byte{0}, 2)[0]) != prog:
			return false, fmt.Sprintf("argv %q", st.Argv)
		}
		return true, ""
	})
}

// kernelHasher is a Hasher with the real exec stamper (root only),
// closed at the test's end.
func kernelHasher(t *testing.T) (*Hasher, *bpf.ExecStamps) {
	t.Helper()
	testenv.RequireRoot(t)
	s, err := bpf.LoadExecStamps("", kernelEnvNames())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	h := NewHasher()
	h.Stamps = kernelStamps{s}
	return h, s
}

// startWithChild starts cmd, which prints the pid of a child it started
// (the shim's stand-in), and returns that pid once the kernel stamped it;
// both are killed at the test's end.
func startWithChild(t *testing.T, s *bpf.ExecStamps, cmd *exec.Cmd) int {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var child int
	if _, err := fmt.Fscan(out, &child); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Kill(child, unix.SIGKILL) })
	waitStampedRunning(t, s, child, "sleep") // every caller's child ends in sleep
	return child
}

// kernelEnvNames are EnvNames as the stamper takes them.
func kernelEnvNames() []bpf.EnvName {
	var names []bpf.EnvName
	for _, n := range EnvNames() {
		names = append(names, bpf.EnvName(n))
	}
	return names
}

// TestAgentCloneParent: a process this one started forks a "shim" with
// clone(CLONE_PARENT), making this process its parent: refused. A shell
// started after the stamper, whose child is the "shim", is bound; this
// process, older than the stamper, is refused as a compiled agent whose
// environment at exec was not recorded (it could have rewritten an
// LD_PRELOAD out of /proc since).
func TestAgentCloneParent(t *testing.T) {
	h, s := kernelHasher(t)
	sh := exec.Command("sh", "-c", "sleep 30 & echo $!; wait")
	child := startWithChild(t, s, sh)
	p, err := h.Agent(child, ShimRule{})
	if err != nil || p.PID != sh.Process.Pid || p.Binding != BoundKernel {
		t.Fatalf("a shell's child: %+v, %v; want the shell, bound by the kernel", p, err)
	}

	own := exec.Command("sleep", "30")
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = own.Process.Kill(); _ = own.Wait() }()
	waitStamped(t, s, own.Process.Pid)
	if p, err := h.Agent(own.Process.Pid, ShimRule{}); !errors.Is(err, ErrDisguised) || !strings.Contains(err.Error(), "began recording execs") {
		t.Fatalf("own child: %+v, %v; want this process refused, its environment not recorded", p, err)
	}

	sibling, _ := testenv.CloneParentSibling(t, "../..", "sleep", "30")
	waitStamped(t, s, sibling)
	p, err = h.Agent(sibling, ShimRule{})
	if !errors.Is(err, ErrNotParent) || !Refused(err) {
		t.Fatalf("CLONE_PARENT sibling: %+v, %v; want ErrNotParent", p, err)
	}
	t.Logf("refused: %v", err)
}

// TestAgentOfPidfd: a pidfd names its process for good: once the process
// is gone, AgentOf says so instead of looking at whatever has its pid.
func TestAgentOfPidfd(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	if pid, err := PidOf(fd); err != nil || pid != cmd.Process.Pid {
		t.Fatalf("PidOf = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	p, err := NewHasher().AgentOf(fd, ShimRule{})
	if err != nil || p.PID != os.Getpid() {
		t.Fatalf("AgentOf = %+v, %v; want this process", p, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // "signal: killed"
	if _, err := NewHasher().AgentOf(fd, ShimRule{}); !errors.Is(err, ErrGone) {
		t.Fatalf("AgentOf a reaped process: %v, want ErrGone", err)
	}
}

// TestScriptSwappedBackAfterStart: a rule pins a script's path and
// digest, and the user can write the script's directory (an npm prefix
// of their own). Found by a red-team helper: their code at the trusted
// path, started by the interpreter, moved the genuine script back before
// it forked the "shim", and the daemon, hashing the file at the path
// now, named the session after the trusted agent. A script changed after
// the exec is now left unidentified, while one written before it is
// identified.
func TestScriptSwappedBackAfterStart(t *testing.T) {
	h, s := kernelHasher(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		swapped bool
	}{{"moved back after the start", true}, {"written before the start", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := dir + "/agent.sh"
			trusted := "sleep 30 & echo $!\nwait\n"
			run := trusted
			if tc.swapped {
				if err := os.WriteFile(path+".real", []byte(trusted), 0o755); err != nil {
					t.Fatal(err)
				}
				run = fmt.Sprintf("sleep 0.05\nmv -f %s.real %s\n%s", path, path, trusted) // a tick after the exec, then the genuine one back
			}
			if err := os.WriteFile(path, []byte(run), 0o755); err != nil {
				t.Fatal(err)
			}
			sh := exec.Command(bash, path)
			sh.Env = []string{"PATH=/usr/bin:/bin"}
			p, err := h.Agent(startWithChild(t, s, sh), ShimRule{})
			if err != nil {
				t.Fatal(err)
			}
			identified := p.Script.SHA256 != ""
			if identified == tc.swapped || (tc.swapped && !strings.Contains(p.Script.Why, "changed")) {
				t.Fatalf("script %+v (why not identified: %q); want it identified: %v", p.Script, p.Script.Why, !tc.swapped)
			}
		})
	}
}

// TestShimMustBeMcpcageExecdOnce: the process that connects as a shim
// must run the trusted mcpcage (here sleep stands in for it), exec'd once
// since its agent forked it. A launcher between the agent and the shim
// (an MCP client configuration of someone else's: `sh -c 'exec mcpcage
// run NAME'` with pipes of its own) could give it other input than the
// agent's, and a program that is not mcpcage could connect itself: both
// spoke for the agent before.
func TestShimMustBeMcpcageExecdOnce(t *testing.T) {
	h, s := kernelHasher(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	if sleep, err = filepath.EvalSymlinks(sleep); err != nil {
		t.Fatal(err)
	}
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(t.TempDir(), "sleep-copy")
	if out, err := exec.Command("cp", sleep, copied).CombinedOutput(); err != nil {
		t.Fatalf("copy sleep: %v %s", err, out)
	}
	// child starts a shell whose child runs sleep, exec'd directly or
	// through another shell, and returns that child's pid once it runs
	// sleep.
	child := func(t *testing.T, script string) int {
		pid := startWithChild(t, s, exec.Command("sh", "-c", script+" & echo $!; wait"))
		testenv.WaitFor(t, "the child to run sleep", 5*time.Second, func() (bool, string) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			return exe == sleep, exe
		})
		return pid
	}
	tests := []struct {
		name    string
		script  string
		rule    ShimRule
		refused error
		binding string
	}{
		{"mcpcage, exec'd by its agent", "sleep 30", ShimRule{Paths: []string{sleep}}, nil, BoundKernel},
		// A copy's bytes are not pinned: a file system of the user's (an
		// overlay in a user namespace, FUSE) can change them after the
		// exec, and a hash then sees mcpcage's.
		{"a copy of mcpcage (the same digest)", "sleep 30", ShimRule{Paths: []string{copied}}, ErrNotShim, ""},
		// sleep is dynamically linked, as a hand-built mcpcage is: the
		// loader runs what LD_PRELOAD names before its main.
		{"mcpcage, dynamically linked, with LD_PRELOAD", "LD_PRELOAD=libm.so.6 sleep 30", ShimRule{Paths: []string{sleep}}, ErrNotShim, ""},
		{"not mcpcage", "sleep 30", ShimRule{Paths: []string{trueBin}}, ErrNotShim, ""},
		{"mcpcage through a launcher", `sh -c "exec sleep 30"`, ShimRule{Paths: []string{sleep}}, ErrNotDirect, ""},
		{"mcpcage through a launcher, launchers allowed", `sh -c "exec sleep 30"`, ShimRule{Paths: []string{sleep}, Launchers: true}, nil, "unverified: mcpcage run was not started by its agent directly: its process exec'd 2 programs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := h.Agent(child(t, tt.script), tt.rule)
			if tt.refused != nil {
				if !errors.Is(err, tt.refused) || !Refused(err) {
					t.Fatalf("Agent = %+v, %v; want %v", p, err, tt.refused)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil || !strings.HasPrefix(p.Binding, tt.binding) {
				t.Fatalf("Agent = %+v, %v; want binding %q", p, err, tt.binding)
			}
		})
	}
}
