package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/config"
)

// TestLiteralCredentialsAreWarnedOf: an administrator's server given a
// credential as a plain value in the configuration (which every user can
// read) is named in a warning; secret: references and harmless values
// are not.
func TestLiteralCredentialsAreWarnedOf(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		want      string // the key named, "" for no warning
	}{
		{"a token by its name", `GITHUB_TOKEN = "abc123"`, "servers.gh.env.GITHUB_TOKEN"},
		{"a credential by its form", `X = "ghp_0123456789abcdefghij0123456789abcd"`, "servers.gh.env.X"},
		{"a password", `DB_PASSWORD = "hunter2"`, "servers.gh.env.DB_PASSWORD"},
		{"a secret reference", `GITHUB_TOKEN = "secret:github"`, ""},
		{"a harmless value", `LOG_LEVEL = "debug"`, ""},
		{"an empty token", `GITHUB_TOKEN = ""`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("[servers.gh]\ncommand = [\"x\"]\nenv = { " + tc.env + " }\n"))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			warnLiteralCredentials(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
			got := buf.String()
			if tc.want == "" {
				if got != "" {
					t.Fatalf("warned: %s", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) || !strings.Contains(got, "mcpcage secret set") {
				t.Fatalf("the warning %q does not name %s and the fix", got, tc.want)
			}
			if strings.Contains(got, "abc123") || strings.Contains(got, "hunter2") || strings.Contains(got, "ghp_") {
				t.Fatalf("the warning shows the value: %s", got)
			}
		})
	}
}
