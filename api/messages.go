package api

import (
	"encoding/json"
	"time"
)

// Version is the protocol version a client announces. 2: a session's
// files are sent when the daemon asks for them (FrameFilesWanted), not
// with the request.
const Version = 2

// Op names what a Request asks the daemon to do.
type Op string

// Ops understood by the daemon.
const (
	OpRun        Op = "run"          // start a session with a server
	OpStatus     Op = "status"       // daemon status
	OpServers    Op = "servers"      // list configured servers with their sandboxes
	OpServerSpec Op = "server.spec"  // the OCI spec a session of Server would get
	OpSecretSet  Op = "secret.set"   // store Secret under Name (root only)
	OpSecretRm   Op = "secret.rm"    // remove secret Name (root only)
	OpSecretList Op = "secret.list"  // names of the secrets (root only)
	OpTrace      Op = "trace"        // stream kernel events (FrameStdout, JSON lines) until closed
	OpGrant      Op = "grant"        // store a consent (Grant); reply data: the Record
	OpRevoke     Op = "revoke"       // revoke consent Name (ID) for Reason
	OpConsents   Op = "consents"     // list consents (Filter); reply data: []Record
	OpConsent    Op = "consent"      // one consent by Name (ID)
	OpSessions   Op = "sessions"     // live sessions; reply data: []SessionInfo
	OpAudit      Op = "audit"        // stream audit records (Audit) as JSON lines, FrameStdout
	OpServerAdd  Op = "server.add"   // store the caller's own server (Def)
	OpServerRm   Op = "server.rm"    // remove the caller's own server Name
	OpPins       Op = "pins"         // tool pins ([]PinInfo), of Server when set; with Name, that tool's diff
	OpPinApprove Op = "pin.approve"  // approve the changed definition of tool Name of Server
	OpPending    Op = "pending"      // requests waiting for the user's answer ([]PendingInfo)
	OpAnswer     Op = "answer"       // answer pending request Name with Answer (and For); reply data: the Record made, if any
	OpLogin      Op = "login"        // start the caller's sign-in to remote Server (for Agent) with Redirect; reply data: LoginStart
	OpLoginDone  Op = "login.finish" // finish sign-in State: AuthCode, or end it (AuthError, AuthRefused); reply data: SignIn
	OpLogout     Op = "logout"       // remove the caller's sign-in to Server (for Agent); reply data: SignIn removed
	OpJWKS       Op = "jwks"         // the public key of the daemon's actor tokens (JWKS)
	OpTokens     Op = "tokens"       // the caller's sign-ins ([]SignIn; every user's for root with All), never a token
	OpDigest     Op = "audit.digest" // the args_digest (or, with Name "prompt", prompt_digest) Value would get (root only; reply data: Digested)
)

// Request opens a connection.
type Request struct {
	Version int    `json:"version"`
	Op      Op     `json:"op"`
	Server  string `json:"server,omitempty"`
	Session string `json:"session,omitempty"`
	Name    string `json:"name,omitempty"`
	// Secret is the value OpSecretSet stores under Name; it is never
	// logged or recorded.
	Secret string `json:"secret,omitempty"`
	// Reason says why, for OpRevoke; it is recorded.
	Reason string `json:"reason,omitempty"`
	// Digest, for OpPinApprove, is the pending definition the caller
	// reviewed (at least its first 12 hex digits).
	Digest string `json:"digest,omitempty"`
	Grant  *Grant `json:"grant,omitempty"`
	// Answer, for OpAnswer: once, session, duration (For long) or deny.
	Answer Answer `json:"answer,omitempty"`
	For    string `json:"for,omitempty"`
	// PassStdio says the caller passes its stdin and stdout, and
	// optionally stderr (SCM_RIGHTS, in that order), for OpRun, once the
	// daemon asks for them (FrameFilesWanted, answered with FrameFiles):
	// the daemon then reads and writes the client's pipes itself
	// and the shim leaves the data path. The daemon checks them (pipes or
	// stream sockets, open the right way) and refuses anything else.
	PassStdio bool `json:"pass_stdio,omitempty"`
	// TakesFramed: the shim relays in frames when the reply says the
	// daemon did not take the files it passed (Reply.Stdio); an older
	// shim does not, and is refused instead.
	TakesFramed bool        `json:"takes_framed,omitempty"`
	Audit       *AuditQuery `json:"audit,omitempty"`
	Def         *ServerDef  `json:"def,omitempty"`
	// Value, for OpDigest, is the JSON text to digest, as a client sent
	// it (a string, so its bytes arrive as they are).
	Value string `json:"value,omitempty"`
	// Filters for OpConsents.
	User  string `json:"user,omitempty"`
	Agent string `json:"agent,omitempty"`
	All   bool   `json:"all,omitempty"`
	// Sign-in (OpLogin, OpLoginDone): the loopback redirect mcpcage login
	// listens on, and what the authorization server sent back to it.
	Redirect string `json:"redirect,omitempty"`
	State    string `json:"state,omitempty"`
	AuthCode string `json:"auth_code,omitempty"`
	// AuthIssuer is the iss parameter of the authorization server's
	// answer (RFC 9207), nil when the answer had none; AuthIssuerSent
	// says that the caller hands it on (an older mcpcage login does not).
	AuthIssuer     *string `json:"auth_issuer,omitempty"`
	AuthIssuerSent bool    `json:"auth_issuer_sent,omitempty"`
	// AuthError is an error answer's text (no AuthCode then), and
	// AuthRefused why mcpcage login refused the answer: either way the
	// sign-in ends, and mcpcaged records why.
	AuthError   string `json:"auth_error,omitempty"`
	AuthRefused string `json:"auth_refused,omitempty"`
}

