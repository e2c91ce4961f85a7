// Command mcpcage-init runs first inside every mcpcage sandbox. With
// --stdio DIR it opens the FIFOs DIR/in, DIR/out and DIR/err, the daemon's
// own pipes (see sandbox.ServerStdio), as its stdin, stdout and stderr, so
// no process copies the server's messages. Until then its stderr is
// /dev/null: a failure to open them shows as the daemon's error that the
// sandbox did not open its stdio. Then it applies the session's Landlock rules (from $MCPCAGE_LANDLOCK, JSON; see package
// landlock: write rules and, from ABI 6, the scopes that keep the server
// from the host's abstract unix sockets and from signalling outside its
// sandbox), removes that variable, and execs the MCP server in its place,
// so the server keeps pid 1 and its stdio. It is built static.
//
// Usage: mcpcage-init [--require] [--stdio DIR] -- COMMAND [ARGS...]
//
// Without Landlock in the kernel it execs the server unrestricted (and says
// so on stderr), unless --require is given.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/mcpcage/mcpcage/sandbox/landlock"
)

const envRules = "MCPCAGE_LANDLOCK"

func main() {
	args := os.Args[1:]
	require := false
	stdio := ""
	for len(args) > 0 && args[0] != "--" {
		switch args[0] {
		case "--require":
			require = true
		case "--stdio":
			if len(args) < 2 {
				fail("--stdio needs a directory")
			}
			stdio, args = args[1], args[1:]
		default:
			fail("unknown flag %q", args[0])
		}
		args = args[1:]
	}
	if len(args) < 2 {
		fail("usage: mcpcage-init [--require] [--stdio DIR] -- COMMAND [ARGS...]")
	}
	argv := args[1:]
	if stdio != "" {
		// Before Landlock: its rules need not name the FIFOs.
		installStdio(stdio)
	}
	if raw, ok := os.LookupEnv(envRules); ok {
		if err := os.Unsetenv(envRules); err != nil { // the server must not see its rules
			fail("unset %s: %v", envRules, err)
		}
		var r landlock.Rules
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			fail("bad %s: %v", envRules, err)
		}
		abi, err := landlock.Restrict(r)
		switch {
		case err == landlock.ErrUnsupported && !require:
			fmt.Fprintln(os.Stderr, "mcpcage-init: landlock unavailable in this kernel; running without it")
		case err != nil:
			fail("apply landlock rules: %v", err)
		case r.Scope && !landlock.Scoped(abi):
			fmt.Fprintf(os.Stderr, "mcpcage-init: Landlock ABI %d has no scopes (ABI %d+): abstract unix sockets and signals outside the sandbox stay reachable\n", abi, landlock.ScopeABI)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail("%s: command not found in the sandbox (PATH=%s)", argv[0], os.Getenv("PATH"))
	}
	err = syscall.Exec(path, argv, os.Environ())
	fail("exec %s: %v", path, err)
}

// installStdio opens DIR/out as fd 1, DIR/err as fd 2 and DIR/in as fd 0
// (the names of sandbox.StdioOut, StdioErr and StdioIn; this static
// binary does not link that package), in that order: the daemon's read
// ends of out and err are open before the sandbox starts, so those opens
// return at once, and the daemon takes the open of its end of in, which
// it tries until this process opened its own, for the sign that all
// three are (sandbox.ServerStdio.Open).
func installStdio(dir string) {
	for _, s := range []struct {
		name string
		flag int
		fd   int
	}{{"out", syscall.O_WRONLY, 1}, {"err", syscall.O_WRONLY, 2}, {"in", syscall.O_RDONLY, 0}} {
		fd, err := syscall.Open(dir+"/"+s.name, s.flag|syscall.O_CLOEXEC, 0)
		if err != nil {
			fail("open the server's %s from mcpcaged: %v", s.name, err)
		}
		// dup3 clears close-on-exec on the copy.
		if err := syscall.Dup3(fd, s.fd, 0); err != nil {
			fail("install the server's %s: %v", s.name, err)
		}
		if err := syscall.Close(fd); err != nil {
			fail("close: %v", err)
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mcpcage-init: "+format+"\n", args...)
	os.Exit(127)
}
