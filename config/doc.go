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
//	max_message_bytes    largest JSON-RPC message, bytes or "64MiB" [64MiB]
//	stop_timeout         how long a server gets after stdin closes, and
//	                     again after SIGTERM, before SIGKILL ["2s"]
//	log_level            debug | info | warn | error [info]
//
//	[servers.NAME]      NAME: letters, digits, '-', '_', '.'
//	command   argv of the server; the first element is looked up in PATH
//	          inside the sandbox (required)
//	env       extra environment, { KEY = "value" }
//	workdir   working directory inside the sandbox ["/"]
//	image     OCI image in containerd's content store; absent: the host's
//	          root filesystem, read-only
//
// Later sections (agents, policy) and per-server sandbox keys extend these
// structs; unknown keys stay errors until they exist.
package config
