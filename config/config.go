package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// DefaultPath is where mcpcaged looks for its configuration.
const DefaultPath = "/etc/mcpcage/config.toml"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "MCPCAGE_CONFIG"

// Bounds of [daemon] egress_entries_per_user. The kernel's egress tries
// (one for IPv4, one for IPv6) hold MaxEgressEntriesPerUser entries each
// for every session of every user (package bpf's EgressTrieEntries); by
// default one user's sessions may take an eighth.
const (
	DefaultEgressEntriesPerUser = MaxEgressEntriesPerUser / 8
	MaxEgressEntriesPerUser     = 65536
)

// MaxEgressList bounds one server's egress list: every entry is a rule,
// or many (a host name's addresses, "public"'s ranges), in the kernel's
// shared tries and in each update of the session's rules.
const MaxEgressList = 1024

// Config is the whole configuration.
type Config struct {
	Daemon  Daemon             `toml:"daemon"`
	Servers map[string]*Server `toml:"servers"`
	Agents  map[string]*Agent  `toml:"agents"`
	// The data-flow guard: rules between server labels, and the
	// administrator's own content detectors (see flow.go).
	Flows     []Flow     `toml:"flow"`
	Detectors []Detector `toml:"detector"`

	// Path is the file this configuration came from ("" for defaults).
	Path string `toml:"-"`
}

