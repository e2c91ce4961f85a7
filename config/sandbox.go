package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// SecretPrefix marks an env value resolved from the daemon's secret store:
// env = { GITHUB_TOKEN = "secret:github" }.
const SecretPrefix = "secret:"

var secretName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidSecretName reports whether name may name a secret.
func ValidSecretName(name string) bool { return secretName.MatchString(name) }

var userSpec = regexp.MustCompile(`^([0-9]+:[0-9]+|[a-z_][a-z0-9_.-]*[$]?)$`)

// reservedTargets cannot be mount targets: the sandbox owns them.
var reservedTargets = []string{"/", "/proc", "/sys", "/dev", "/.mcpcage"}

// validateProcess checks what a local server runs: a command, or an
// image's entrypoint (with args in place of its CMD).
func validateProcess(s *Server, bad func(msg string, key ...string)) {
	switch {
	case len(s.Command) > 0 && s.Command[0] == "":
		bad("must not start with an empty string", "command")
	case len(s.Command) == 0 && s.Image == "":
		bad(`is required: the server's argv, e.g. ["node", "/path/server.js"] (or image, or url for a remote server)`, "command")
	case len(s.Args) > 0 && s.Image == "":
		bad("applies to an image's entrypoint only: put the arguments in command", "args")
	case len(s.Args) > 0 && len(s.Command) > 0:
		bad("replaces the image's CMD, and command replaces its entrypoint and CMD both: set one of them", "args")
	}
}

func validateSandbox(s *Server, bad func(msg string, key ...string)) {
	if s.User != "" && !userSpec.MatchString(s.User) {
		bad(fmt.Sprintf(`must be "UID:GID", a user name or "root", got %q`, s.User), "user")
	}
	if s.Memory == 0 {
		s.Memory = DefaultMemory
	} else if s.Memory < 16<<20 {
		bad(fmt.Sprintf("must be at least 16MiB, got %d bytes", s.Memory), "memory")
	}
	if s.Pids == 0 {
		s.Pids = DefaultPids
	} else if s.Pids < 8 || s.Pids > 1<<20 {
		bad(fmt.Sprintf("must be between 8 and 1048576, got %d", s.Pids), "pids")
	}
	if s.CPUs == 0 {
		s.CPUs = DefaultCPUs
	} else if !(s.CPUs >= 0.01 && s.CPUs <= 1024) { // NaN compares false both ways

		bad(fmt.Sprintf("must be between 0.01 and 1024, got %g", s.CPUs), "cpus")
	}
	switch {
	case s.Seccomp == "":
		s.Seccomp = SeccompDefault
	case s.Seccomp == SeccompDefault, s.Seccomp == SeccompOff, strings.HasPrefix(s.Seccomp, "/"):
	default:
		bad(fmt.Sprintf(`must be "default", "unconfined" or an absolute path to an OCI seccomp profile (JSON), got %q`, s.Seccomp), "seccomp")
	}
	switch s.Network {
	case "":
		s.Network = NetworkNone
	case NetworkNone, NetworkHost:
	default:
		bad(fmt.Sprintf(`must be "none" or "host", got %q`, s.Network), "network")
	}
	if len(s.Egress) > MaxEgressList {
		bad(fmt.Sprintf("has %d entries, at most %d: use address ranges (\"203.0.113.0/24:443\") or \"public:PORT\" for many addresses", len(s.Egress), MaxEgressList), "egress")
	}
	for _, e := range s.Egress {
		if _, err := egress.Parse(e); err != nil {
			bad(err.Error(), "egress")
		}
	}
	if len(s.Egress) > 0 && s.Network != NetworkHost {
		bad(`egress applies to network = "host"; with network = "none" the server has loopback only`, "egress")
	}
	for _, l := range s.Listen {
		if _, err := ParseListen(l); err != nil {
			bad(err.Error(), "listen")
		}
	}
	if len(s.Listen) > 0 && s.Network != NetworkHost {
		bad(`listen applies to network = "host"; with network = "none" the server listens in its own network namespace, which the host cannot reach`, "listen")
	}
	if s.DenyPaths != nil {
		for _, p := range *s.DenyPaths {
			if _, err := DenyComponent(p); err != nil {
				bad(err.Error(), "deny_paths")
			}
		}
	}
	seen := map[string]bool{}
	for i, m := range s.Mounts {
		key := fmt.Sprintf("mounts[%d]", i)
		if m.Source == "" || !(strings.HasPrefix(m.Source, "/") || m.Source == "~" || strings.HasPrefix(m.Source, "~/")) {
			bad(fmt.Sprintf(`source must be an absolute path or start with "~/", got %q`, m.Source), "mounts", key)
		}
		t := path.Clean(m.Target)
		if !strings.HasPrefix(m.Target, "/") {
			bad(fmt.Sprintf("target must be an absolute path inside the sandbox, got %q", m.Target), "mounts", key)
		}
		for _, r := range reservedTargets {
			if t == r || (r != "/" && strings.HasPrefix(t, r+"/")) {
				bad(fmt.Sprintf("target %q is reserved by the sandbox", m.Target), "mounts", key)
			}
		}
		if seen[t] {
			bad(fmt.Sprintf("target %q is mounted twice", m.Target), "mounts", key)
		}
		seen[t] = true
		s.Mounts[i].Target = t
	}
	for _, list := range []struct {
		key   string
		paths []string
	}{{"readonly_paths", s.ReadonlyPaths}, {"hidden_paths", s.HiddenPaths}} {
		for _, p := range list.paths {
			if !strings.HasPrefix(p, "/") {
				bad(fmt.Sprintf("must hold absolute paths, got %q", p), list.key)
			}
		}
	}
}

