package landlock

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The scope test's child: restricts itself with Scope set to
// $LANDLOCK_SCOPE_CHILD ("on" or "off"), then reports what it could reach
// of its parent: an abstract unix socket and a signal.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LANDLOCK_SCOPE_CHILD"); mode != "" {
		if _, err := Restrict(Rules{Scope: mode == "on"}); err != nil {
			fmt.Println("restrict:", err)
			os.Exit(1)
		}
		c, err := net.Dial("unix", os.Getenv("LANDLOCK_SCOPE_SOCKET"))
		if err == nil {
			_ = c.Close()
		}
		fmt.Printf("connect=%v signal=%v\n", errName(err), errName(unix.Kill(os.Getppid(), unix.SIGWINCH)))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	for _, e := range []unix.Errno{unix.EPERM, unix.ECONNREFUSED, unix.ENOENT} {
		if strings.Contains(err.Error(), e.Error()) {
			return unix.ErrnoName(e)
		}
	}
	return err.Error()
}

func TestScope(t *testing.T) {
	abi := ABI()
	testenv.Require(t, Scoped(abi), fmt.Sprintf("Landlock ABI %d+ (have %d)", ScopeABI, abi))
	name := fmt.Sprintf("@mcpcage-landlock-test-%d", os.Getpid())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	for _, tt := range []struct{ mode, want string }{
		{"off", "connect=ok signal=ok"},
		{"on", "connect=EPERM signal=EPERM"},
	} {
		t.Run("scope "+tt.mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "LANDLOCK_SCOPE_CHILD="+tt.mode, "LANDLOCK_SCOPE_SOCKET="+name)
			out, err := cmd.CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
				t.Fatalf("child: %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}