// Daemon holds daemon-wide settings.
type Daemon struct {
	Socket              string `toml:"socket"`
	StateDir            string `toml:"state_dir"`
	ContainerdAddress   string `toml:"containerd_address"`
	ContainerdNamespace string `toml:"containerd_namespace"`
	// BPFPinDir is mcpcage's directory in the BPF file system: the exec
	// stamper's pins and, per containerd namespace, the cage's.
	BPFPinDir       string   `toml:"bpf_pin_dir"`
	MaxMessageBytes ByteSize `toml:"max_message_bytes"`
	StopTimeout     Duration `toml:"stop_timeout"`
	// MaxSessionsPerUser bounds the sessions (mcpcage run) one user has
	// at once, counting a session until its relay let go of the client's
	// files.
	MaxSessionsPerUser int `toml:"max_sessions_per_user"`
	// EgressEntriesPerUser bounds the entries of the kernel's egress
	// tries (one per address range or resolved address, per session and
	// address family) that one user's host-network sessions hold
	// together: the tries are shared by every user.
	EgressEntriesPerUser int    `toml:"egress_entries_per_user"`
	LogLevel             string `toml:"log_level"`
	// Landlock: "auto" (use it when the kernel has it), "off", "require".
	Landlock LandlockMode `toml:"landlock"`
	// InitPath is mcpcage-init, run inside each sandbox before the server.
	InitPath string `toml:"init_path"`
	// ShimPaths are the mcpcage files a session's shim may run (those
	// very files); empty: the mcpcage beside mcpcaged, else
	// /usr/bin/mcpcage.
	ShimPaths []string `toml:"shim_paths"`
	// AllowShimLaunchers lets a shim that a launcher (a shell, env) exec'd
	// in the agent's child run, unverified, instead of refusing it.
	AllowShimLaunchers bool `toml:"allow_shim_launchers"`
	// RequireEBPF refuses to launch servers whose rules need eBPF when it
	// is unavailable.
	RequireEBPF *bool `toml:"require_ebpf"`
	// DNSServers resolve egress host names ("host:port"; empty: the
	// nameservers of /etc/resolv.conf).
	DNSServers []string `toml:"dns_servers"`
	// PrivateDomains are domains whose names may resolve to private
	// addresses for egress (an intranet's "corp.example"). Other names'
	// DNS answers are allowed only where "public" reaches: whoever runs a
	// zone could point its names at the host's loopback or the LAN (DNS
	// rebinding). Compared without case or a trailing dot.
	PrivateDomains []string `toml:"private_domains"`
	// DefaultDecision: "deny" (calls need a consent) or "allow" (observe
	// mode: every call passes, the would-be denials are logged).
	DefaultDecision Decision `toml:"default_decision"`
	// Ask mode (default_decision = "ask"): how long a question waits for
	// an answer in the client, how long "for a while" (and a "deny") lasts,
	// how many questions one session may ask per minute, and how long an
	// unanswered request stays pending for mcpcage approve.
	AskTimeout   Duration `toml:"ask_timeout"`
	AskDuration  Duration `toml:"ask_duration"`
	AskPerMinute int      `toml:"ask_per_minute"`
	PendingTTL   Duration `toml:"pending_ttl"`
	// AdminGroup names a group whose members may manage every user's
	// consents, as root may. It may not be SocketGroup.
	AdminGroup string `toml:"admin_group"`
	// ConsentsBy says who gives consents out of band (mcpcage grant,
	// approve, pins approve): every user for themselves, or only root and
	// admin_group.
	ConsentsBy ConsentsBy `toml:"consents_by"`
	// Audit log.
	AuditLog          string         `toml:"audit_log"`
	AuditSync         AuditSync      `toml:"audit_sync"`
	AuditSyncInterval Duration       `toml:"audit_sync_interval"`
	AuditMaxSize      ByteSize       `toml:"audit_max_size"`
	AuditKeep         int            `toml:"audit_keep"`
	AuditArguments    AuditArguments `toml:"audit_arguments"`
	AuditJournal      bool           `toml:"audit_journal"`
	// MetricsAddress is host:port or a unix socket path; "" disables.
	MetricsAddress string `toml:"metrics_address"`
	// Warm sandboxes: how many prepared, unstarted sandboxes are kept (one
	// per server and user, for those used within WarmIdle; 0 disables),
	// and the memory their processes may hold together.
	WarmSandboxes int      `toml:"warm_sandboxes"`
	WarmIdle      Duration `toml:"warm_idle"`
	WarmMemory    ByteSize `toml:"warm_memory"`
	// ObserverLinger is how long the eBPF observation programs (the
	// syscall tracepoints every process on the host passes while they
	// are attached) stay attached after the last session ends, and after
	// start: detaching and attaching them again takes about 2 s, which a
	// session starting soon after would wait for. 0: detached at once.
	ObserverLinger Duration `toml:"observer_linger"`
	// UserRemoteHosts are the hosts users' own remote servers (mcpcage
	// server add --url) may name, as patterns of "host" or "host:port"
	// ("*" matches any; empty: users may add no remote server).
	UserRemoteHosts []string `toml:"user_remote_hosts"`
	// UserImages are the OCI images users' own servers (mcpcage server add
	// --image, client setup's `docker run` entries) may run, as patterns of
	// normalized references ("ghcr.io/github/*"; "*" matches any; empty,
	// the default: none). The daemon pulls them as root into containerd's
	// store, which is why they are off until the administrator says which.
	UserImages []string `toml:"user_images"`
}

// Agent is an [agents.NAME] entry: how a client process is recognised,
// and which servers it may use at all.
type Agent struct {
	Exe     []string `toml:"exe"`
	SHA256  []string `toml:"sha256"`
	UIDs    []int64  `toml:"uids"`
	Servers []string `toml:"servers"` // admin ceiling; empty: all
	// Script: for an interpreter (node, python3, bash...), the resolved
	// paths of the scripts that make this agent; ScriptSHA256 pins them.
	Script       []string `toml:"script"`
	ScriptSHA256 []string `toml:"script_sha256"`
	// Scopes narrow the agent's sign-in to remote servers: server name ->
	// the OAuth scopes the agent's own sign-in asks for (and the most it
	// may hold); servers not named use the user's sign-in.
	Scopes map[string][]string `toml:"scopes"`

	Name string `toml:"-"`
}

// Decision is what happens to a call no consent covers.
type Decision string

// Valid reports whether d is one of the decisions.
func (d Decision) Valid() bool {
	return d == DecisionDeny || d == DecisionAllow || d == DecisionAsk
}