// MaxIdentifier bounds a request's names (server, session, name, digest,
// user, agent): they are logged and quoted back in replies. The longest
// a name can rightly be is an agent's script:PATH with a path of
// PATH_MAX (4096) bytes.
const MaxIdentifier = 4096 + 64

// Oversized names a request's identifier longer than MaxIdentifier and
// its length ("" when none is).
func (r Request) Oversized() (field string, n int) {
	for _, f := range []struct {
		name, v string
	}{{"server", r.Server}, {"session", r.Session}, {"name", r.Name}, {"digest", r.Digest}, {"user", r.User}, {"agent", r.Agent}} {
		if len(f.v) > MaxIdentifier {
			return f.name, len(f.v)
		}
	}
	return "", 0
}

// Digest kinds, the Name of an OpDigest request.
const (
	DigestArguments = "arguments" // a tools/call's params.arguments: args_digest (the default)
	DigestPrompt    = "prompt"    // a server request's params: prompt_digest
)

// Digested is the data of an OpDigest reply.
type Digested struct {
	Field  string `json:"field"`  // the records' field: args_digest or prompt_digest
	Digest string `json:"digest"` // its value for the Value given
}

// JWKS is the data of an OpJWKS reply: the daemon's actor-token key
// set and the iss its tokens carry.
type JWKS struct {
	Issuer string          `json:"issuer"`
	Keys   json.RawMessage `json:"keys"`
}

// LoginStart is the data of an OpLogin reply: the URL the user opens.
type LoginStart struct {
	URL    string `json:"url"`
	State  string `json:"state"`
	Server string `json:"server"`
	// TakesEndings: mcpcaged takes every ending of the sign-in
	// (OpLoginDone with AuthError or AuthRefused), not only a code; an
	// older one does not say so, and mcpcage login then ends a sign-in
	// without a code on its own, as before.
	TakesEndings bool `json:"takes_endings,omitempty"`
}

