package daemon

import (
	"bytes"
	"log/slog"
	"slices"
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
		{"a connection string", `DATABASE_URL = "postgres://app:S3cretPw@db/app"`, "servers.gh.env.DATABASE_URL"},
		{"a header", `OPENAPI_MCP_HEADERS = '{"Authorization": "Bearer ntn_0123456789"}'`, "servers.gh.env.OPENAPI_MCP_HEADERS"},
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
			if strings.Contains(got, "abc123") || strings.Contains(got, "hunter2") || strings.Contains(got, "ghp_") || strings.Contains(got, "S3cret") || strings.Contains(got, "ntn_") {
				t.Fatalf("the warning shows the value: %s", got)
			}
		})
	}
}

// TestCredentialArgsAreWarnedOf: a credential in an administrator's
// server's command line is shown to every user as well (found by a
// review: only env was looked at).
func TestCredentialArgsAreWarnedOf(t *testing.T) {
	for _, tc := range []struct {
		name, args string
		want       []string
	}{
		{"inline flag", `"--api-key=abc123", "--verbose"`, []string{"servers.gh.command[1]"}},
		{"flag and value", `"--token", "t0k3n", "--path", "/p"`, []string{"servers.gh.command[2]"}},
		{"a token by its form", `"ghp_0123456789abcdefghij0123456789abcd"`, []string{"servers.gh.command[1]"}},
		{"a connection string", `"--db", "postgres://u:pw@h/db"`, []string{"servers.gh.command[2]"}},
		{"harmless", `"--path", "/p", "--log-level", "debug"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("[servers.gh]\ncommand = [\"x\", " + tc.args + "]\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := literalCredentials(cfg); !slices.Equal(got, tc.want) {
				t.Fatalf("literalCredentials = %v, want %v", got, tc.want)
			}
		})
	}
}
