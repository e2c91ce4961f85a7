package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode"
)

// Remote are the keys of a server reached over streamable HTTP instead of
// started in a sandbox: url = "https://.../mcp".
type Remote struct {
	URL string `toml:"url"`
	// Hosts the daemon may contact for the server besides the url's host
	// (its authorization server when it lives elsewhere).
	Hosts []string `toml:"hosts"`
	// CAFile is a PEM bundle trusted besides the system's roots.
	CAFile string `toml:"ca_file"`
	// Timeout bounds connecting and waiting for an answer's headers.
	Timeout Duration `toml:"timeout"`
	// Scopes asked for at sign-in (default: what the server advertises).
	Scopes []string `toml:"scopes"`
	// ClientID and ClientSecret ("secret:NAME") of a client registered
	// with the authorization server beforehand; without them mcpcage
	// registers itself (RFC 7591).
	ClientID     string `toml:"client_id"`
	ClientSecret string `toml:"client_secret"`
	// LocalUsers run the programs of this host the server's connections
	// reach, when they reach one (loopback, an address of the host): user
	// names or uids, or "*" for any. The daemon connects only when the
	// listening socket is one of theirs [root].
	LocalUsers []string `toml:"local_users"`
}

// URLForRecords is the server's url as records and logs show it: without
// user info and with the query's values replaced, since a url may carry
// a credential (?api_key=...).
func (s *Server) URLForRecords() string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return "(invalid url)"
	}
	return RedactURL(u)
}

// RedactURL is u as records, logs and errors show it: a url may carry a
// credential (capability urls: ?api_key=..., /mcp/sk-.../sse, a
// fragment's #access_token=...). User info and the fragment are left
// out, query values replaced, a query key without a value (?ghp_...)
// replaced, and a path segment that may be a key (16 bytes or more,
// letters and digits mixed) replaced (found by a red-team helper).
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	if c.RawQuery != "" {
		kept := url.Values{}
		for k, vs := range c.Query() {
			if len(vs) == 1 && vs[0] == "" && !strings.Contains(c.RawQuery, k+"=") {
				k = "REDACTED" // the key alone: it may be the credential
			}
			kept[k] = []string{"REDACTED"}
		}
		c.RawQuery = kept.Encode()
	}
	if c.Path != "" {
		segs := strings.Split(c.Path, "/")
		for i, s := range segs {
			if mayBeKey(s) {
				segs[i] = "REDACTED"
			}
		}
		c.Path, c.RawPath = strings.Join(segs, "/"), ""
	}
	return c.String()
}

// mayBeKey reports whether a url path segment may be a credential: 16
// bytes or more with both letters and digits (an API key, a token, a
// webhook's UUID). Words and versions ("mcp", "v1", "sse") are not.
func mayBeKey(s string) bool {
	if len(s) < 16 {
		return false
	}
	letters, digits := false, false
	for _, r := range s {
		switch {
		case unicode.IsLetter(r):
			letters = true
		case unicode.IsDigit(r):
			digits = true
		}
	}
	return letters && digits
}

// UserRemoteHostAllowed reports whether a user's own remote server may
// contact host (host or host:port) under [daemon] user_remote_hosts.
func (d *Daemon) UserRemoteHostAllowed(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	for _, p := range d.UserRemoteHosts {
		for _, cand := range []string{strings.ToLower(host), strings.ToLower(name)} {
			if ok, _ := path.Match(strings.ToLower(p), cand); ok {
				return true
			}
		}
	}
	return false
}

// UserImageAllowed reports whether a user's own server may run image (a
// normalized reference) under [daemon] user_images. A pattern's "*"
// stops at "/" (path.Match), except "*" alone, which matches any image.
func (d *Daemon) UserImageAllowed(image string) bool {
	for _, p := range d.UserImages {
		if ok, _ := path.Match(p, image); ok || p == "*" {
			return true
		}
	}
	return false
}

// IsRemote reports whether the server is reached over HTTP.
func (s *Server) IsRemote() bool { return s.URL != "" }

// DefaultRemoteTimeout bounds connecting and an answer's headers.
const DefaultRemoteTimeout = Duration(60 * time.Second)

