package api

// RecordType is the "type" of an audit record: what happened. The daemon
// writes each type from one constructor; `mcpcage audit` filters and
// prints by it.
type RecordType string

// Audit record types. Kernel events (file.*, process.*, net.*) are named
// by the eBPF layer's event kinds and share these prefixes.
const (
	RecordSessionStart   RecordType = "session.start"   // a sandboxed server started for an agent and user
	RecordSessionEnd     RecordType = "session.end"     // the session ended: why, exit status, counts
	RecordSessionRefused RecordType = "session.refused" // the shim's parent failed the identity check
	RecordSessionClaims  RecordType = "session.claims"  // what the client says it is (unverified)

	RecordSignIn     RecordType = "signin"      // a user signed in to a remote server (mcpcage login): issuer, scopes, subject; never a token
	RecordSignOut    RecordType = "signout"     // a user's sign-in to a remote server was removed (mcpcage logout)
	RecordSignInFail RecordType = "signin.fail" // a sign-in failed: why

	RecordToolCall      RecordType = "tool.call"      // a tools/call and its decision
	RecordToolResult    RecordType = "tool.result"    // the result of a forwarded tools/call
	RecordToolCancelled RecordType = "tool.cancelled" // the client cancelled a forwarded tools/call
	RecordToolChanged   RecordType = "tool.changed"   // a server changed a tool's definition during the session
	// RecordToolChangedOverflow: more held-back definitions than a
	// session records one by one; counts by pin.
	RecordToolChangedOverflow RecordType = "tool.changed_overflow"

	RecordRequest       RecordType = "request"        // a decided resources/read or prompts/get that was forwarded
	RecordRequestDenied RecordType = "request.denied" // a decided resources/read or prompts/get that was denied

	RecordToolsList     RecordType = "tools.list"     // what a tools/list result showed and hid
	RecordResourcesList RecordType = "resources.list" // what a resources/list result showed and hid
	RecordPromptsList   RecordType = "prompts.list"   // what a prompts/list result showed and hid

	RecordMessageRefused RecordType = "message.refused" // a message no decision could be made on

	// RecordFollowMissed is never in the log: `mcpcage audit --follow`
	// gets it where it missed lines (it read more slowly than the log was
	// written), with how many.
	RecordFollowMissed RecordType = "audit.follow_missed"

	RecordServerRequest RecordType = "server.request" // a request the server made of the client (sampling, elicitation, roots) and its decision

	RecordConsentGrant  RecordType = "consent.grant"  // a consent record was stored
	RecordConsentRevoke RecordType = "consent.revoke" // a consent record was revoked
	RecordConsentPrompt RecordType = "consent.prompt" // a request no consent covered was put to the user, and the answer
	RecordConsentBind   RecordType = "consent.bind"   // consents stored by a release before consents were bound to a server's definition were bound to one

	RecordInfluence        RecordType = "influence"         // something a server showed the agent (result, resource, prompt, tool list): digest, size, labels, findings
	RecordInfluenceSuspect RecordType = "influence.suspect" // text a server showed the agent looks like a prompt injection: the heuristic, the span, what was done
	RecordFlowTaint        RecordType = "flow.taint"        // an agent run received a label's data for the first time

	RecordSandboxDenied         RecordType = "sandbox.denied"          // the seccomp filter refused a system call
	RecordSandboxDeniedOverflow RecordType = "sandbox.denied_overflow" // more refused calls than are recorded one by one
	RecordKernelDeniedOverflow  RecordType = "kernel.denied_overflow"  // more refused connects, binds or opens than are recorded one by one: counts by what was refused
	RecordSandboxMaskLost       RecordType = "sandbox.mask_lost"       // a path hidden from the sandbox became visible (the host replaced or made it): the session was ended
)

// ExitReason says why a session ended (Exit.Reason, and the reason of its
// session.end record).
type ExitReason string

// Session end reasons.
const (
	ExitServerExited   ExitReason = "server_exited"            // the server closed its output or exited
	ExitClientClosed   ExitReason = "client_closed"            // the client closed its input
	ExitClientTooLarge ExitReason = "client_message_too_large" // the client sent a message over max_message_bytes
	ExitServerTooLarge ExitReason = "server_message_too_large" // the server sent a message over max_message_bytes
	ExitClientGone     ExitReason = "client_gone"              // the shim's connection dropped
	ExitDaemonShutdown ExitReason = "daemon_shutdown"          // mcpcaged is stopping
	ExitFileDenied     ExitReason = "file_denied"              // the kernel killed the server for a deny_paths hit
	ExitMaskLost       ExitReason = "mask_lost"                // a hidden path became visible in the sandbox: the server was killed
	ExitMemoryLimit    ExitReason = "memory_limit"             // the server exceeded its memory limit
	ExitContainerdLost ExitReason = "containerd_lost"          // containerd stopped during the session: the server was killed
	ExitSuspect        ExitReason = "suspect_influence"        // the server showed the agent a suspect influence (on_suspect = "end-session")
	ExitClientStuck    ExitReason = "client_stuck"             // the relay still waited on the client's files after the server exited: the session ended without them
	ExitInternal       ExitReason = "internal_error"           // mcpcaged hit a bug of its own in this session (a panic, in its log): the session ended, the daemon went on
)