// ConsentsBy is who gives consents out of band.
type ConsentsBy string

// ConsentsBy values.
const (
	// ConsentsByUser: every user grants and approves for themselves. Any
	// process of the user may then do so, the agent's own shell tool
	// included.
	ConsentsByUser ConsentsBy = "user"
	// ConsentsByAdmin: only root and admin_group grant, approve pending
	// requests and approve changed tools (sudo: a password the agent does
	// not have); users still revoke, deny and list their own.
	ConsentsByAdmin ConsentsBy = "admin"
)

// Decision values.
const (
	DecisionDeny  Decision = "deny"  // refused, with the grant command that would allow it
	DecisionAllow Decision = "allow" // observe mode: forwarded, the would-be denial recorded
	DecisionAsk   Decision = "ask"   // the user is asked (in the client, or out of band with mcpcage approve)
)

// LandlockMode says whether sandboxes use Landlock.
type LandlockMode string

// Landlock modes.
const (
	LandlockAuto    LandlockMode = "auto"    // when the kernel has it and mcpcage-init is installed
	LandlockOff     LandlockMode = "off"     // never
	LandlockRequire LandlockMode = "require" // refuse to start without it
)

// AuditSync says when audit records reach the disk.
type AuditSync string

// Audit sync modes.
const (
	AuditSyncAlways AuditSync = "always" // a call is forwarded once its record is durable
	AuditSyncBatch  AuditSync = "batch"  // records are synced on an interval
)

// AuditArguments says what of a call's arguments the audit log keeps.
type AuditArguments string

// SocketGroup is the group the daemon gives its socket (mode 0660) when
// the group exists: the users who may run mcpcage.
const SocketGroup = "mcpcage"

// Audit argument modes.
const (
	AuditArgsDigest   AuditArguments = "digest"   // only their keyed digest (args_digest)
	AuditArgsRedacted AuditArguments = "redacted" // secrets replaced, long strings truncated
	AuditArgsFull     AuditArguments = "full"     // as sent (secrets of the store still redacted)
)

// EBPFRequired reports require_ebpf (default true).
func (d Daemon) EBPFRequired() bool { return d.RequireEBPF == nil || *d.RequireEBPF }

// Server describes one MCP server the daemon can launch.
type Server struct {
	Command []string          `toml:"command"`
	Env     map[string]string `toml:"env"`
	Workdir string            `toml:"workdir"`
	Image   string            `toml:"image"`
	// Args, for an image without command: the arguments of the image's
	// entrypoint, in place of its CMD (as `docker run IMAGE ARGS...`).
	Args []string `toml:"args"`

	// Sandbox keys (see the package documentation).
	User          string   `toml:"user"`
	Mounts        []Mount  `toml:"mounts"`
	Memory        ByteSize `toml:"memory"`
	Pids          int64    `toml:"pids"`
	CPUs          float64  `toml:"cpus"`
	Seccomp       string   `toml:"seccomp"`
	Network       string   `toml:"network"`
	ReadonlyPaths []string `toml:"readonly_paths"`
	HiddenPaths   []string `toml:"hidden_paths"`
	Egress        []string `toml:"egress"`
	Listen        []string `toml:"listen"`
	// Policy: the admin ceiling no consent can exceed, and the server's
	// default decision ("" inherits [daemon]).
	ToolsAllow      []string `toml:"tools_allow"`
	ToolsDeny       []string `toml:"tools_deny"`
	DefaultDecision Decision `toml:"default_decision"`
	// DenyPaths (nil: DefaultDenyPaths); see DenyComponents.
	DenyPaths *[]string `toml:"deny_paths"`
	// Requests the server may make of the client (nil: the default; see
	// ClientRequest).
	AllowSampling    *bool `toml:"allow_sampling"`
	AllowElicitation *bool `toml:"allow_elicitation"`
	AllowRoots       *bool `toml:"allow_roots"`
	// PinPolicy: what happens to tools the daemon has not pinned yet
	// ("" is PinAcceptNew).
	PinPolicy PinPolicy `toml:"pin_policy"`
	// The data-flow guard: the server's labels ([[flow]] rules name them)
	// and what a suspect influence does ("" is SuspectLog).
	Labels    []string  `toml:"labels"`
	OnSuspect OnSuspect `toml:"on_suspect"`
	// A remote server (url set instead of command): see remote.go.
	Remote
	// Personal marks a user's own server (package daemon/userservers
	// sets it; no configuration file can): it reads its owner's secrets
	// only and runs within [daemon] user_images and user_remote_hosts.
	Personal bool `toml:"-"`
	// Definition, for a user's own server, identifies the definition it
	// was read from (package daemon/userservers sets it: a digest of it as
	// stored); "" for the administrator's. An answer given in a session
	// is kept only while the server is still defined so.
	Definition string `toml:"-"`

	// Name is the server's key under [servers].
	Name string `toml:"-"`
}

