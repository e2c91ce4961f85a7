package api

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// envListen makes this test binary a listener on the socket it names
// (TestDialChecksWhoServesTheSocket runs it as another user).
const envListen = "MCPCAGE_API_TEST_LISTEN"

func TestMain(m *testing.M) {
	if path := os.Getenv(envListen); path != "" {
		ln, err := net.Listen("unix", path)
		if err != nil {
			os.Exit(2)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(0)
			}
			go func() { // held open until the peer leaves
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
			}()
		}
	}
	os.Exit(m.Run())
}

// TestDialChecksWhoServesTheSocket: a socket that neither root nor the
// caller serves (another user's, named by $MCPCAGE_SOCKET in an MCP
// client's configuration) is refused before anything is sent; the
// caller's own is accepted.
func TestDialChecksWhoServesTheSocket(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, up := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} { // the test's temporary directories
		if err := os.Chmod(up, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// This test binary, where the other user can run it.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	listener := filepath.Join(dir, "listener")
	if err := os.WriteFile(listener, self, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		uid     uint32
		wantErr string
	}{
		{"another user's socket", 65534, "served by a process of uid 65534"},
		{"the caller's own", uint32(os.Geteuid()), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".sock")
			cmd := exec.Command(listener, "-test.run=^$")
			cmd.Env = append(os.Environ(), envListen+"="+path)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.uid}}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			// Listening, not only bound: the file exists from bind(2) on,
			// and a connect before listen(2) is refused (CI of 635ed01
			// dialled in between).
			testenv.WaitFor(t, "the listener's socket", 10*time.Second, func() (bool, string) {
				c, err := net.Dial("unix", path)
				if err != nil {
					return false, err.Error()
				}
				_ = c.Close()
				return true, ""
			})
			c, err := Dial(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				_ = c.Close()
				return
			}
			if err == nil || !errors.Is(err, ErrDaemonUnreachable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Dial = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
