package cli

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mcpcage/mcpcage/api"
)

// fakeDaemon answers the requests client setup and restore make, and
// keeps the servers and secrets they leave.
type fakeDaemon struct {
	socket string
	mu     sync.Mutex
	has    map[string]bool // "server NAME", "secret NAME"
}

func startFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{socket: filepath.Join(t.TempDir(), "d.sock"), has: map[string]bool{}}
	l, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go d.serve(c)
		}
	}()
	return d
}

func (d *fakeDaemon) serve(c net.Conn) {
	defer func() { _ = c.Close() }()
	r, w := api.NewFrameReader(c), api.NewFrameWriter(c)
	for {
		_, payload, err := r.Next()
		if err != nil {
			return
		}
		var req api.Request
		_ = json.Unmarshal(payload, &req)
		reply := api.Reply{OK: true}
		d.mu.Lock()
		switch req.Op {
		case api.OpServers:
			reply.Data = json.RawMessage(`[]`)
		case api.OpSecretList:
			reply.Data = json.RawMessage(`[]`)
		case api.OpServerAdd:
			d.has["server "+req.Def.Name] = true
		case api.OpSecretSet:
			d.has["secret "+req.Name] = true
		case api.OpServerRm:
			delete(d.has, "server "+req.Name)
		case api.OpSecretRm:
			delete(d.has, "secret "+req.Name)
		}
		d.mu.Unlock()
		b, _ := json.Marshal(reply)
		if w.Write(api.FrameReply, b) != nil {
			return
		}
	}
}

// left lists what the daemon keeps.
func (d *fakeDaemon) left() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var l []string
	for k := range d.has {
		l = append(l, k)
	}
	sort.Strings(l)
	return l
}

// TestSetupUndoesAFailedSetup: a setup that fails after importing
// leaves nothing registered that restore would not know of. A red-team
// review found servers and secrets left, recorded nowhere, when the
// backup's name (to the second) was taken by an earlier run's, or the
// state could not be written.
func TestSetupUndoesAFailedSetup(t *testing.T) {
	const cfg = `{"mcpServers":{"x":{"command":"/opt/x","env":{"API_TOKEN":"t0k3n-0123"}}}}`
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, home string, setup func() error, restore func() error)
		fails   bool
	}{
		{"again within the second after a restore", func(t *testing.T, home string, setup, restore func() error) {
			if err := setup(); err != nil {
				t.Fatal(err)
			}
			if err := restore(); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"the state cannot be written", func(t *testing.T, home string, setup, restore func() error) {
			// Read as no state at all; written, it fails (MkdirAll: exists).
			if err := os.Symlink(filepath.Join(home, "nowhere"), filepath.Join(home, ".config", "mcpcage")); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startFakeDaemon(t)
			home := t.TempDir()
			path := filepath.Join(home, ".cursor", "mcp.json")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(home, ".config"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			run := func(args ...string) error {
				var out, errOut strings.Builder
				if code := Main(append(args, "--home", home, "--socket", d.socket), strings.NewReader(""), &out, &errOut); code != 0 {
					return &setupError{code, out.String() + errOut.String()}
				}
				return nil
			}
			setup := func() error { return run("client", "setup", "cursor") }
			restore := func() error { return run("client", "restore", "cursor") }
			tc.prepare(t, home, setup, restore)
			err := setup()
			if (err != nil) != tc.fails {
				t.Fatalf("setup: %v, want failure %v", err, tc.fails)
			}
			if !tc.fails {
				if err := restore(); err != nil {
					t.Fatal(err)
				}
			}
			if left := d.left(); len(left) != 0 {
				t.Errorf("the daemon keeps %v", left)
			}
			if b, _ := os.ReadFile(path); string(b) != cfg {
				t.Errorf("the config is now %s", b)
			}
			if backups, _ := filepath.Glob(path + backupInfix + "*"); tc.fails && len(backups) != 0 {
				t.Errorf("a failed setup left backups %v", backups)
			}
		})
	}
}

type setupError struct {
	code int
	out  string
}

func (e *setupError) Error() string { return e.out }

// TestSetupBackupIsPrivate: the backup, which keeps the credentials
// setup moves to the secret store, is readable by its owner only,
// whatever the config's mode; restore gives the config its own mode
// back. A red-team review found the backup written 0644.
func TestSetupBackupIsPrivate(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o600, 0o640} {
		t.Run(mode.String(), func(t *testing.T) {
			d := startFakeDaemon(t)
			home := t.TempDir()
			path := filepath.Join(home, ".cursor", "mcp.json")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(`{"mcpServers":{"x":{"command":"/opt/x","env":{"API_TOKEN":"t0k3n-0123"}}}}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			var out, errOut strings.Builder
			if code := Main([]string{"client", "setup", "cursor", "--home", home, "--socket", d.socket}, strings.NewReader(""), &out, &errOut); code != 0 {
				t.Fatalf("setup: %s%s", out.String(), errOut.String())
			}
			backups, _ := filepath.Glob(path + backupInfix + "*")
			if len(backups) != 1 {
				t.Fatalf("backups %v", backups)
			}
			if st, err := os.Stat(backups[0]); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("backup: %v, mode %v", err, st.Mode())
			}
			if code := Main([]string{"client", "restore", "cursor", "--home", home, "--socket", d.socket}, strings.NewReader(""), &out, &errOut); code != 0 {
				t.Fatalf("restore: %s%s", out.String(), errOut.String())
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
				t.Fatalf("restored config: %v, mode %v, want %v", err, st.Mode(), mode)
			}
		})
	}
}