// Mount is a host directory or file made visible in a sandbox.
type Mount struct {
	Source   string `toml:"source"` // host path; "~" is the delegating user's home
	Target   string `toml:"target"` // absolute path inside the sandbox
	Readonly *bool  `toml:"readonly"`
}

// Writable reports whether the mount is read-write (mounts are read-only
// unless readonly = false is written).
func (m Mount) Writable() bool { return m.Readonly != nil && !*m.Readonly }

// Sandbox defaults.
const (
	DefaultMemory  = ByteSize(1 << 30)
	DefaultPids    = 256
	DefaultCPUs    = 1.0
	SeccompDefault = "default"
	SeccompOff     = "unconfined"
	NetworkNone    = "none"
	NetworkHost    = "host"
)

// Default returns the built-in configuration used when no file exists.
func Default() *Config {
	return &Config{
		Daemon: Daemon{
			Socket:               "/run/mcpcage/mcpcage.sock",
			StateDir:             "/var/lib/mcpcage",
			ContainerdAddress:    "/run/containerd/containerd.sock",
			ContainerdNamespace:  "mcpcage",
			BPFPinDir:            DefaultBPFPinDir,
			MaxMessageBytes:      64 << 20,
			StopTimeout:          Duration(2 * time.Second),
			MaxSessionsPerUser:   64,
			EgressEntriesPerUser: DefaultEgressEntriesPerUser,
			LogLevel:             "info",
			Landlock:             LandlockAuto,
			DefaultDecision:      DecisionDeny,
			AuditLog:             "/var/log/mcpcage/audit.jsonl",
			AuditSync:            AuditSyncAlways,
			AuditSyncInterval:    Duration(time.Second),
			AuditMaxSize:         64 << 20,
			AuditKeep:            10,
			AuditArguments:       AuditArgsRedacted,
			MetricsAddress:       "127.0.0.1:9464",
			WarmSandboxes:        4,
			WarmIdle:             Duration(10 * time.Minute),
			WarmMemory:           128 << 20,
			ObserverLinger:       Duration(30 * time.Second),
			UserRemoteHosts:      []string{"*"},
			AskTimeout:           Duration(2 * time.Minute),
			AskDuration:          Duration(8 * time.Hour),
			AskPerMinute:         5,
			PendingTTL:           Duration(time.Hour),
		},
		Servers: map[string]*Server{},
		Agents:  map[string]*Agent{},
	}
}

// ResolvePath picks the configuration file: the flag, then $MCPCAGE_CONFIG,
// then DefaultPath. explicit reports whether the user named it (a missing
// explicit file is an error; a missing default file is not).
func ResolvePath(flag string) (path string, explicit bool) {
	if flag != "" {
		return flag, true
	}
	if env := os.Getenv(EnvPath); env != "" {
		return env, true
	}
	return DefaultPath, false
}

