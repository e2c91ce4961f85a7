package clientsetup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/jsonsplice"
)

// Server is a user-scoped mcpcage server made from a client entry: the
// definition `mcpcage server add` would send (see the package
// documentation for why it is [api.ServerDef] itself), and what the user
// should know about it.
type Server struct {
	api.ServerDef
	Entry    string   `json:"-"` // the client's name for it
	Warnings []string `json:"-"`
	// Secrets are credentials from the entry, to store in the user's own
	// secret store (name: value) before the server is added; its env
	// names them as "secret:NAME".
	Secrets map[string]string `json:"-"`
}

// moveSecrets sets s.Env to env, with every value that looks like a
// credential moved to s.Secrets under a name of the server's. A value
// written "secret:NAME" is the client's literal string, which the server
// must receive as such: it is stored too, never read as a reference to
// one of the user's secrets (a hostile entry would name another server's
// token).
func (s *Server) moveSecrets(env map[string]string) {
	if len(env) == 0 {
		return
	}
	s.Env = map[string]string{}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the names below do not depend on map order
	for _, k := range keys {
		v := env[k]
		if v == "" || (!strings.HasPrefix(v, "secret:") && !looksSecret(k)) {
			s.Env[k] = v
			continue
		}
		if s.Secrets == nil {
			s.Secrets = map[string]string{}
		}
		base := secretName(s.Name, k)
		name := base
		for i := 2; s.Secrets[name] != ""; i++ { // two keys, one name
			suffix := fmt.Sprintf("-%d", i)
			name = base[:min(len(base), 128-len(suffix))] + suffix
		}
		s.Secrets[name] = v
		s.Env[k] = "secret:" + name
	}
}

// secretName names the secret holding variable key of server.
func secretName(server, key string) string {
	n := server + "." + strings.Trim(nameRe.ReplaceAllString(key, "-"), "-.")
	if len(n) > 128 {
		n = n[:128]
	}
	return n
}

// Options tune Rewrite.
type Options struct {
	Home    string   // the user's home, for ~ and mount checks
	Only    []string // entry names to import (empty: all)
	Mcpcage string   // the command written into the client config
	// IsDir reports whether a path is an existing directory (os by default).
	IsDir func(string) bool
	// Keep are entries to leave as they are, with the reason (the daemon
	// refused their import).
	Keep map[string]string
}

// Result of a rewrite.
type Result struct {
	Config    []byte   // the new file (equal to the old one when nothing changed)
	Imported  []Server // server definitions to store
	Unchanged []string // entries already going through mcpcage
	Remote    []string // remote entries left untouched (see Notes)
	// Notes say why an entry was left as it is.
	Notes   []string
	Skipped []string // entries not selected by Only
}

// Changed reports whether the file changes.
func (r *Result) Changed(old []byte) bool { return !bytes.Equal(r.Config, old) }

var nameRe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ServerName makes an mcpcage server name for a client entry.
func ServerName(client, entry string) string {
	n := strings.Trim(nameRe.ReplaceAllString(entry, "-"), "-.")
	if n == "" {
		n = "server"
	}
	n = client + "-" + n
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

// networkPackages are servers whose job is the network.
var networkPackages = []string{"server-github", "server-gitlab", "server-fetch", "mcp-server-fetch", "server-brave-search",
	"server-slack", "server-google-maps", "server-sentry", "server-puppeteer", "github-mcp-server", "server-postgres",
	"server-everart", "server-aws", "server-gdrive", "firecrawl", "tavily", "exa-mcp", "notion", "linear", "stripe"}

type entry struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Env     map[string]string `json:"env"`
	Cwd     string            `json:"cwd"`
	Type    string            `json:"type"`
	URL     string            `json:"url"`
	Server  string            `json:"serverUrl"`
	Headers map[string]string `json:"headers"`
}

