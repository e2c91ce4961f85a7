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
	"github.com/mcpcage/mcpcage/daemon/audit"
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
	// NetworkWhy says what network the server gets and why (remote
	// servers: empty).
	NetworkWhy string `json:"-"`
	// Secrets are credentials from the entry, to store in the user's own
	// secret store (name: value) before the server is added; its env
	// names them as "secret:NAME".
	Secrets map[string]string `json:"-"`
}

// moveSecrets sets s.Env to env, with every value that looks like a
// credential moved to s.Secrets under a name of the server's that no
// other server of this run and no secret of the user's has (o). A value
// written "secret:NAME" is the client's literal string, which the server
// must receive as such: it is stored too, never read as a reference to
// one of the user's secrets (a hostile entry would name another server's
// token).
func (s *Server) moveSecrets(env map[string]string, o Options) {
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
		if v == "" || (!strings.HasPrefix(v, "secret:") && !looksSecret(k) && !valueLooksSecret(v)) {
			s.Env[k] = v
			continue
		}
		if s.Secrets == nil {
			s.Secrets = map[string]string{}
		}
		base := secretName(s.Name, k)
		name := base
		for i := 2; s.Secrets[name] != "" || o.secretTaken(name); i++ { // two keys, one name
			suffix := fmt.Sprintf("-%d", i)
			name = base[:min(len(base), maxSecretName-len(suffix))] + suffix
		}
		o.secretsGiven[name] = true
		s.Secrets[name] = v
		s.Env[k] = "secret:" + name
	}
}

// maxSecretName is the longest secret name mcpcaged accepts.
const maxSecretName = 128

// secretName names the secret holding variable key of server: the
// server's name, '.', and the key with no '.' (what a name cannot hold
// replaced by '-'), so that the last '.' ends the server's name and two
// servers' secrets never share a name (server a's b.TOKEN and server
// a.b's TOKEN were both a.b.TOKEN: found by a red-team review).
func secretName(server, key string) string {
	k := strings.Trim(secretKeyRe.ReplaceAllString(key, "-"), "-")
	if k == "" {
		k = "env"
	}
	n := server + "." + k
	if len(n) > maxSecretName {
		n = n[:maxSecretName]
	}
	return n
}

var secretKeyRe = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// secretTaken reports a secret name this run gave already, or one the
// user has (InUse).
func (o Options) secretTaken(name string) bool {
	return o.secretsGiven[name] || (o.InUse != nil && o.InUse(name))
}

// DefaultMcpcage is the mcpcage the package installs.
const DefaultMcpcage = "/usr/bin/mcpcage"

// Options tune Rewrite.
type Options struct {
	Home string   // the user's home, for ~ and mount checks
	Only []string // entry names to import (empty: all)
	// Mcpcage is the command written into the client config, an
	// absolute path (DefaultMcpcage when empty): a name looked up in the
	// client's PATH runs whatever comes first there.
	Mcpcage string
	// InUse reports a name taken by a server or a secret the user has,
	// or the name of a server whose secrets ("NAME.KEY") the user has:
	// setup never replaces one (nil: none).
	InUse func(name string) bool
	// IsDir reports whether a path is an existing directory (os by default).
	IsDir func(string) bool
	// RootOwned reports a regular file of root's in a directory of
	// root's, neither writable by others (os by default): a known
	// server's command counts by its name only then (network.go).
	RootOwned func(string) bool
	// Keep are entries to leave as they are, with the reason (the daemon
	// refused their import).
	Keep map[string]string

	secretsGiven map[string]bool // secret names this run gave (Rewrite)
}

// Result of a rewrite.
type Result struct {
	Config    []byte   // the new file (equal to the old one when nothing changed)
	Imported  []Server // server definitions to store
	Unchanged []string // entries already going through mcpcage
	// Repointed say which entries ran `mcpcage run NAME` through another
	// mcpcage (a name looked up in PATH) and now run Mcpcage.
	Repointed []string
	Remote    []string // remote entries left untouched (see Notes)
	// Notes say why an entry was left as it is.
	Notes   []string
	Skipped []string // entries not selected by Only
}

// Changed reports whether the file changes.
func (r *Result) Changed(old []byte) bool { return !bytes.Equal(r.Config, old) }

