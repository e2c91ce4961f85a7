package daemon

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// literalCredentials lists where the administrator's servers hold a
// credential-looking value as written in the configuration, which every
// user can read (the package installs it 0644) and `mcpcage servers`
// shows to every user: environment entries ("servers.NAME.env.KEY";
// secret:NAME references are not listed), and the command and its
// arguments ("servers.NAME.command[I]", "servers.NAME.args[I]": a
// credential-looking value, or the value of a flag named like one,
// --api-key=... or --token VALUE).
func literalCredentials(cfg *config.Config) []string {
	var out []string
	for name, srv := range cfg.Servers {
		for k, v := range srv.Env {
			if strings.HasPrefix(v, config.SecretPrefix) {
				continue
			}
			if audit.LooksLikeCredential(k, v) {
				out = append(out, "servers."+name+".env."+k)
			}
		}
		for _, list := range []struct {
			key  string
			args []string
		}{{"command", srv.Command}, {"args", srv.Args}} {
			for _, i := range credentialArgs(list.args) {
				out = append(out, fmt.Sprintf("servers.%s.%s[%d]", name, list.key, i))
			}
		}
	}
	slices.Sort(out)
	return out
}

// credentialArgs are the indexes of the arguments of argv that hold a
// credential: one that looks like one, --flag=VALUE or --flag VALUE with
// a flag named like one (--api-key, --token, --password...).
func credentialArgs(argv []string) []int {
	var out []int
	for i, a := range argv {
		flag, value, inline := strings.Cut(a, "=")
		named := strings.HasPrefix(flag, "-") && audit.LooksLikeCredential(strings.TrimLeft(flag, "-"), "x")
		switch {
		case audit.ValueLooksLikeCredential(a):
			out = append(out, i)
		case named && inline && value != "":
			out = append(out, i)
		case named && !inline && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-"):
			out = append(out, i+1)
		}
	}
	return out
}

// warnLiteralCredentials logs literalCredentials, once per load.
func warnLiteralCredentials(cfg *config.Config, log *slog.Logger) {
	if keys := literalCredentials(cfg); len(keys) > 0 {
		log.Warn("the configuration holds what look like credentials as plain values, which every user can read (the file, and mcpcage servers): store each with `sudo mcpcage secret set NAME` and write \"secret:NAME\" in its place",
			"keys", strings.Join(keys, ", "))
	}
}