// Rewrite transforms one client config.
func Rewrite(c Client, data []byte, o Options) (*Result, error) {
	if o.Mcpcage == "" {
		o.Mcpcage = "mcpcage"
	}
	if o.IsDir == nil {
		o.IsDir = func(p string) bool { st, err := os.Stat(p); return err == nil && st.IsDir() }
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &Result{Config: data}, nil
	}
	top, ok := jsonsplice.Members(data)
	if !ok {
		if !json.Valid(data) {
			return nil, fmt.Errorf("%s is not valid JSON: fix it or move it aside; nothing was changed", c.Path)
		}
		return nil, fmt.Errorf("%s is not a JSON object; nothing was changed", c.Path)
	}
	res := &Result{Config: data}
	sp, ok := top[c.Key]
	if !ok {
		return res, nil
	}
	servers := sp.Of(data)
	members, ok := jsonsplice.Members(servers)
	if !ok {
		return nil, fmt.Errorf("%s: %q is not an object; nothing was changed", c.Path, c.Key)
	}
	// Rewrite from the end so earlier spans stay valid.
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return members[names[i]].Start > members[names[j]].Start })
	out := append([]byte(nil), servers...)
	for _, name := range names {
		espan := members[name]
		var e entry
		if err := json.Unmarshal(espan.Of(servers), &e); err != nil {
			return nil, fmt.Errorf("%s: server %q is malformed: %v; nothing was changed", c.Path, name, err)
		}
		if why, ok := o.Keep[name]; ok {
			res.Remote = append(res.Remote, name)
			res.Notes = append(res.Notes, fmt.Sprintf("%s: %s", name, why))
			continue
		}
		remote := e.URL != "" || e.Server != "" || e.Type == "http" || e.Type == "sse" || e.Type == "streamable-http"
		if why := keepRemote(e); remote && why != "" {
			res.Remote = append(res.Remote, name)
			res.Notes = append(res.Notes, fmt.Sprintf("%s: %s", name, why))
			continue
		}
		switch {
		case remote && len(o.Only) > 0 && !contains(o.Only, name):
			res.Skipped = append(res.Skipped, name)
			continue
		case remote:
			srv := Server{Entry: name, ServerDef: api.ServerDef{Name: ServerName(c.Name, name), URL: orStr(e.URL, e.Server)}}
			srv.Warnings = append(srv.Warnings, fmt.Sprintf("%s is remote: if it asks for a sign-in, run `mcpcage login %s`; mcpcage keeps the tokens", name, srv.Name))
			res.Imported = append(res.Imported, srv)
			out = jsonsplice.Splice(out, espan, stdioEntry(c, o, srv.Name))
			continue
		case isDocker(e) && len(o.Only) > 0 && !contains(o.Only, name):
			res.Skipped = append(res.Skipped, name)
			continue
		case isDocker(e):
			srv, why := importDocker(c, name, e, o)
			if why != "" {
				res.Remote = append(res.Remote, name)
				res.Notes = append(res.Notes, fmt.Sprintf("%s: %s", name, why))
				continue
			}
			res.Imported = append(res.Imported, srv)
			out = jsonsplice.Splice(out, espan, stdioEntry(c, o, srv.Name))
			continue
		case e.Command == "":
			continue
		case filepath.Base(e.Command) == "mcpcage" && len(e.Args) > 0 && e.Args[0] == "run":
			res.Unchanged = append(res.Unchanged, name)
			continue
		case len(o.Only) > 0 && !contains(o.Only, name):
			res.Skipped = append(res.Skipped, name)
			continue
		}
		srv := importEntry(c, name, e, o)
		res.Imported = append(res.Imported, srv)
		out = jsonsplice.Splice(out, espan, stdioEntry(c, o, srv.Name))
	}
	sort.Slice(res.Imported, func(i, j int) bool { return res.Imported[i].Name < res.Imported[j].Name })
	res.Config = jsonsplice.Splice(data, sp, out)
	return res, nil
}

// stdioEntry is the client entry that runs server name through mcpcage.
func stdioEntry(c Client, o Options, name string) []byte {
	b, _ := json.Marshal(struct {
		Type    string   `json:"type,omitempty"`
		Command string   `json:"command"`
		Args    []string `json:"args"`
	}{c.StdioType, o.Mcpcage, []string{"run", name}})
	return b
}

