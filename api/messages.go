package api

import "encoding/json"

// Version is the protocol version a client announces.
const Version = 1

// Ops understood by the daemon.
const (
	OpRun        = "run"         // start a session with a server
	OpStatus     = "status"      // daemon status
	OpServers    = "servers"     // list configured servers with their sandboxes
	OpServerSpec = "server.spec" // the OCI spec a session of Server would get
	OpSecretSet  = "secret.set"  // store Value under Name (root only)
	OpSecretRm   = "secret.rm"   // remove secret Name (root only)
	OpSecretList = "secret.list" // names of the secrets (root only)
	OpTrace      = "trace"       // stream kernel events (FrameStdout, JSON lines) until closed
)

// Request opens a connection.
type Request struct {
	Version int    `json:"version"`
	Op      string `json:"op"`
	Server  string `json:"server,omitempty"`
	Session string `json:"session,omitempty"`
	Name    string `json:"name,omitempty"`
	// Value carries a secret for OpSecretSet; the daemon never logs it.
	Value string `json:"value,omitempty"`
}

// Error codes in a Reply.
const (
	CodeUnknownServer = "unknown_server"
	CodeLaunchFailed  = "launch_failed"
	CodeBadRequest    = "bad_request"
	CodeShuttingDown  = "shutting_down"
	CodeInternal      = "internal"
	CodeDenied        = "denied"
	CodeNotFound      = "not_found"
)

// Reply answers a Request.
type Reply struct {
	OK      bool            `json:"ok"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"` // one line: what happened and what to do
	Session string          `json:"session,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"` // op-specific result
}

// Exit ends a session.
type Exit struct {
	// Code is the server's exit status, or -1 when it has none (the
	// session ended for another reason).
	Code int `json:"code"`
	// Reason says why the session ended, e.g. "server exited",
	// "client closed", "message too large".
	Reason string `json:"reason"`
	// Error is a one-line message for the user when the end was abnormal.
	Error string `json:"error,omitempty"`
}

// Status is the data of an OpStatus reply.
type Status struct {
	Version    string   `json:"version"`
	Uptime     string   `json:"uptime"`
	Containerd string   `json:"containerd"`
	Sessions   int      `json:"sessions"`
	Servers    []string `json:"servers"`
	ConfigPath string   `json:"config_path"`
	// Enforcement maps each protection (seccomp, landlock...) to its state.
	Enforcement map[string]string `json:"enforcement"`
	// Kernel is the eBPF layer's state; nil when it is unavailable.
	Kernel *KernelStatus `json:"kernel,omitempty"`
}

// KernelStatus reports the eBPF maps and event losses.
type KernelStatus struct {
	Sessions      int    `json:"sessions"`       // registered session cgroups
	EgressEntries int    `json:"egress_entries"` // LPM entries, all sessions
	DenyEntries   int    `json:"deny_entries"`   // denied path components, all sessions
	LostRingbuf   uint64 `json:"lost_ringbuf"`   // events lost to a full ring buffer
	LostThrottled uint64 `json:"lost_throttled"` // events over a session's rate
	CgroupParent  string `json:"cgroup_parent"`
}

// ServerInfo is one element of an OpServers reply.
type ServerInfo struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Image   string   `json:"image,omitempty"`
	Workdir string   `json:"workdir"`
	// The effective sandbox for the caller.
	User     string   `json:"user"` // uid:gid the server would run as
	Network  string   `json:"network"`
	Memory   int64    `json:"memory_bytes"`
	Pids     int64    `json:"pids"`
	CPUs     float64  `json:"cpus"`
	Seccomp  string   `json:"seccomp"`
	Landlock bool     `json:"landlock"`
	Mounts   []string `json:"mounts"` // "source:target:ro|rw"
	Hidden   []string `json:"hidden,omitempty"`
	Env      []string `json:"env,omitempty"` // KEY=value, secrets as secret:NAME
}