// ParseListen parses a listen entry: an IP literal and a port,
// "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080" (every IPv4 address) or
// "[::]:8080" (every address). The address is the one the server binds:
// a server that binds 0.0.0.0:8080 needs "0.0.0.0:8080", not
// "127.0.0.1:8080". IPv4-mapped IPv6 addresses count as IPv4.
func ParseListen(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf(`listen %q: want an IP literal and a port, e.g. "127.0.0.1:8080" or "[::1]:8080"`, s)
	}
	if ap.Addr().Zone() != "" {
		return ap, fmt.Errorf("listen %q: zoned addresses are not supported", s)
	}
	if ap.Port() == 0 {
		return ap, fmt.Errorf("listen %q: port 0 (any ephemeral port) cannot be allowed: name the port", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ListenAddrs returns the server's listen allow-list (validated).
func (s *Server) ListenAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, l := range s.Listen {
		if ap, err := ParseListen(l); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

// DefaultDenyPaths are denied when a server sets no deny_paths: opening a
// file below one of these kills the server's process.
var DefaultDenyPaths = []string{"**/.ssh/**", "**/.aws/**", "**/.gnupg/**"}

// DenyPatterns returns the server's deny_paths, or the defaults.
func (s *Server) DenyPatterns() []string {
	if s.DenyPaths == nil {
		return DefaultDenyPaths
	}
	return *s.DenyPaths
}

// DenyComponent turns a deny_paths pattern into the path component the
// kernel matches. Patterns: "**/NAME/**" (anything below a directory NAME,
// wherever it is) and "**/NAME" (a file or directory NAME anywhere).
func DenyComponent(pattern string) (string, error) {
	name := strings.TrimPrefix(pattern, "**/")
	name = strings.TrimSuffix(name, "/**")
	if name == pattern || name == "" || strings.ContainsAny(name, "/*?[") || len(name) > 47 {
		return "", fmt.Errorf(`deny_paths %q: the kernel matches path components: write "**/NAME/**" or "**/NAME" (NAME at most 47 bytes, no wildcards)`, pattern)
	}
	return name, nil
}

// Validate checks a server definition made outside a configuration file
// (a user-scoped server) with the rules a file gets, filling defaults.
func (s *Server) Validate(name string) error {
	var errs []error
	bad := func(msg string, key ...string) {
		errs = append(errs, &KeyError{Key: strings.Join(append([]string{name}, key...), "."), Msg: msg})
	}
	if !serverName.MatchString(name) {
		bad("server names use letters, digits, '.', '-' and '_' (at most 63)")
	}
	if s.IsRemote() {
		validateRemote(s, bad)
		s.Name = name
		return errors.Join(errs...)
	}
	validateProcess(s, bad)
	if s.Workdir == "" && s.Image == "" {
		s.Workdir = "/"
	} else if s.Workdir != "" && !strings.HasPrefix(s.Workdir, "/") {
		bad("must be an absolute path", "workdir")
	}
	validateSandbox(s, bad)
	s.Name = name
	return errors.Join(errs...)
}
