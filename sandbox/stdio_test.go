package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// openAsInit opens the FIFOs as mcpcage-init does, in its order (the
// daemon's ends are opening at the same time).
func openAsInit(t *testing.T, dir string) (in, out, errOut *os.File) {
	t.Helper()
	var err error
	if out, err = os.OpenFile(filepath.Join(dir, StdioOut), os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	if errOut, err = os.OpenFile(filepath.Join(dir, StdioErr), os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	if in, err = os.OpenFile(filepath.Join(dir, StdioIn), os.O_RDONLY, 0); err != nil {
		t.Fatal(err)
	}
	return in, out, errOut
}

// openedStdio is a ServerStdio whose daemon ends are opening (Open),
// closed when the test ends.
func openedStdio(t *testing.T) *ServerStdio {
	t.Helper()
	testenv.RequireRoot(t)
	s, err := NewServerStdio(filepath.Join(t.TempDir(), "s"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.Open()
	return s
}

func TestServerStdioConnects(t *testing.T) {
	testenv.RequireRoot(t) // chown to the server's uid
	s, err := NewServerStdio(filepath.Join(t.TempDir(), "s1"), 65534)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	st, err := os.Stat(filepath.Join(s.Dir(), StdioIn))
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 || st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Fatalf("in: %v %v, want a FIFO root:65534 of mode 0660", st, err)
	}
	type ends struct{ in, out, errOut *os.File }
	srv := make(chan ends, 1)
	go func() { in, out, errOut := openAsInit(t, s.Dir()); srv <- ends{in, out, errOut} }()
	stdin, stdout, stderr, err := s.Connect(make(chan struct{}), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	server := <-srv
	defer func() {
		for _, f := range []*os.File{stdin, stdout, stderr, server.in, server.out, server.errOut} {
			_ = f.Close()
		}
	}()
	for _, name := range []string{StdioIn, StdioOut, StdioErr} {
		if _, err := os.Lstat(filepath.Join(s.Dir(), name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still has a name once connected: %v", name, err)
		}
	}
	// Bytes go straight through, both ways; closing stdin is end of file.
	if _, err := stdin.WriteString("request\n"); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close()
	if b, err := io.ReadAll(server.in); err != nil || string(b) != "request\n" {
		t.Fatalf("server read %q, %v", b, err)
	}
	if _, err := server.out.WriteString("response\n"); err != nil {
		t.Fatal(err)
	}
	_ = server.out.Close()
	if b, err := io.ReadAll(stdout); err != nil || string(b) != "response\n" {
		t.Fatalf("daemon read %q, %v", b, err)
	}
}

// TestServerStdioAbandoned: when the sandbox exits before it opens its
// stdio, or never does, Connect fails and leaves no open waiting.
func TestServerStdioAbandoned(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name   string
		exited bool
		half   bool // the "sandbox" opened stdout only
	}{{"exited", true, false}, {"exited after opening stdout", true, true}, {"timed out", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			s, err := NewServerStdio(filepath.Join(t.TempDir(), "s"), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			exited := make(chan struct{})
			switch {
			case tc.half:
				// The "sandbox" opens stdout (completing once Connect
				// opens the daemon's end), then exits.
				go func() {
					in, err := os.OpenFile(filepath.Join(s.Dir(), StdioOut), os.O_WRONLY, 0)
					if err == nil {
						defer func() { _ = in.Close() }()
					}
					close(exited)
				}()
			case tc.exited:
				close(exited)
			}
			if _, _, _, err := s.Connect(exited, 200*time.Millisecond); !errors.Is(err, ErrStdioNotConnected) {
				t.Fatalf("Connect = %v, want ErrStdioNotConnected", err)
			}
			testenv.WaitFor(t, "the opens to end", 10*time.Second, func() (bool, string) {
				n := runtime.NumGoroutine()
				return n <= before, fmt.Sprintf("%d goroutines, %d before", n, before)
			})
		})
	}
}

// TestServerStdioOpenedEarly: the daemon's ends may start opening before
// the sandbox opens its own (Open, then Connect).
func TestServerStdioOpenedEarly(t *testing.T) {
	s := openedStdio(t)
	srv := make(chan []*os.File, 1)
	go func() { in, out, errOut := openAsInit(t, s.Dir()); srv <- []*os.File{in, out, errOut} }()
	stdin, stdout, stderr, err := s.Connect(make(chan struct{}), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(<-srv, stdin, stdout, stderr) {
		_ = f.Close()
	}
}

// TestServerStdioClosedUnused: a launch that fails before Connect leaves
// no open waiting once the ServerStdio is closed, whether or not its
// opens had started.
func TestServerStdioClosedUnused(t *testing.T) {
	for _, opened := range []bool{false, true} {
		t.Run(fmt.Sprintf("opened=%v", opened), func(t *testing.T) { testServerStdioClosedUnused(t, opened) })
	}
}

func testServerStdioClosedUnused(t *testing.T, opened bool) {
	testenv.RequireRoot(t)
	before := runtime.NumGoroutine()
	s, err := NewServerStdio(filepath.Join(t.TempDir(), "s"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if opened {
		s.Open()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory left: %v", err)
	}
	testenv.WaitFor(t, "the opens to end", 10*time.Second, func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= before, fmt.Sprintf("%d goroutines, %d before", n, before)
	})
}

// TestServerStdioWaitsInNoSystemCall: while the sandbox has not opened
// its ends, the daemon waits for it without a goroutine blocked in a
// system call (an open of a FIFO waits in the kernel for the other end;
// a garbage collection that begins as a goroutine enters such a call can
// wait for the call to return, with every other goroutine stopped).
func TestServerStdioWaitsInNoSystemCall(t *testing.T) {
	openedStdio(t)
	buf := make([]byte, 1<<20)
	var waiting []string
	testenv.WaitFor(t, "the open of stdin to be under way", 10*time.Second, func() (bool, string) {
		waiting = waiting[:0]
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "sandbox.(*ServerStdio)") {
				waiting = append(waiting, g)
			}
		}
		return len(waiting) > 0, "no goroutine of ServerStdio"
	})
	for _, g := range waiting {
		if strings.Contains(strings.SplitN(g, "\n", 2)[0], "[syscall") {
			t.Errorf("a goroutine waits for the sandbox in a system call:\n%s", g)
		}
	}
}