// SignIn describes a user's sign-in to a remote server; it never holds
// a token.
type SignIn struct {
	ID          string    `json:"id"`
	User        string    `json:"user"`
	Server      string    `json:"server"`
	Agent       string    `json:"agent,omitempty"` // "": the user's own, for agents without scopes of their own
	Issuer      string    `json:"issuer"`
	Scopes      []string  `json:"scopes,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	Obtained    time.Time `json:"obtained"`
	Expiry      time.Time `json:"expiry,omitzero"`
	Refreshable bool      `json:"refreshable"`
}

// Grant asks for a new consent record.
type Grant struct {
	User      string   `json:"user,omitempty"` // default: the caller
	Agent     string   `json:"agent"`
	Server    string   `json:"server"`
	Tools     []string `json:"tools,omitempty"`
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	When      string   `json:"when,omitempty"`
	Expires   string   `json:"expires,omitempty"` // "8h" or an RFC 3339 time
	MaxCalls  int64    `json:"max_calls,omitempty"`
	// AnyScript confirms a grant to a bare interpreter or shell
	// (exe:/usr/bin/node), which covers every script it runs.
	AnyScript bool `json:"any_script,omitempty"`
	// Definition, when set, is the definition of the user's own server
	// the grant is for (a prefix of the digest `mcpcage servers --user`
	// shows, at least MinDefinitionPrefix characters): the grant is refused
	// if the server is defined otherwise when it is stored.
	Definition string `json:"definition,omitempty"`
}

// MinDefinitionPrefix is the shortest prefix of a definition's digest a
// grant may name.
const MinDefinitionPrefix = 12

// ServerDef is a user-scoped server definition as a user asks for it: the
// request of `mcpcage server add`, and what `mcpcage client setup` makes of
// a client's entry (clientsetup.Server is a ServerDef). The daemon checks
// it ("~" expanded, mounts opened as the user), stores its own form
// (userservers.Server, a separate on-disk contract) and runs a
// config.Server.
type ServerDef struct {
	Name    string            `json:"name"`
	Command []string          `json:"command"`
	URL     string            `json:"url,omitempty"`   // a remote server instead of a command
	Hosts   []string          `json:"hosts,omitempty"` // a remote server's other hosts (its sign-in)
	Image   string            `json:"image,omitempty"` // an OCI image (the daemon's [daemon] user_images allow it)
	Args    []string          `json:"args,omitempty"`  // with Image and no Command: its entrypoint's arguments
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Network string            `json:"network,omitempty"`
	Egress  []string          `json:"egress,omitempty"`
	Mounts  []MountDef        `json:"mounts,omitempty"`
}

// MountDef is one mount of a ServerDef.
type MountDef struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	Writable bool   `json:"writable,omitempty"`
}

// AuditQuery selects audit records; empty fields match everything.
type AuditQuery struct {
	Agent   string `json:"agent,omitempty"`
	User    string `json:"user,omitempty"`
	Server  string `json:"server,omitempty"`
	Session string `json:"session,omitempty"`
	Type    string `json:"type,omitempty"`  // a type or a prefix: "tool", "net"
	Since   string `json:"since,omitempty"` // RFC 3339
	Until   string `json:"until,omitempty"`
	Follow  bool   `json:"follow,omitempty"`
	// Call: only the tool.call record of this call id (mcpcage why).
	Call string `json:"call,omitempty"`
	// Run: only records of this agent run (the data-flow guard's
	// influence and flow.taint records; mcpcage why).
	Run string `json:"run,omitempty"`
}

// Answer is the user's answer to a consent question.
type Answer string

const (
	AnswerOnce     Answer = "once"     // this call only
	AnswerSession  Answer = "session"  // every call of this session
	AnswerDuration Answer = "duration" // every call for a while ([daemon] ask_duration, or For)
	AnswerDeny     Answer = "deny"     // refused; not asked again for ask_duration
)

// Valid reports whether a is one of the answers.
func (a Answer) Valid() bool {
	return a == AnswerOnce || a == AnswerSession || a == AnswerDuration || a == AnswerDeny
}

// PendingInfo is a request nobody answered: the agent was denied, and
// mcpcage approve or deny answers it for the agent's next attempt.
type PendingInfo struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	Agent     string `json:"agent"`
	Server    string `json:"server"`
	Kind      string `json:"kind"` // tool, resource, prompt
	Name      string `json:"name"`
	Arguments string `json:"arguments,omitempty"` // redacted, truncated
	Session   string `json:"session"`
	Why       string `json:"why"` // why the user was not asked in the client
	// Definition is that of the user's own server the asking session ran
	// (api.Consent.Definition), which an approval is bound to.
	Definition string    `json:"definition,omitempty"`
	Attempts   int       `json:"attempts"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	Expires    time.Time `json:"expires"`
}

// SessionInfo describes a live session.
type SessionInfo struct {
	ID            string `json:"id"`
	Server        string `json:"server"`
	Agent         string `json:"agent"`
	AgentExe      string `json:"agent_exe"`
	AgentInstance string `json:"agent_instance"`
	User          string `json:"user"`
	Started       string `json:"started"`
	Allowed       int64  `json:"calls_allowed"`
	Denied        int64  `json:"calls_denied"`
	ClientInfo    string `json:"client_claims,omitempty"`
	Era           string `json:"protocol_era,omitempty"`

	// AgentScript is the script an interpreter agent runs ("" for a
	// program; "any script: why" when it could not be identified).
	AgentScript string `json:"agent_script,omitempty"`
	// AgentBinding is "kernel", or why the agent's binding to the
	// program that started the shim is weaker.
	AgentBinding string `json:"agent_binding"`
	// Stdio says how the client's messages reach the daemon.
	Stdio StdioMode `json:"stdio"`
	// QuestionCode is shown in every consent question mcpcage asks in
	// this session: a question without it is not mcpcage's.
	QuestionCode string `json:"question_code"`
	// Taint lists the labels whose data reached the session's agent run
	// (every session of its client process), with the server each came
	// from ("confidential from crm-db"); empty without the data-flow
	// guard.
	Taint []string `json:"taint,omitempty"`
}

