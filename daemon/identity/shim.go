package identity

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ShimRule says what the process on the daemon's side of a session's
// socket must be: mcpcage (the shim), exec'd by its agent's child
// directly. Any other process that connects as a shim speaks for the
// agent that forked it with input of its own: a program the agent was
// configured to start (an MCP client's configuration is the user's file,
// which other code of the user's can change) that connects itself, or
// that sets up pipes of its own and then execs mcpcage.
type ShimRule struct {
	// Paths are the mcpcage files the daemon trusts. The shim's
	// executable must be one of them (device and inode, looked at each
	// time: an upgrade replaces the file). A copy with the same digest is
	// not enough: a file system the user controls (an overlay in a user
	// namespace of theirs, FUSE, a network file system) can serve the
	// exec one content and a later hash another. None skips the check
	// (unit tests of the binding alone).
	Paths []string
	// Launchers lets a shim that exec'd more than once since its fork
	// (a shell or `env` between the client and mcpcage) run, as an
	// unverified binding, instead of refusing it.
	Launchers bool
}

// ErrNotShim is returned when the process that connected as a shim is not
// mcpcage: it speaks for its parent with whatever input it likes.
var ErrNotShim = errors.New("the process that connected is not mcpcage")

// ErrNotDirect is returned when mcpcage run exec'd more than once since
// its parent forked it: a program ran before it in the agent's child and
// could have given it other input than the agent's.
var ErrNotDirect = errors.New("mcpcage run was not started by its agent directly")

// shimExe is what checkShim learned of the shim's executable.
type shimExe struct {
	// dynamic: it has a program interpreter (ld.so), so the loader's
	// variables (LD_PRELOAD, ...) in its environment run other code in
	// it before its main (a hand-built mcpcage; the packages' is static).
	dynamic bool
}

// checkShim checks that process pid runs one of rule.Paths.
func checkShim(pid int, rule ShimRule) (shimExe, error) {
	if len(rule.Paths) == 0 {
		return shimExe{}, nil
	}
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	name, err := os.Readlink(exe)
	if err != nil {
		return shimExe{}, fmt.Errorf("resolve the shim's executable: %w", ErrGone)
	}
	name = strings.TrimSuffix(name, " (deleted)")
	var got unix.Stat_t
	if err := unix.Stat(exe, &got); err != nil {
		return shimExe{}, fmt.Errorf("stat the shim's executable: %w", ErrGone)
	}
	trusted := false
	for _, p := range rule.Paths {
		var want unix.Stat_t
		if unix.Stat(p, &want) == nil && got.Dev == want.Dev && got.Ino == want.Ino {
			trusted = true
			break
		}
	}
	if !trusted {
		list := strings.Join(rule.Paths, ", ")
		return shimExe{}, fmt.Errorf("%w: it runs %s, not the file %s: a program other than mcpcage would speak for the process that started it with input of its own; the MCP client must run %s (an administrator names others with shim_paths)", ErrNotShim, name, list, rule.Paths[0])
	}
	f, err := elf.Open(exe)
	if err != nil {
		return shimExe{}, fmt.Errorf("read the shim's executable %s: %w", name, err)
	}
	defer func() { _ = f.Close() }()
	var s shimExe
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			s.dynamic = true
		}
	}
	return s, nil
}

// checkShimEnv refuses a dynamically linked mcpcage whose environment at
// exec (env, cut and unchecked as agentEnviron gives them) loads other
// code into it: a configuration can set LD_PRELOAD for the server it
// starts, and that code would hold the shim's descriptors.
func checkShimEnv(exe shimExe, env []byte, cut []string, unchecked string) error {
	if !exe.dynamic {
		return nil
	}
	why := ""
	switch k := loaderInjected(env); {
	case compiledCut(cut) != "":
		why = tooLong(compiledCut(cut))
	case unchecked != "":
		why = "its environment was " + unchecked + ", so mcpcaged cannot tell whether a variable loads other code into it"
	case k != "":
		why = "environment variable " + k + " loads other code into it"
	default:
		return nil
	}
	return fmt.Errorf("%w alone: %s (it is dynamically linked); start it without that variable, or install a statically linked mcpcage (CGO_ENABLED=0, as the packages are)", ErrNotShim, why)
}

// spawnHelpers are the helpers a runtime execs every child through, by
// path from the directory above the agent's executable's: a JDK's
// jspawnhelper (java.home/lib, which the default launch mechanism of
// Java 12 and later on Linux, posix_spawn, runs first; an IDE's native
// launcher keeps its JDK in jbr/).
var spawnHelpers = []string{"lib/jspawnhelper", "jbr/lib/jspawnhelper"}

// agentSpawnHelper reports whether the file (dev, ino) is a spawn helper
// of the agent's own runtime that no one but root can change: its
// execing the shim is the agent's spawn, not another program's.
func agentSpawnHelper(agentExe string, dev, ino uint64) bool {
	top := filepath.Dir(filepath.Dir(agentExe))
	for _, h := range spawnHelpers {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(top, h), &st) != nil {
			continue
		}
		if st.Dev == dev && st.Ino == ino && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Uid == 0 && st.Mode&0o022 == 0 {
			return true
		}
	}
	return false
}

// checkDirect checks the shim's own record: its only exec since its fork
// is the one that made it mcpcage (or, before it, its agent's runtime's
// spawn helper), finished before the daemon looked. Read after checkShim
// looked at its executable: an exec counts from its point of no return
// (with the prepare hook), so a process that connected and then exec'd
// mcpcage has a count of two by the time /proc shows mcpcage.
func checkDirect(shim Stamp, shimOK bool, rule ShimRule, since uint64, agentExe string) (unverified string, err error) {
	launched := func(why string) (string, error) {
		if rule.Launchers {
			return "unverified: mcpcage run was not started by its agent directly: " + why + " (allow_shim_launchers is on)", nil
		}
		return "", fmt.Errorf("%w: %s, so another program ran first (a shell or wrapper) and could have given it other input than the agent's; configure the MCP client to run mcpcage itself (command \"mcpcage\", args [\"run\", NAME]; a Java client with -Djdk.lang.Process.launchMechanism=VFORK unless its JDK is root's), or have the administrator set allow_shim_launchers", ErrNotDirect, why)
	}
	switch {
	case shim.Forker == 0 && shimOK && shim.Start < since && shim.Exec >= since:
		// Forked before the record began, exec'd since: its execs were
		// not counted, and a shim is exec'd right after its fork.
		return launched("it was forked before mcpcaged began recording execs and exec'd since")
	case shim.Forker == 0:
		return "", nil // bind says what no fork record means
	case shim.Pending:
		return "", fmt.Errorf("%w: it was exec'ing another program when mcpcaged looked", ErrNotDirect)
	case shim.Execs == 1:
		return "", nil
	case shim.Execs == 0 || !shimOK:
		// Forked since the record began, and not exec'd since: the
		// process that connected is not the mcpcage its exe shows.
		return "", fmt.Errorf("%w: the kernel recorded no exec of it since its fork", ErrNotDirect)
	case shim.Execs == 2 && agentSpawnHelper(agentExe, shim.FirstDev, shim.FirstIno):
		return "", nil
	}
	return launched(fmt.Sprintf("its process exec'd %d programs since its parent forked it", shim.Execs))
}