// Rewrite transforms one client config.
func Rewrite(c Client, data []byte, o Options) (*Result, error) {
	if o.Mcpcage == "" {
		o.Mcpcage = DefaultMcpcage
	}
	if !filepath.IsAbs(o.Mcpcage) {
		return nil, fmt.Errorf("mcpcage's path %q is not absolute; nothing was changed", o.Mcpcage)
	}
	if o.IsDir == nil {
		o.IsDir = func(p string) bool { st, err := os.Stat(p); return err == nil && st.IsDir() }
	}
	o.secretsGiven = map[string]bool{}
	if o.RootOwned == nil {
		o.RootOwned = rootOwned
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
	refs, err := fileEntries(c, data, top)
	if err != nil {
		return nil, err
	}
	serverName, err := serverNames(refs, o.InUse)
	if err != nil {
		return nil, err
	}
	// Rewrite from the end so earlier spans stay valid.
	out := data
	for i := len(refs) - 1; i >= 0; i-- {
		repl, err := res.rewriteEntry(c, o, refs[i], serverName[i], refs[i].span.Of(data))
		if err != nil {
			return nil, err
		}
		if repl != nil {
			out = jsonsplice.Splice(out, refs[i].span, repl)
		}
	}
	sort.Slice(res.Imported, func(i, j int) bool { return res.Imported[i].Name < res.Imported[j].Name })
	res.Config = out
	return res, nil
}

// rewriteEntry says what entry ref (raw) becomes, running server
// srvName: its new value, or nil to leave it as it is.
func (r *Result) rewriteEntry(c Client, o Options, ref entryRef, srvName string, raw []byte) ([]byte, error) {
	name := ref.label
	e, refused, err := decodeEntry(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: server %q is malformed: %v; nothing was changed", c.Path, name, err)
	}
	if refused != "" {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", name, refused))
		return nil, nil
	}
	if why, ok := o.Keep[name]; ok {
		r.Remote = append(r.Remote, name)
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", name, why))
		return nil, nil
	}
	remote := e.URL != "" || e.Server != "" || e.Type == "http" || e.Type == "sse" || e.Type == "streamable-http"
	if why := keepRemote(e); remote && why != "" {
		r.Remote = append(r.Remote, name)
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", name, why))
		return nil, nil
	}
	unselected := len(o.Only) > 0 && !contains(o.Only, ref.name) && !contains(o.Only, ref.label)
	if p := clientPlaceholder(e); p != "" && !unselected && filepath.Base(e.Command) != "mcpcage" {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: uses %s, which the client fills in each time it starts the server (a value it asks you for, or one of its variables) and mcpcage cannot: NOT through mcpcage, and left as it is. Store such a value yourself (mcpcage secret set NAME), add the server with it (mcpcage server add %s --env KEY=secret:NAME -- COMMAND...) and make the entry run `%s run %s`", name, p, srvName, o.Mcpcage, srvName))
		return nil, nil
	}
	switch {
	case e.Command == "" && !remote:
		return nil, nil
	case filepath.Base(e.Command) == "mcpcage" && !remote:
		return r.recage(raw, name, unselected, e, c, o), nil
	case unselected:
		r.Skipped = append(r.Skipped, name)
		return nil, nil
	case remote:
		srv := Server{Entry: name, ServerDef: api.ServerDef{Name: srvName, URL: orStr(e.URL, e.Server)}}
		srv.Warnings = append(srv.Warnings, fmt.Sprintf("%s is remote: if it asks for a sign-in, run `mcpcage login %s`; mcpcage keeps the tokens", name, srv.Name))
		return r.add(c, o, ref.base, srv), nil
	case isDocker(e):
		srv, why := importDocker(name, srvName, e, o)
		if why != "" {
			r.Remote = append(r.Remote, name)
			r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", name, why))
			return nil, nil
		}
		return r.add(c, o, ref.base, srv), nil
	}
	return r.add(c, o, ref.base, importEntry(name, srvName, e, o)), nil
}

// add records srv as imported, with a warning when its entry's name
// was taken, and returns the entry that runs it.
func (r *Result) add(c Client, o Options, base string, srv Server) []byte {
	if srv.Name != base {
		srv.Warnings = append(srv.Warnings, fmt.Sprintf("%s runs as server %s: %s is taken (by a server or secret of yours, or another entry of this file); nothing of yours is replaced", srv.Entry, srv.Name, base))
	}
	r.Imported = append(r.Imported, srv)
	return stdioEntry(c, o, []string{"run", srv.Name})
}

// recage says what entry name (raw), which runs mcpcage, becomes (nil:
// as it is): exactly `run NAME` through o.Mcpcage stays; through another
// mcpcage (a name looked up in PATH) it runs o.Mcpcage, all else kept;
// with a socket of its own it is written anew as `run NAME`, the
// socket dropped; anything else mcpcage is asked to do is left, noted.
func (r *Result) recage(raw []byte, name string, unselected bool, e entry, c Client, o Options) []byte {
	srvName, plain, ok := cagedRun(e)
	ran := fmt.Sprintf("ran `%s %s` through %q", filepath.Base(e.Command), strings.Join(e.Args, " "), e.Command)
	switch {
	case ok && plain && e.Command == o.Mcpcage:
		r.Unchanged = append(r.Unchanged, name)
		return nil
	case unselected:
		r.Skipped = append(r.Skipped, name)
		return nil
	case !ok:
		r.Notes = append(r.Notes, fmt.Sprintf("%s: runs mcpcage with arguments that are not `mcpcage run NAME` (%s): NOT through mcpcage as setup knows it; left as it is: write it as `%s run NAME`", name, strings.Join(e.Args, " "), o.Mcpcage))
		return nil
	case !plain:
		r.Repointed = append(r.Repointed, fmt.Sprintf("%s %s with a socket of its own (%s or env %s), which points it at whatever listens there, not at mcpcaged: it now runs `%s run %s`, written anew, the socket dropped", name, ran, socketFlag, api.EnvSocket, o.Mcpcage, srvName))
		return stdioEntry(c, o, []string{"run", srvName})
	}
	// Caged, but through whatever "mcpcage" the client finds (in its
	// PATH, or elsewhere): the same `run NAME` through ours.
	how := "another mcpcage than this one"
	if !filepath.IsAbs(e.Command) {
		how = "a name the client looks up in its PATH, which runs whatever comes first there"
	}
	r.Repointed = append(r.Repointed, fmt.Sprintf("%s %s, %s: it now runs %s, with the same arguments", name, ran, how, o.Mcpcage))
	return repoint(raw, o)
}

// placeholder finds a variable a client fills in when it starts a server:
// VS Code's and Cursor's ${input:ID}, ${env:NAME}, ${workspaceFolder},
// ${userHome}..., and Claude Code's ${NAME} and ${NAME:-default}.
var placeholder = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(:[^}]*)?\}`)

// clientPlaceholder returns the first such variable in e's command,
// arguments, working directory, environment or url ("" when none):
// imported as it is written, the server would receive the text itself.
func clientPlaceholder(e entry) string {
	fields := append([]string{e.Command, e.Cwd, e.URL, e.Server}, e.Args...)
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fields = append(fields, e.Env[k])
	}
	for _, f := range fields {
		if m := placeholder.FindString(f); m != "" {
			return m
		}
	}
	return ""
}

// stdioEntry is the client entry that runs mcpcage with args.
func stdioEntry(c Client, o Options, args []string) []byte {
	b, _ := json.Marshal(struct {
		Type    string   `json:"type,omitempty"`
		Command string   `json:"command"`
		Args    []string `json:"args"`
	}{c.StdioType, o.Mcpcage, args})
	return b
}

// repoint is entry (running e, some mcpcage) with its command set to
// o.Mcpcage and every other member kept.
func repoint(entry []byte, o Options) []byte {
	members, _ := jsonsplice.Members(entry)
	path, _ := json.Marshal(o.Mcpcage)
	return jsonsplice.Splice(entry, members[string(keyCommand)], path)
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

// importEntry builds the sandboxed definition of one client entry,
// server srvName.
func importEntry(name, srvName string, e entry, o Options) Server {
	s := Server{Entry: name, ServerDef: api.ServerDef{Name: srvName, Network: "none"}}
	s.moveSecrets(e.Env, o)
	args := make([]string, 0, len(e.Args))
	for _, a := range e.Args {
		args = append(args, expand(a, o.Home))
	}
	s.Command = append([]string{expand(e.Command, o.Home)}, args...)
	s.warnCredentialArgs(name, args)
	// A folder inside one already mounted shows through it (each is
	// mounted read-only at its own path); mcpcaged refuses a target
	// inside another mount of a user's server (runc would make it through
	// the user's own directory), so only the outermost is mounted.
	addMount := func(dir string) {
		if dir == "/" {
			return
		}
		inside := func(a, b string) bool { return strings.HasPrefix(filepath.Clean(a)+"/", filepath.Clean(b)+"/") }
		for _, m := range s.Mounts {
			if inside(dir, m.Target) {
				return
			}
		}
		s.Mounts = slices.DeleteFunc(s.Mounts, func(m api.MountDef) bool { return inside(m.Target, dir) })
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
	known, notKnown := knownNetworkServer(e, o.RootOwned)
	switch {
	case known != "":
		s.Network = "host"
		s.Egress = []string{"public:443"}
		s.NetworkWhy = fmt.Sprintf("%s gets the network: it runs %s, a known network server; it may reach any public address on port 443 (not the host, nor its local networks); narrow egress with `mcpcage server add`", name, known)
	case notKnown != "":
		s.NetworkWhy = fmt.Sprintf("%s gets no network: %s; if it needs one, `mcpcage server add %s --egress HOST:PORT -- ...`", name, notKnown, s.Name)
	default:
		s.NetworkWhy = fmt.Sprintf("%s gets no network: it runs no known network server (by its exact package or command name); if it needs one, `mcpcage server add %s --egress HOST:PORT -- ...`", name, s.Name)
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

// valueLooksSecret reports whether an env value carries a credential
// whatever its variable's name (audit.ValueLooksLikeCredential).
func valueLooksSecret(v string) bool { return audit.ValueLooksLikeCredential(v) }

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