// StdioMode says how a session's client stream travels.
type StdioMode string

// Stdio modes.
const (
	StdioPassed StdioMode = "passed" // the shim handed over the client's pipes: the daemon reads and writes them itself
	StdioFramed StdioMode = "framed" // the shim relays stdin and stdout in frames (a terminal or a file)
)

// Code classifies a failed Reply.
type Code string

// Error codes in a Reply.
const (
	CodeUnknownServer Code = "unknown_server"
	CodeLaunchFailed  Code = "launch_failed"
	CodeBadRequest    Code = "bad_request"
	CodeShuttingDown  Code = "shutting_down"
	CodeInternal      Code = "internal"
	CodeDenied        Code = "denied"
	CodeNotFound      Code = "not_found"
	CodeBusy          Code = "busy" // the caller holds as many connections of a kind as one user may
)

// Reply answers a Request.
type Reply struct {
	OK      bool   `json:"ok"`
	Code    Code   `json:"code,omitempty"`
	Error   string `json:"error,omitempty"` // one line: what happened and what to do
	Session string `json:"session,omitempty"`
	// Stdio, in the reply that starts a session, says how the client's
	// stdio reaches the daemon: framed when the shim passed its files
	// but the daemon did not take them (it holds as many as it may), so
	// the shim relays them itself. Empty from an older daemon: as asked.
	Stdio StdioMode       `json:"stdio,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"` // op-specific result
}

// Exit ends a session.
type Exit struct {
	// Code is the server's exit status, or -1 when it has none (the
	// session ended for another reason).
	Code int `json:"code"`
	// Reason says why the session ended.
	Reason ExitReason `json:"reason"`
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
	// Warm is the pool of prepared sandboxes.
	Warm *WarmStatus `json:"warm,omitempty"`
	// Audit log health.
	AuditLog     string `json:"audit_log"`
	AuditRecords int64  `json:"audit_records"` // written since start
	AuditError   string `json:"audit_error,omitempty"`
	Metrics      string `json:"metrics_address,omitempty"`
	// AgentIdentity says how the agent behind a shim is bound to the
	// program that started it, or why that binding is weaker.
	AgentIdentity string `json:"agent_identity"`
	// PtraceScope is kernel.yama.ptrace_scope and what it means: a
	// process that can ptrace the agent can act as it.
	PtraceScope string `json:"ptrace_scope"`
}

// WarmStatus reports the prepared (warm) sandboxes.
type WarmStatus struct {
	Disabled  string      `json:"disabled,omitempty"` // why there is no pool; "" when there is
	Max       int         `json:"max"`                // warm_sandboxes
	MemoryMax int64       `json:"memory_max"`         // warm_memory, bytes
	Idle      string      `json:"idle"`               // warm_idle
	Memory    int64       `json:"memory"`             // resident memory of their processes, bytes
	Building  int         `json:"building"`           // being prepared now
	Entries   []WarmEntry `json:"entries,omitempty"`  // the caller's own (every one for root and the admin group)
	Others    int         `json:"others,omitempty"`   // other users' ready ones, not listed
}

// WarmEntry is one prepared sandbox.
type WarmEntry struct {
	Server    string `json:"server"`
	User      string `json:"user"`
	Container string `json:"container"`
	Age       string `json:"age"`
	Memory    int64  `json:"memory"` // its waiting process and containerd shim, bytes
}