// Load reads the file at path. When the file does not exist and mustExist
// is false, it returns Default().
func Load(path string, mustExist bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !mustExist {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	cfg.Path = path
	return cfg, nil
}

// Parse decodes and validates a configuration document.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return nil, decodeError(err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		var errs []error
		for _, k := range undecoded {
			errs = append(errs, &KeyError{Key: k.String(), Line: lineOf(data, k), Msg: "unknown key" + suggestion(k)})
		}
		return nil, errors.Join(errs...)
	}
	if err := cfg.validate(data); err != nil {
		return nil, err
	}
	return cfg, nil
}

// KeyError is an invalid configuration value, located by key and line.
type KeyError struct {
	Key  string
	Line int // 0 when unknown
	Msg  string
}

func (e *KeyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Key, e.Msg)
}

var serverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

var logLevels = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}

func (c *Config) validate(data []byte) error {
	var errs []error
	bad := func(msg string, key ...string) {
		errs = append(errs, &KeyError{Key: toml.Key(key).String(), Line: lineOf(data, key), Msg: msg})
	}
	d := &c.Daemon
	for _, p := range []struct {
		key, val string
	}{{"socket", d.Socket}, {"state_dir", d.StateDir}, {"containerd_address", d.ContainerdAddress}} {
		if !strings.HasPrefix(p.val, "/") {
			bad(fmt.Sprintf("must be an absolute path, got %q", p.val), "daemon", p.key)
		}
	}
	if msg := checkBPFPinDir(d.BPFPinDir); msg != "" {
		bad(msg, "daemon", "bpf_pin_dir")
	}
	// It names directories too (the parent cgroup, the cage's pins below
	// bpf_pin_dir): "." or ".." would name the one above, whose pins
	// would be taken for stale ones.
	if d.ContainerdNamespace == "" || d.ContainerdNamespace == "." || d.ContainerdNamespace == ".." || strings.ContainsAny(d.ContainerdNamespace, "/ ") {
		bad(fmt.Sprintf("must be a plain name, got %q", d.ContainerdNamespace), "daemon", "containerd_namespace")
	}
	if d.MaxMessageBytes < 1024 || d.MaxMessageBytes > 1<<30 {
		bad(fmt.Sprintf("must be between 1KiB and 1GiB, got %d bytes", d.MaxMessageBytes), "daemon", "max_message_bytes")
	}
	if d.MaxSessionsPerUser < 1 || d.MaxSessionsPerUser > 512 {
		bad(fmt.Sprintf("must be between 1 and 512, got %d", d.MaxSessionsPerUser), "daemon", "max_sessions_per_user")
	}
	if d.EgressEntriesPerUser < 16 || d.EgressEntriesPerUser > MaxEgressEntriesPerUser {
		bad(fmt.Sprintf("must be between 16 and %d (the kernel's egress tries hold %d entries each, for every user), got %d", MaxEgressEntriesPerUser, MaxEgressEntriesPerUser, d.EgressEntriesPerUser), "daemon", "egress_entries_per_user")
	}
	if d.StopTimeout <= 0 || time.Duration(d.StopTimeout) > 5*time.Minute {
		bad(fmt.Sprintf("must be between 0 and 5m, got %s", time.Duration(d.StopTimeout)), "daemon", "stop_timeout")
	}
	if d.WarmSandboxes < 0 || d.WarmSandboxes > 64 {
		bad(fmt.Sprintf("must be between 0 (off) and 64, got %d", d.WarmSandboxes), "daemon", "warm_sandboxes")
	}
	if d.WarmIdle <= 0 || time.Duration(d.WarmIdle) > 24*time.Hour {
		bad(fmt.Sprintf("must be more than 0 and at most 24h, got %s", time.Duration(d.WarmIdle)), "daemon", "warm_idle")
	}
	if d.ObserverLinger < 0 || time.Duration(d.ObserverLinger) > 10*time.Minute {
		bad(fmt.Sprintf("must be between 0 (detach at once) and 10m, got %s", time.Duration(d.ObserverLinger)), "daemon", "observer_linger")
	}
	if d.WarmMemory < 0 {
		bad(fmt.Sprintf("must not be negative, got %d bytes", d.WarmMemory), "daemon", "warm_memory")
	}
	for _, p := range d.UserImages {
		if _, err := path.Match(p, ""); err != nil || p == "" || strings.ContainsAny(p, " @") {
			bad(fmt.Sprintf("%q is not an image pattern (\"ghcr.io/github/*\", \"docker.io/library/alpine:3.20\", \"*\")", p), "daemon", "user_images")
		}
	}
	for _, h := range d.UserRemoteHosts {
		if _, err := path.Match(h, ""); err != nil || h == "" || strings.ContainsAny(h, "/@ ") {
			bad(fmt.Sprintf("%q is not a host pattern (\"*.example.com\", \"127.0.0.1:8443\", \"*\")", h), "daemon", "user_remote_hosts")
		}
	}
	if !logLevels[d.LogLevel] {
		bad(fmt.Sprintf("must be debug, info, warn or error, got %q", d.LogLevel), "daemon", "log_level")
	}
	for _, name := range c.ServerNames() {
		s := c.Servers[name]
		s.Name = name
		if !serverName.MatchString(name) {
			bad("server names use letters, digits, '.', '-' and '_' (at most 63)", "servers", name)
		}
		switch s.PinPolicy {
		case "", PinAcceptNew, PinQuarantine, PinOff:
		default:
			bad(fmt.Sprintf("must be \"accept-new\", \"quarantine\" or \"off\", got %q", s.PinPolicy), "servers", name, "pin_policy")
		}
		if s.IsRemote() {
			validateRemote(s, func(msg string, key ...string) { bad(msg, append([]string{"servers", name}, key...)...) })
		} else {
			validateProcess(s, func(msg string, key ...string) { bad(msg, append([]string{"servers", name}, key...)...) })
			if s.Workdir == "" && s.Image == "" {
				s.Workdir = "/"
			} else if s.Workdir != "" && !strings.HasPrefix(s.Workdir, "/") {
				bad(fmt.Sprintf("must be an absolute path inside the sandbox, got %q", s.Workdir), "servers", name, "workdir")
			}
			for k, v := range s.Env {
				if k == "" || strings.ContainsAny(k, "=\x00") {
					bad(fmt.Sprintf("invalid variable name %q", k), "servers", name, "env")
				}
				if ref, ok := strings.CutPrefix(v, SecretPrefix); ok && !ValidSecretName(ref) {
					bad(fmt.Sprintf("%s=%q names an invalid secret: names use letters, digits, '.', '-' and '_'", k, v), "servers", name, "env")
				}
			}
			validateSandbox(s, func(msg string, key ...string) { bad(msg, append([]string{"servers", name}, key...)...) })
		}
		if s.DefaultDecision != "" && !s.DefaultDecision.Valid() {
			bad(fmt.Sprintf(`must be "deny", "ask" or "allow", got %q`, s.DefaultDecision), "servers", name, "default_decision")
		}
		for _, list := range []struct {
			key  string
			pats []string
		}{{"tools_allow", s.ToolsAllow}, {"tools_deny", s.ToolsDeny}} {
			for _, p := range list.pats {
				if _, err := path.Match(p, ""); err != nil || p == "" {
					bad(fmt.Sprintf("invalid pattern %q", p), "servers", name, list.key)
				}
			}
		}
	}
	if !strings.HasPrefix(d.AuditLog, "/") {
		bad(fmt.Sprintf("must be an absolute path, got %q", d.AuditLog), "daemon", "audit_log")
	}
	if d.AuditSync != AuditSyncAlways && d.AuditSync != AuditSyncBatch {
		bad(fmt.Sprintf(`must be "always" or "batch", got %q`, d.AuditSync), "daemon", "audit_sync")
	}
	if d.AuditSyncInterval <= 0 || time.Duration(d.AuditSyncInterval) > time.Minute {
		bad("must be between 0 and 1m", "daemon", "audit_sync_interval")
	}
	if d.AuditMaxSize < 4096 {
		bad("must be at least 4KiB", "daemon", "audit_max_size")
	}
	if d.AuditKeep < 1 || d.AuditKeep > 10000 {
		bad("must be between 1 and 10000", "daemon", "audit_keep")
	}
	switch d.AuditArguments {
	case AuditArgsDigest, AuditArgsRedacted, AuditArgsFull:
	default:
		bad(fmt.Sprintf(`must be "digest", "redacted" or "full", got %q`, d.AuditArguments), "daemon", "audit_arguments")
	}
	for _, s := range d.DNSServers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			bad(fmt.Sprintf("%q is not an IP address with a port (e.g. \"127.0.0.53:53\", \"[::1]:53\")", s), "daemon", "dns_servers")
		}
	}
	for _, dom := range d.PrivateDomains {
		if err := egress.CheckDomain(dom); err != nil {
			bad(err.Error(), "daemon", "private_domains")
		}
	}
	if d.MetricsAddress != "" && !strings.HasPrefix(d.MetricsAddress, "/") {
		if _, _, err := net.SplitHostPort(d.MetricsAddress); err != nil {
			bad(fmt.Sprintf("must be host:port, a unix socket path, or empty; got %q", d.MetricsAddress), "daemon", "metrics_address")
		}
	}
	if d.AdminGroup == SocketGroup {
		bad(fmt.Sprintf("%q is the group of the daemon's socket, which every user of mcpcage is in: each of them would administer every user's consents; name a group of administrators only (e.g. \"mcpcage-admin\")", d.AdminGroup), "daemon", "admin_group")
	}
	switch d.ConsentsBy {
	case "":
		d.ConsentsBy = ConsentsByUser
	case ConsentsByUser, ConsentsByAdmin:
	default:
		bad(fmt.Sprintf(`must be "user" or "admin", got %q`, d.ConsentsBy), "daemon", "consents_by")
	}
	if !d.DefaultDecision.Valid() {
		bad(fmt.Sprintf(`must be "deny", "ask" or "allow", got %q`, d.DefaultDecision), "daemon", "default_decision")
	}
	if d.AskTimeout < Duration(time.Second) || d.AskTimeout > Duration(time.Hour) {
		bad("must be between 1s and 1h", "daemon", "ask_timeout")
	}
	if d.AskDuration < Duration(time.Minute) || d.AskDuration > Duration(30*24*time.Hour) {
		bad("must be between 1m and 30 days (720h)", "daemon", "ask_duration")
	}
	if d.AskPerMinute < 1 || d.AskPerMinute > 60 {
		bad(fmt.Sprintf("must be between 1 and 60, got %d", d.AskPerMinute), "daemon", "ask_per_minute")
	}
	if d.PendingTTL < Duration(time.Minute) || d.PendingTTL > Duration(7*24*time.Hour) {
		bad("must be between 1m and 7 days (168h)", "daemon", "pending_ttl")
	}
	c.validateFlow(bad)
	for _, name := range sortedAgentNames(c.Agents) {
		a := c.Agents[name]
		a.Name = name
		if !serverName.MatchString(name) || strings.HasPrefix(name, "exe:") {
			bad("agent names use letters, digits, '.', '-' and '_'", "agents", name)
		}
		for srv, scopes := range a.Scopes {
			if t := c.Servers[srv]; t == nil || !t.IsRemote() {
				bad(fmt.Sprintf("names %q, which is not a remote server (scopes apply to servers with a url)", srv), "agents", name, "scopes")
			}
			if len(scopes) == 0 {
				bad(fmt.Sprintf("gives %s no scope: name at least one (an agent that may hold nothing there should not have the server: see servers)", srv), "agents", name, "scopes")
			}
			for _, sc := range scopes {
				if !validScope(sc) {
					bad(fmt.Sprintf("invalid scope %q for %s", sc, srv), "agents", name, "scopes")
				}
			}
		}
		if len(a.Exe) == 0 {
			bad(`is required: the agent's executable paths, e.g. ["/opt/Claude/claude"]`, "agents", name, "exe")
		}
		for _, e := range a.Exe {
			if !strings.HasPrefix(e, "/") {
				bad(fmt.Sprintf("must hold absolute paths, got %q", e), "agents", name, "exe")
			}
		}
		for _, d := range a.SHA256 {
			if len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "" {
				bad(fmt.Sprintf("must hold lower-case hex SHA-256 digests, got %q", d), "agents", name, "sha256")
			}
		}
		for _, sc := range a.Script {
			if !strings.HasPrefix(sc, "/") {
				bad(fmt.Sprintf("must hold absolute paths, got %q", sc), "agents", name, "script")
			}
		}
		for _, d := range a.ScriptSHA256 {
			if len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "" {
				bad(fmt.Sprintf("must hold lower-case hex SHA-256 digests, got %q", d), "agents", name, "script_sha256")
			}
		}
		if len(a.ScriptSHA256) > 0 && len(a.Script) == 0 {
			bad("needs script: the paths of the scripts these digests pin", "agents", name, "script_sha256")
		}
		for _, u := range a.UIDs {
			if u < 0 || u > 1<<32-1 {
				bad(fmt.Sprintf("invalid uid %d", u), "agents", name, "uids")
			}
		}
		for _, sv := range a.Servers {
			if _, ok := c.Servers[sv]; !ok {
				bad(fmt.Sprintf("names server %q, which is not configured", sv), "agents", name, "servers")
			}
		}
	}
	switch d.Landlock {
	case LandlockAuto, LandlockOff, LandlockRequire:
	default:
		bad(fmt.Sprintf("must be auto, off or require, got %q", d.Landlock), "daemon", "landlock")
	}
	if d.InitPath != "" && !strings.HasPrefix(d.InitPath, "/") {
		bad(fmt.Sprintf("must be an absolute path, got %q", d.InitPath), "daemon", "init_path")
	}
	for _, p := range d.ShimPaths {
		if !strings.HasPrefix(p, "/") {
			bad(fmt.Sprintf("must hold absolute paths, got %q", p), "daemon", "shim_paths")
		}
	}
	return errors.Join(errs...)
}

