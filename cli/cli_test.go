package cli

import (
	"bytes"
	"github.com/mcpcage/mcpcage/cli/clientsetup"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	for path, conf := range map[string]string{
		good: "[servers.a]\ncommand = [\"x\"]\n",
		bad:  "[servers.a]\ncommand = [\"x\"]\nimgae = \"y\"\n",
	} {
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"valid", []string{"config", "check", good}, 0, "OK (1 servers: a)", ""},
		{"unknown key", []string{"config", "check", bad}, 1, "", `line 3: servers.a.imgae: unknown key (did you mean "image"?)`},
		{"missing file", []string{"config", "check", filepath.Join(dir, "none.toml")}, 1, "", "no such file"},
		{"example", []string{"config", "check", "../testdata/config/example.toml"}, 0, "OK", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(tt.args, strings.NewReader(""), &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Fatalf("code %d stdout %q stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestRunWithoutDaemon(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main([]string{"run", "x", "--socket", filepath.Join(t.TempDir(), "none.sock")}, strings.NewReader(""), &out, &errOut)
	if code != 2 || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), "systemctl start mcpcaged") {
		t.Fatalf("code %d stderr %q", code, errOut.String())
	}
}

func TestRedactSecrets(t *testing.T) {
	servers := []clientsetup.Server{{Secrets: map[string]string{"s.T": "a<b>&c/d", "s.U": "xyz"}}}
	for _, tc := range []struct{ in, want string }{
		{`"T": "a<b>&c/d"`, `"T": "[moved to secret s.T]"`},
		{`"T": "a\u003cb\u003e\u0026c/d"`, `"T": "[moved to secret s.T]"`},
		{`"U": "xyz"`, `"U": "xyz"`}, // too short to replace safely
	} {
		if got := redactSecrets(tc.in, servers); got != tc.want {
			t.Errorf("redactSecrets(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
