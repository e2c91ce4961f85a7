package daemon

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// literalCredentials lists the administrator's server environment
// entries ("servers.NAME.env.KEY") that hold a credential-looking value
// as written in the configuration, which every user can read (the
// package installs it 0644) and `mcpcage servers` shows to every user.
// secret:NAME references are not listed.
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
	}
	slices.Sort(out)
	return out
}

// warnLiteralCredentials logs literalCredentials, once per load.
func warnLiteralCredentials(cfg *config.Config, log *slog.Logger) {
	if keys := literalCredentials(cfg); len(keys) > 0 {
		log.Warn("the configuration holds what look like credentials as plain values, which every user can read (the file, and mcpcage servers): store each with `sudo mcpcage secret set NAME` and write \"secret:NAME\" in its place",
			"keys", strings.Join(keys, ", "))
	}
}