func sortedAgentNames(m map[string]*Agent) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Decision returns the server's effective default decision.
func (c *Config) Decision(s *Server) Decision {
	if s.DefaultDecision != "" {
		return s.DefaultDecision
	}
	return c.Daemon.DefaultDecision
}

// ServerNames returns the configured server names, sorted.
func (c *Config) ServerNames() []string {
	names := make([]string, 0, len(c.Servers))
	for n := range c.Servers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key := pe.LastKey
		if key == "" {
			key = "(document)"
		}
		return &KeyError{Key: key, Line: pe.Position.Line, Msg: pe.Message}
	}
	return err
}

var knownKeys = []string{"daemon", "servers", "socket", "state_dir", "containerd_address", "containerd_namespace", "bpf_pin_dir",
	"max_message_bytes", "stop_timeout", "log_level", "landlock", "init_path", "command", "env", "workdir", "image", "args", "user_images",
	"user", "mounts", "source", "target", "readonly", "memory", "pids", "cpus", "seccomp", "network",
	"readonly_paths", "hidden_paths", "egress", "listen", "deny_paths", "require_ebpf", "agents", "exe", "sha256", "uids", "script", "script_sha256",
	"default_decision", "admin_group", "consents_by", "tools_allow", "tools_deny", "audit_log", "audit_sync", "audit_sync_interval",
	"audit_max_size", "audit_keep", "audit_arguments", "audit_journal", "metrics_address", "dns_servers", "private_domains",
	"warm_sandboxes", "warm_idle", "warm_memory", "allow_sampling", "allow_elicitation", "allow_roots", "pin_policy",
	"ask_timeout", "ask_duration", "ask_per_minute", "pending_ttl"}

func suggestion(k toml.Key) string {
	last := k[len(k)-1]
	for _, known := range knownKeys {
		if editDistance(last, known) <= 2 && last != known {
			return fmt.Sprintf(" (did you mean %q?)", known)
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