// keepRemote says why a remote entry stays as it is ("" routes it
// through mcpcage).
func keepRemote(e entry) string {
	switch {
	case e.Type == "sse":
		return "uses the older HTTP+SSE transport, which mcpcage does not bridge; left as it is"
	case len(e.Headers) > 0:
		return "sends headers of its own (a static credential?); left as it is: mcpcage signs in with OAuth (mcpcage login) and never passes a client's credentials on"
	case orStr(e.URL, e.Server) == "":
		return "has no url; left as it is"
	case urlCarriesSecret(orStr(e.URL, e.Server)):
		return "its url carries what looks like a credential (in the query); left as it is: mcpcage signs in with OAuth (mcpcage login) and keeps no credential in a url"
	}
	return ""
}

// urlCarriesSecret reports a url whose user info or query names a
// credential.
func urlCarriesSecret(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	if u.User != nil {
		return true
	}
	for k := range u.Query() {
		if looksSecret(k) {
			return true
		}
	}
	return false
}

func isDocker(e entry) bool {
	base := filepath.Base(e.Command)
	return (base == "docker" || base == "podman") && len(e.Args) > 0 && e.Args[0] == "run"
}

func orStr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func expand(p, home string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}

// importEntry builds the sandboxed definition of one client entry.
func importEntry(c Client, name string, e entry, o Options) Server {
	s := Server{Entry: name, ServerDef: api.ServerDef{Name: ServerName(c.Name, name), Network: "none"}}
	s.moveSecrets(e.Env)
	args := make([]string, 0, len(e.Args))
	for _, a := range e.Args {
		args = append(args, expand(a, o.Home))
	}
	s.Command = append([]string{expand(e.Command, o.Home)}, args...)
	s.warnCredentialArgs(name, args)
	seen := map[string]bool{}
	addMount := func(dir string) {
		if seen[dir] || dir == "/" {
			return
		}
		seen[dir] = true
		s.Mounts = append(s.Mounts, api.MountDef{Source: dir, Target: dir})
	}
	if e.Cwd != "" {
		cwd := expand(e.Cwd, o.Home)
		s.Workdir = cwd
		if o.IsDir(cwd) {
			addMount(cwd)
		}
	}
	for _, a := range args {
		if filepath.IsAbs(a) && o.IsDir(a) {
			addMount(a) // the folder the server works on, read-only
		}
	}
	all := strings.ToLower(strings.Join(s.Command, " "))
	for _, p := range networkPackages {
		if strings.Contains(all, p) {
			s.Network = "host"
			s.Egress = []string{"public:443"}
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s looks like a network tool: it may reach any public address on port 443 (not the host, nor its local networks); narrow egress with `mcpcage server add`", name))
			break
		}
	}
	if base := filepath.Base(e.Command); base == "npx" || base == "uvx" || base == "bunx" {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s starts with %s, which downloads the server at every start and needs the network: install it once (e.g. npm install -g PACKAGE) and point the command at it", name, base))
	}
	return s
}

// looksSecret reports a variable or parameter name that holds a
// credential: one of credentialWords anywhere in it, or credentialParts
// as a whole part ("GITHUB_PAT", not "PATH").
func looksSecret(k string) bool {
	k = strings.ToLower(k)
	for _, w := range credentialWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	for _, part := range strings.FieldsFunc(k, func(r rune) bool { return r == '_' || r == '-' || r == '.' }) {
		if slices.Contains(credentialParts, part) {
			return true
		}
	}
	return false
}

var (
	credentialWords = []string{"token", "secret", "password", "passwd", "credential", "apikey", "api_key", "privatekey", "private_key"}
	credentialParts = []string{"key", "pat", "pass", "pwd", "pw", "auth", "dsn"}
)

// warnCredentialArgs warns of arguments that pass a credential on the
// command line (--api-key=..., --token ...): they stay in the server's
// definition, which mcpcage records; an env variable from the secret
// store keeps them out.
func (s *Server) warnCredentialArgs(entry string, args []string) {
	for i, a := range args {
		flag, _, inline := strings.Cut(a, "=")
		if !strings.HasPrefix(flag, "-") || !looksSecret(strings.TrimLeft(flag, "-")) || (!inline && i+1 >= len(args)) {
			continue
		}
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s: argument %s passes what looks like a credential on the command line, which mcpcage records with the server's definition: prefer an env variable from your secret store (mcpcage secret set NAME, env KEY=secret:NAME)", entry, flag))
	}
}