// RemoteHosts are the hosts the daemon may contact for s: the url's host
// (with its port, when it names one) and hosts (a name without a port
// allows every port).
func (s *Server) RemoteHosts() []string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return s.Hosts
	}
	return append([]string{u.Host}, s.Hosts...)
}

// sandboxOnly are keys that mean nothing for a remote server.
func sandboxKeysSet(s *Server) []string {
	var set []string
	add := func(on bool, key string) {
		if on {
			set = append(set, key)
		}
	}
	add(len(s.Command) > 0, "command")
	add(s.Image != "", "image")
	add(len(s.Args) > 0, "args")
	add(len(s.Env) > 0, "env")
	add(s.Workdir != "", "workdir")
	add(s.User != "", "user")
	add(len(s.Mounts) > 0, "mounts")
	add(s.Memory != 0, "memory")
	add(s.Pids != 0, "pids")
	add(s.CPUs != 0, "cpus")
	add(s.Seccomp != "", "seccomp")
	add(s.Network != "", "network")
	add(len(s.ReadonlyPaths) > 0, "readonly_paths")
	add(len(s.HiddenPaths) > 0, "hidden_paths")
	add(len(s.Egress) > 0, "egress")
	add(len(s.Listen) > 0, "listen")
	add(s.DenyPaths != nil, "deny_paths")
	return set
}

func validateRemote(s *Server, bad func(msg string, key ...string)) {
	for _, k := range sandboxKeysSet(s) {
		bad("applies to servers mcpcage starts, not to a remote server (url is set)", k)
	}
	u, err := url.Parse(s.URL)
	switch {
	case err != nil:
		bad(fmt.Sprintf("invalid URL: %v", err), "url")
	case u.Host == "" || u.User != nil || u.Fragment != "":
		bad(fmt.Sprintf("must be an absolute URL without user info or fragment, e.g. \"https://mcp.example.com/mcp\"; got %q", s.URL), "url")
	case u.Scheme == "https":
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
	case u.Scheme == "http":
		bad("plain http is allowed only to loopback addresses (127.0.0.1, ::1, localhost): use https", "url")
	default:
		bad(fmt.Sprintf("the scheme must be https, got %q", u.Scheme), "url")
	}
	for _, h := range s.Hosts {
		if h == "" || strings.ContainsAny(h, "/ @") {
			bad(fmt.Sprintf("must hold host names or host:port, got %q", h), "hosts")
		}
	}
	if s.CAFile != "" && !strings.HasPrefix(s.CAFile, "/") {
		bad(fmt.Sprintf("must be an absolute path, got %q", s.CAFile), "ca_file")
	}
	for _, u := range s.LocalUsers {
		if u != AnyLocalUser && !validUserName(u) {
			bad(fmt.Sprintf(`must hold user names, uids or "*", got %q`, u), "local_users")
		}
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultRemoteTimeout
	} else if s.Timeout < Duration(time.Second) || s.Timeout > Duration(time.Hour) {
		bad("must be between 1s and 1h", "timeout")
	}
	if s.ClientSecret != "" {
		ref, ok := strings.CutPrefix(s.ClientSecret, SecretPrefix)
		if !ok || !ValidSecretName(ref) {
			bad(`must name a stored secret ("secret:NAME", set with mcpcage secret set NAME), never the secret itself`, "client_secret")
		}
		if s.ClientID == "" {
			bad("needs client_id", "client_secret")
		}
	}
	for _, sc := range s.Scopes {
		if !validScope(sc) {
			bad(fmt.Sprintf("invalid scope %q (printable ASCII without spaces, quotes or backslashes)", sc), "scopes")
		}
	}
}

// AnyLocalUser in local_users lets a server reach a program of this host
// whoever runs it.
const AnyLocalUser = "*"

// validUserName accepts what a passwd entry's name or a uid can be:
// letters, digits, and "._-" (not first).
func validUserName(s string) bool {
	if s == "" || len(s) > 64 || strings.IndexAny(s[:1], ".-") == 0 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validScope follows RFC 6749 §3.3's scope-token.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}
