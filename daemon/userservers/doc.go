// Package userservers keeps server definitions that users add for
// themselves (mcpcage server add, mcpcage client setup): one JSON file per
// uid in a root-only directory. A user's servers are visible to and usable
// by that user only; they always run as that user, on mcpcage's default
// sandbox rules.
//
// # On-disk format
//
// The file is the store's own format, not a dump of config.Server, so
// that a change to the daemon's definition can never change what is on
// disk, or let a stored file set a key a user may not set. Version 2:
//
//	{
//	  "version": 2,
//	  "servers": {
//	    "NAME": {
//	      "command": ["/path/to/server", "ARG"],   // or image
//	      "image": "ghcr.io/owner/server:latest",  // normalized reference
//	      "args": ["stdio"],                       // image's entrypoint's, no command
//	      "env": {"KEY": "value or secret:NAME"},
//	      "workdir": "/absolute/path",
//	      "network": "none" | "host",
//	      "egress": ["HOST:PORT", ...],
//	      "mounts": [{"source": "/host/path", "target": "/path", "writable": true}]
//	    }
//	  }
//	}
//
// Those are exactly the keys a user may set ([Server]); everything else
// (memory, pids, seccomp, user...) comes from mcpcage's defaults when the
// definition is loaded, and [Server.Config] validates it again on every
// load. Mount sources are stored as checked when the server was added:
// absolute, "~" already expanded.
//
// Version 1 files (no "version" member: an object of config.Server values
// as encoding/json wrote them, defaults filled) still load: only the keys
// a user could set are read from them. The next change rewrites the file
// as version 2.
//
// # Limits
//
// A user may store at most [MaxServersPerUser] servers, each at most
// [MaxServerBytes] as JSON and with at most [MaxMounts] mounts; an add
// past any of them is refused ([ErrLimit]), replacing a stored server is
// not refused for the count. A stored definition with more mounts (from
// before the bound) no longer validates, so it never runs. Each user's file has its own lock, so
// one user's adds never hold up another user's session starts.
//
// The stored form is separate from api.ServerDef, the request of `mcpcage
// server add`, although the keys are the same today: the request is what a
// user asks (unchecked, "~" unexpanded, free to grow with the CLI), the
// file is what the daemon accepted and must read back for as long as it is
// kept. The daemon converts one to the other explicitly (daemon's
// userServer).
package userservers
