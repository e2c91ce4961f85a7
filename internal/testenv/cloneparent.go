package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CloneParentSibling builds testdata/cloneparent (repoRoot is the module's
// root, relative to the test's directory) and starts it with args; the
// program clones a child with CLONE_PARENT, so the child's parent is this
// test process while its real forker is cloneparent. It returns the
// child's pid and cloneparent's, and kills both at the end of the test.
func CloneParentSibling(t *testing.T, repoRoot string, args ...string) (sibling, forker int) {
	t.Helper()
	dir := t.TempDir()
	helper := filepath.Join(dir, "cloneparent")
	if out, err := exec.Command("go", "build", "-o", helper, filepath.Join(repoRoot, "testdata", "cloneparent")).CombinedOutput(); err != nil {
		t.Fatalf("build cloneparent: %v\n%s", err, out)
	}
	pidFile := filepath.Join(dir, "pid")
	cp := exec.Command(helper, append([]string{"-pid", pidFile}, args...)...)
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Process.Kill(); _ = cp.Wait() })
	var child int
	WaitFor(t, "cloneparent to write its child's pid", 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(pidFile)
		var err error
		child, err = strconv.Atoi(string(b))
		return err == nil, fmt.Sprintf("%q", b)
	})
	t.Cleanup(func() {
		_ = unix.Kill(child, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(child, &ws, 0, nil) // this process is its parent
	})
	return child, cp.Process.Pid
}
