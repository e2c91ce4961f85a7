package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// failpointGate is the path a gate failpoint of mcpcaged-failpoints holds
// at (daemon/failpoint_on.go): it creates PATH.reached, then waits until
// PATH exists; the armed gates hold only while PATH.arm exists.
type failpointGate string

// newFailpointGate is a closed gate in a directory of t's.
func newFailpointGate(t *testing.T) failpointGate {
	return failpointGate(filepath.Join(t.TempDir(), "gate"))
}

// env is the failpoint's environment variable naming g.
func (g failpointGate) env(name string) string { return name + "=" + string(g) }

// set opens the gate (what reaches it passes) or closes it (the next to
// reach it is held), and forgets that anything reached it.
func (g failpointGate) set(t *testing.T, open bool) {
	t.Helper()
	for _, p := range []string{string(g), string(g) + ".reached"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if open {
		g.open(t)
	}
}

// open lets what the gate holds go on.
func (g failpointGate) open(t *testing.T) {
	t.Helper()
	must(t, os.WriteFile(string(g), nil, 0o644), "open the gate")
}

// arm makes an armed gate hold.
func (g failpointGate) arm(t *testing.T) {
	t.Helper()
	must(t, os.WriteFile(string(g)+".arm", nil, 0o644), "arm the gate")
}

// armFor arms a gate that holds only what what names (a failpoint that
// reads it: MCPCAGE_FAILPOINT_CONTAINERD_REPLY_GATE).
func (g failpointGate) armFor(t *testing.T, what string) {
	t.Helper()
	must(t, os.WriteFile(string(g)+".arm", []byte(what), 0o644), "arm the gate")
}

// waitReached waits until the daemon is held at the gate (what: what is
// held; diag: what to show if it never is).
func (g failpointGate) waitReached(t *testing.T, what string, diag func() string) {
	t.Helper()
	testenv.WaitFor(t, what, 30*time.Second, func() (bool, string) {
		_, err := os.Stat(string(g) + ".reached")
		if err == nil || diag == nil {
			return err == nil, fmt.Sprint(err)
		}
		return false, diag()
	})
}

// reloadTo writes cfg as the daemon's configuration and has it reloaded
// (SIGHUP), waiting until it says it did.
func (d *daemon) reloadTo(t *testing.T, cfg []byte) {
	t.Helper()
	n := strings.Count(d.log.String(), `msg="configuration reloaded"`)
	must(t, os.WriteFile(d.config, cfg, 0o644), "edit config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	testenv.WaitFor(t, "the reload", 20*time.Second, func() (bool, string) {
		return strings.Count(d.log.String(), `msg="configuration reloaded"`) > n, d.log.String()
	})
}

// cliResult is what a command run in the background printed.
type cliResult struct {
	out string
	err error
}

// cliInBackground runs mcpcage ARGS as uid while the test goes on.
func (d *daemon) cliInBackground(t *testing.T, uid int, args ...string) <-chan cliResult {
	done := make(chan cliResult, 1)
	go func() {
		out, err := d.cli(t, uid, args...)
		done <- cliResult{out, err}
	}()
	return done
}
