package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestResolveRootLinks(t *testing.T) {
	testenv.RequireRoot(t) // links and directories owned by root and by others
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"sub", "open", "theirs"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "open"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f.js"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"abs":           filepath.Join(dir, "sub", "f.js"),
		"rel":           "sub/../sub/f.js",
		"chain":         "abs",
		"dirlink":       "sub",
		"loop":          "loop",
		"open/l":        filepath.Join(dir, "sub", "f.js"),
		"theirs-link":   filepath.Join(dir, "sub", "f.js"),
		"theirs/l":      filepath.Join(dir, "sub", "f.js"),
		"sub/to-theirs": "../theirs-link",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Lchown(filepath.Join(dir, "theirs-link"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "theirs"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	root, err := os.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	f := filepath.Join(dir, "sub", "f.js")
	tests := []struct {
		path, want, why string
	}{
		{"sub/f.js", f, ""},
		{"abs", f, ""},
		{"rel", f, ""},
		{"chain", f, ""},
		{"dirlink/f.js", f, ""},
		{"sub/./../sub/f.js", f, ""},
		{"loop", "", "too many symbolic links"},
		{"open/l", "", "in a directory others can change"},
		{"theirs-link", "", "is not root's (uid 65534)"},
		{"theirs/l", "", "in a directory others can change"},
		{"sub/to-theirs", "", "is not root's (uid 65534)"},
		{"missing", "", "cannot resolve"},
	}
	// /proc's links name what the reader has: resolved by mcpcaged,
	// /proc/self/cwd would be mcpcaged's directory, not the agent's.
	for _, p := range []string{"/proc/self/cwd/etc/hostname", "/proc/self/root/etc/hostname", "/dev/fd/0", "/dev/stdin"} {
		if got, why := resolveRootLinks(root, p); got != "" || !strings.Contains(why, "/proc") {
			t.Errorf("%s resolved to %q (why %q), want it refused for going through /proc", p, got, why)
		}
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, why := resolveRootLinks(root, filepath.Join(dir, tt.path))
			if got != tt.want || (tt.why == "") != (why == "") || !strings.Contains(why, tt.why) {
				t.Fatalf("resolved %q (why %q), want %q (why containing %q)", got, why, tt.want, tt.why)
			}
		})
	}
}

func TestClimbs(t *testing.T) {
	for p, want := range map[string]bool{"agent.js": false, "./agent.js": false, "sub/agent.js": false, "../agent.js": true,
		"a/../../b.js": true, "a..b/c.js": false, "..": true} {
		if got := climbs(p); got != want {
			t.Errorf("climbs(%q) = %v, want %v", p, got, want)
		}
	}
}
