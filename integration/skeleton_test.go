package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// A mount target outside every directory of the sandbox's root is made
// by runc in the root the sandbox starts from. When that root was one
// skeleton shared by every session, each new target stayed in it for
// good: a user's `server add` with a fresh target grew root's state
// directory by one entry a name, and every later session of every
// server and user saw the others' targets as empty directories (their
// names: a user's project names, to another user).
func TestMountTargetsStayInTheirSession(t *testing.T) {
	dir := project(t)
	d := startDaemon(t, fmt.Sprintf("[servers.proj]\ncommand = [%q]\nmounts = [{ source = %q, target = \"/zz-acme-secret/deep/work\" }]\n",
		filepath.Join(env.bin, "testserver"), dir))
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	toolNames(t, c)
	if text, isErr := callText(t, c, "read_file", map[string]any{"path": "/zz-acme-secret/deep/work/notes.txt"}); isErr || text != "fine" {
		t.Fatalf("the server's own mount: %q (error %v), want its file", text, isErr)
	}
	other := d.connect(t, "test", mcp.ProtocolVersion20251125)
	toolNames(t, other)
	if text, isErr := callText(t, other, "list_dir", map[string]any{"path": "/"}); isErr || strings.Contains(text, "zz-acme-secret") {
		t.Fatalf("another server's session lists its root as %q (error %v): want it without the first session's mount target", text, isErr)
	}
	_ = c.Close()
	_ = other.Close()
	d.waitClean("both sessions") // the warm pool's sandbox of proj aside
	if code := d.stop(); code != 0 {
		t.Fatalf("mcpcaged exited %d", code)
	}
	if ents, err := os.ReadDir(filepath.Join(d.dir, "state", "roots")); err != nil || len(ents) != 0 {
		t.Fatalf("sandbox roots after mcpcaged stopped: %v (%v), want none", ents, err)
	}
	var left []string
	_ = filepath.WalkDir(filepath.Join(d.dir, "state"), func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.Contains(e.Name(), "zz-acme-secret") {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("the mount target is left in the daemon's state after its sessions ended: %v", left)
	}
}
