// Package config loads and validates mcpcaged's TOML configuration.
//
// The file is optional: with none, the daemon runs on [Default]. Every key
// is checked: an unknown key, a value of the wrong type or an invalid value
// is an error that names the key and its line, so a typo never silently
// weakens the sandbox.
//
// Keys (defaults in brackets):
//
//	[daemon]
//	socket               shim and API socket   [/run/mcpcage/mcpcage.sock]
//	state_dir            daemon state          [/var/lib/mcpcage]
//	containerd_address   containerd socket     [/run/containerd/containerd.sock]
//	containerd_namespace containerd namespace  [mcpcage]
//	bpf_pin_dir          mcpcage's own directory below /sys/fs/bpf: the
//	                     exec stamper's pins (exec-v5-HASH) and each
//	                     containerd namespace's cage; pins of other
//	                     stamper versions in it are removed, so two
//	                     daemons of different versions on one host (test
//	                     runs) each need their own; read at start
//	                     [/sys/fs/bpf/mcpcage]
//	max_message_bytes    largest JSON-RPC message, bytes or "64MiB" [64MiB]
//	stop_timeout         how long a server gets after stdin closes, and
//	                     again after SIGTERM, before SIGKILL ["2s"]
//	log_level            debug | info | warn | error [info]
//	landlock             auto | off | require: Landlock rules applied inside
//	                     each sandbox by mcpcage-init [auto]
//	init_path            mcpcage-init binary [next to mcpcaged]
//	shim_paths           the mcpcage files a session's shim may run (those
//	                     very files, by device and inode); any other
//	                     process that connects as a shim is refused
//	                     [mcpcage next to mcpcaged, else /usr/bin/mcpcage]
//	allow_shim_launchers true: a shim that another program exec'd in the
//	                     agent's child (a shell, env) runs with an
//	                     unverified binding instead of being refused; that
//	                     program could have given it other input than the
//	                     agent's [false]
//	default_decision     "deny": tools/call and the other requests covered
//	                     by consents need one; "ask": a request no consent
//	                     covers is put to the user (in the client when it
//	                     can be asked, else kept for mcpcage approve);
//	                     "allow": observe mode, every request passes and
//	                     would-be denials are logged [deny]
//	ask_timeout          how long a question in the client waits for an
//	                     answer before the request is denied and kept
//	                     pending [2m]
//	ask_duration         what "allow for a while" means, and how long a
//	                     "deny" answer keeps mcpcage from asking again [8h]
//	ask_per_minute       questions one session may ask per minute; more
//	                     are denied and kept pending [5]
//	pending_ttl          how long an unanswered request stays pending
//	                     for mcpcage approve [1h]
//	admin_group          a group whose members manage everyone's consents,
//	                     as root does [none]
//	audit_log            audit log file [/var/log/mcpcage/audit.jsonl]
//	audit_sync           "always": a call is forwarded once its record is
//	                     fdatasynced (group commit; later calls are read
//	                     and decided meanwhile); "batch": sync every
//	                     audit_sync_interval [always]
//	audit_sync_interval  [1s]
//	audit_max_size       rotate at this size [64MiB]
//	audit_keep           rotated files kept [10]
//	audit_arguments      digest | redacted | full: how tool arguments are
//	                     recorded [redacted]
//	audit_journal        copy each record to the systemd journal [false]
//	metrics_address      Prometheus listener: host:port, a unix socket
//	                     path, or "" to disable [127.0.0.1:9464]
//	require_ebpf         refuse to launch servers whose rules need eBPF
//	                     (network = "host", deny_paths) when the kernel
//	                     does not allow it [true]
//	dns_servers          "ip:port" resolvers for egress host names, asked
//	                     in order; each address a name resolves to is
//	                     allowed until its record's TTL runs out
//	                     [the nameservers of /etc/resolv.conf]
//	private_domains      domains whose names may resolve to any address for
//	                     egress, e.g. ["corp.example"]; other names' DNS
//	                     answers are allowed only where "public" reaches
//	                     (not loopback, the LAN or the host's own
//	                     addresses: DNS rebinding) [none]
//	warm_sandboxes       prepared sandboxes kept ready (0: off): after a
//	                     session of a server for a user ends, the next one
//	                     is built (container, task, mounts, cgroup, seccomp)
//	                     but not started; the next session of that server
//	                     for that user starts it if it still matches what a
//	                     new build would be (config, secrets, mounts,
//	                     image), and builds a new one otherwise. Needs
//	                     mcpcage-init [4]
//	warm_idle            a prepared sandbox unused this long is removed [10m]
//	warm_memory          the memory their processes (the waiting process
//	                     and its containerd shim) may hold together; the
//	                     oldest go first [128MiB]
//	observer_linger      how long the eBPF observation programs (syscall
//	                     tracepoints, which every process on the host
//	                     passes while attached) stay attached after the
//	                     last session ends and after start, so that a
//	                     session soon after neither waits for their
//	                     detach (about 2 s) nor their attach; "0s"
//	                     detaches at once; at most 10m; a reload
//	                     applies it at once ["30s"]
//
//	[servers.NAME]      NAME: letters, digits, '-', '_', '.'
//	command   argv of the server; the first element is looked up in PATH
//	          inside the sandbox (required, unless image is set)
//	env       extra environment, { KEY = "value" }
//	workdir   working directory inside the sandbox ["/"; with image, the
//	          image's WorkingDir]
//	image     OCI image in containerd's content store (pulled when absent
//	          and the network allows); absent: the host's root file
//	          system, read-only. Without command the image's entrypoint
//	          and CMD run, as `docker run IMAGE` would (the image's User
//	          is not: the server runs as the delegating user)
//	args      with image and no command: the entrypoint's arguments, in
//	          place of the image's CMD (`docker run IMAGE ARGS...`)
//
// Per-server sandbox keys (defaults in brackets):
//
//	user            who the server runs as: "UID:GID", a user name, or
//	                "root" (logged as a warning) [the delegating user; nobody
//	                when the delegator is root]
//	mounts          [{ source = "~/projects/app", target = "/work",
//	                readonly = true }]; "~" is the delegating user's home;
//	                read-only unless readonly = false; a missing source is a
//	                launch error
//	memory          memory limit, bytes or "512MiB" [1GiB]
//	pids            process/thread limit [256]
//	cpus            CPU quota in cores, e.g. 0.5 [1]; on average: a server
//	                may spend up to one period's quota (100 ms × cpus) of
//	                CPU time it left unused above it (the CFS burst)
//	seccomp         "default" (mcpcage's profile), "unconfined", or an
//	                absolute path to an OCI seccomp profile (JSON), whose
//	                architecture list is replaced by the native one (32-bit
//	                calls escape the eBPF layer) [default]
//	network         "none" (own network namespace, loopback only) or "host"
//	                [none]
//	egress          with network = "host": the destinations it may reach,
//	                ["10.0.0.0/8:443", "api.github.com:443", "127.0.0.1:*",
//	                "[::1]:8080"] (grammar: package egress); enforced in the
//	                kernel per session; DNS to a loopback resolver is always
//	                allowed; empty: nothing else
//	listen          with network = "host": the host addresses it may bind
//	                and accept connections on, as IP literal and port
//	                ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080"]; the
//	                address is the one the server binds (0.0.0.0:8080 is
//	                not 127.0.0.1:8080). Any other bind fails with EPERM and
//	                is recorded as net.bind_denied; a TCP listener on an
//	                ephemeral port (bind to port 0, or listen without bind)
//	                gets no connection (its packets are dropped, recorded as
//	                net.listen_denied). Binds to port 0 for outgoing traffic
//	                (UDP clients) work. Unix sockets are not covered. [none]
//	deny_paths      path patterns whose opening kills the process, matched
//	                in the kernel on the opened file's real path:
//	                "**/NAME/**" or "**/NAME" [**/.ssh/**, **/.aws/**,
//	                **/.gnupg/**]; deny_paths = [] turns it off
//	readonly_paths  paths inside the sandbox made read-only
//	hidden_paths    paths inside the sandbox masked (empty, unreadable)
//	env values "secret:NAME" are replaced at launch by the secret NAME
//	                (`mcpcage secret set NAME`); the value is never logged
//
// Policy keys per server (the admin ceiling no user consent can exceed):
//
//	tools_allow       patterns of the only tools that may ever be used [all]
//	tools_deny        patterns of tools never allowed (wins over allow).
//	                  Both are globs ('*', '?', "[a-z]", '\' escapes) read
//	                  as text: '*' crosses '/', so "*delete*" forbids a
//	                  tool named "repo/delete" too (package consent,
//	                  MatchText)
//	default_decision  overrides [daemon] default_decision
//	allow_sampling    the server may ask the client's model to generate
//	                  (sampling/createMessage): influence on the agent,
//	                  recorded with its prompt (redacted, capped) [false]
//	allow_elicitation the server may ask the user a question through the
//	                  client (elicitation/create) [true]
//	allow_roots       the server may ask which directories the client
//	                  shares (roots/list) [true]
//	                  These govern the requests a server sends toward the
//	                  client (initialize era) and the input requests of a
//	                  result (2026-07-28 era); a refused one is answered
//	                  with an error (the whole result, in that era) and
//	                  recorded as server.request.
//	pin_policy        "accept-new": a tool is pinned (its definition's
//	                  digest stored) when first seen; "quarantine": so
//	                  are the tools of the first list, but a tool that
//	                  appears later waits for `mcpcage pins approve`;
//	                  "off": no pinning. A pinned tool whose definition
//	                  changes is hidden and its calls refused until
//	                  approved, under both policies [accept-new]
//	labels            free-form labels of the data-flow guard, e.g.
//	                  ["confidential"] or ["external"]: [[flow]] rules
//	                  name them [none]
//	on_suspect        what happens when the server shows the model text
//	                  that looks like a prompt injection (package
//	                  daemon/inject): "log" records influence.suspect;
//	                  "quarantine-tool" also keeps a tool whose definition
//	                  or result is suspect from the rest of the session
//	                  (hidden, its calls refused); the next session checks
//	                  it again;
//	                  "end-session" also ends the session; under both the
//	                  agent is not shown what was suspect (the tool is left
//	                  out of the list, a result is replaced by an error)
//	                  [log]
//
// A remote server has url instead of command: mcpcage speaks streamable
// HTTP to it (package daemon/remote) and signs each user in with OAuth
// (mcpcage login NAME; package daemon/oauth). Consent, tool filtering,
// pinning, audit, metrics and the data-flow guard apply as for a local
// server; the sandbox keys (command, image, env, mounts, network...) do
// not apply and are refused.
//
// Users add image servers of their own (mcpcage server add NAME --image
// IMAGE, and mcpcage client setup for `docker run` entries); [daemon]
// user_images lists the images they may run, as patterns of normalized
// references ("ghcr.io/github/*": "*" stops at "/"; "*" alone: any) [[]:
// none, since the daemon pulls them as root into containerd's store].
//
// Users add remote servers of their own (mcpcage server add NAME --url);
// [daemon] user_remote_hosts bounds the hosts those may name, as
// patterns of "host" or "host:port" (["*"]: any; []: none) [["*"]].
//
//	url               the server's MCP endpoint: https, or http to a
//	                  loopback address only
//	hosts             hosts the daemon may contact for the server besides
//	                  the url's own (its authorization server when it lives
//	                  elsewhere): "name" (any port) or "name:port"; every
//	                  other host is refused, redirects included [none]
//	ca_file           PEM bundle trusted besides the system's roots (TLS
//	                  verification is always on) [none]
//	timeout           bound on connecting and on an answer's headers; an
//	                  answer may then stream for as long as the call takes
//	                  [60s]
//	scopes            OAuth scopes asked for at sign-in [what the server's
//	                  metadata advertises]
//	client_id         a client registered with the authorization server
//	                  beforehand [none: mcpcage registers itself, RFC 7591]
//	client_secret     "secret:NAME" of that client's secret, when it is
//	                  confidential [none]
//	local_users       who runs the programs the server's connections
//	                  reach when they are this host's (loopback, an
//	                  address of the host; its sign-in server too): user
//	                  names or uids, "*" for anyone; mcpcaged connects only
//	                  when the listening socket is one of theirs, so a user
//	                  who takes the port while the service is down receives
//	                  no user's token or call. A listener outside the
//	                  host's network namespace (a container the port is
//	                  forwarded to) is not checked [["root"]]
//
//	[[flow]]          a rule of the data-flow guard (several allowed)
//	from      a label: the run is tainted once a result (tool result,
//	          resource contents, prompt) of a server with it reached the
//	          agent run (every session of one client process)
//	to        a label: the rule decides the requests mcpcage decides
//	          (tools/call, prompts/get, resources/read and subscribe,
//	          completion/complete) to servers with it, in a tainted run
//	action    "deny" refuses the call; "ask" asks the user about that
//	          one call in the client (initialize era, with elicitation),
//	          else denies it; "redact" replaces what the detectors find
//	          in the arguments, and strings seen in the tainting results,
//	          with "[redacted:KIND]" and forwards the call (what is found
//	          outside the arguments' values cannot be redacted: the request
//	          is refused); "log" forwards
//	          it and records that the rule applied. With several rules
//	          the strongest wins (deny > ask > redact > log)
//	when      "tainted": every such call; "carries": only calls whose
//	          arguments carry a detector finding or a string seen in a
//	          result of a "from" server ["tainted"]
//
//	[[detector]]      a content detector of the administrator's own,
//	name      lower-case name; findings are reported as "custom:NAME"
//	pattern   an RE2 regular expression (not one matching "")
//
// The guard (scanning results and arguments, the influence trail) runs
// only when a [[flow]] rule, a [[detector]], a server's labels or
// on_suspect is configured; built-in detectors: cloud keys, private
// keys, tokens, payment cards (Luhn), US SSNs, IBANs, e-mail addresses.
//
//	[agents.NAME]     how a client process is recognised, and its ceiling
//	exe       resolved executable paths (required)
//	sha256    allowed SHA-256 digests of the executable [any]
//	uids      uids the agent may run as [any]
//	servers   the only servers this agent may use [all]
//	script    for an interpreter or shell in exe (node, python3, bash...):
//	          the resolved paths of the scripts that make this agent [any
//	          script: avoid, every script the interpreter runs would match]
//	script_sha256  allowed SHA-256 digests of the script [any]
//	scopes    remote server name -> the OAuth scopes this agent may hold
//	          there, e.g. { tracker = ["read"] }: the agent's sessions use
//	          a token narrowed to them (token exchange, RFC 8693, from the
//	          user's sign-in, with an act claim naming the agent), or the
//	          agent's own sign-in (mcpcage login NAME --agent AGENT);
//	          never the user's broader token [none: the user's sign-in]
//
// An agent matching no entry is named "script:" followed by its script's
// path when it is an interpreter whose script was identified, else "exe:"
// followed by its executable's path ("exe:/usr/bin/node" means any script
// node runs, and `mcpcage grant` refuses it without --any-script).
package config
