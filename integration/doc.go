// Package integration holds mcpcage's end-to-end tests: a real containerd
// (started privately by the tests), the real mcpcaged and the real shim,
// driven by a real MCP client (mcp-go) against real MCP servers (the
// project's test server and the official reference servers from npm).
//
// They need root, containerd, runc and Node.js; `make test` installs what
// is missing. Without them the tests skip, except with CI=true, where they
// fail.
//
// A daemon is ready when its socket answers a status request; its log is
// for diagnostics. Tests wait with testenv.WaitFor alone. The run ends by
// checking that nothing of it remains on the machine (processes,
// containers and tasks, mounts, cgroups, pinned links) after removing
// what killed daemons left: anything else fails the run.
package integration