// KernelStatus reports the eBPF maps and event losses.
type KernelStatus struct {
	Sessions      int    `json:"sessions"`       // registered session cgroups
	EgressEntries int    `json:"egress_entries"` // LPM entries, all sessions
	DenyEntries   int    `json:"deny_entries"`   // denied path components, all sessions
	LostRingbuf   uint64 `json:"lost_ringbuf"`   // events lost to a full ring buffer
	LostThrottled uint64 `json:"lost_throttled"` // events over a session's rate
	CgroupParent  string `json:"cgroup_parent"`
	// Observing: the syscall tracepoints are attached (while a session
	// is registered, and for ObserverLinger after the last one ends and
	// after the daemon starts).
	Observing bool `json:"observing"`
	// ObserverLinger is the daemon's observer_linger ("30s"; "0s":
	// detached at once).
	ObserverLinger string `json:"observer_linger,omitempty"`
}

// ServerInfo is one element of an OpServers reply.
type ServerInfo struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Image   string   `json:"image,omitempty"`
	Args    []string `json:"args,omitempty"` // an image's entrypoint's arguments
	URL     string   `json:"url,omitempty"`  // a remote server: no sandbox
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
	Env      []string `json:"env,omitempty"`   // KEY=value, secrets as secret:NAME
	Owner    string   `json:"owner,omitempty"` // set for user-scoped servers
	// Definition identifies a user-scoped server's definition as stored
	// (the digest consents for it are bound to: api.Consent.Definition).
	Definition string `json:"definition,omitempty"`
}

// KernelEvent is one kernel event attributed to its session, as
// `mcpcage trace` streams it (JSON lines).
type KernelEvent struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Session string    `json:"session"`
	Server  string    `json:"server"`
	User    uint32    `json:"user"`
	Pid     uint32    `json:"pid"`
	Comm    string    `json:"comm"`
	Path    string    `json:"path,omitempty"`
	Hint    string    `json:"hint,omitempty"`
	Flags   uint32    `json:"flags,omitempty"`
	// Repeats (file.open): opens of the same file (the same path, flags
	// and mode) by the same process, each within 1 s of a recorded one
	// and with no tool call started or ended since, folded since the
	// file's previous file.open record. Deny checks run on every one.
	Repeats  uint32   `json:"repeats,omitempty"`
	Result   *int32   `json:"result,omitempty"`  // fd or -errno (file.*); 0 or -errno (net.connect, see Outcome)
	Error    string   `json:"error,omitempty"`   // the errno's name for a negative Result
	To       string   `json:"to,omitempty"`      // file.rename: the new name
	Outcome  string   `json:"outcome,omitempty"` // net.connect: connect, handshake, abandoned or no_result
	Argv     []string `json:"argv,omitempty"`
	Addr     string   `json:"addr,omitempty"`
	Proto    string   `json:"proto,omitempty"`
	Rule     string   `json:"rule,omitempty"`
	Action   string   `json:"action,omitempty"`
	InFlight []string `json:"tool_calls,omitempty"` // ids of the tools/call requests being served
	// Missed, on a TraceMissed line, counts the events this reader did
	// not get (it read too slowly) before this line's Time.
	Missed uint64 `json:"missed,omitempty"`
}

// TraceMissed is the type of the trace line that precedes the first event
// a slow reader gets after missing some.
const TraceMissed = "trace.missed"

// PinKind says what a pin is of.
type PinKind string

// Kinds of pins.
const (
	PinKindTool         PinKind = "tool"         // a tool's definition
	PinKindInstructions PinKind = "instructions" // the server's instructions
	PinKindResource     PinKind = "resource"     // what resources/read gives for a UI resource (ui://)
)

// Noun is how a pin of the kind is named in a sentence.
func (k PinKind) Noun() string {
	switch k {
	case PinKindInstructions:
		return "instructions"
	case PinKindResource:
		return "UI resource"
	}
	return "tool"
}

// PinInfo is one pin: of a tool, the server's instructions or a UI
// resource (see package daemon/pins).
type PinInfo struct {
	Server      string    `json:"server"`
	Owner       string    `json:"owner,omitempty"` // a user's own server
	Tool        string    `json:"tool"`            // the pinned name: a tool's, "(instructions)", or a UI resource's URI
	Kind        PinKind   `json:"kind"`
	Digest      string    `json:"digest"`
	ApprovedAt  time.Time `json:"approved_at"`
	ApprovedBy  string    `json:"approved_by"`
	Quarantined bool      `json:"quarantined"`
	Pending     string    `json:"pending_digest,omitempty"`
	PendingAt   time.Time `json:"pending_at,omitzero"`
	// Diff (OpPins with Name): the approved definition against the
	// pending one, line by line ("-" approved, "+" pending).
	Diff string `json:"diff,omitempty"`
}
