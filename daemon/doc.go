// Package daemon is mcpcaged: it accepts connections on its unix socket,
// learns who is calling from the socket's peer credentials, and for each
// `mcpcage run NAME` launches the server in a sandbox and relays its stdio
// through the JSON-RPC interceptor until the session ends.
//
// A session ends when the client closes its input (the server is stopped
// by the stdio ladder: close stdin, wait, SIGTERM, wait, SIGKILL), when the
// shim's connection drops (same ladder), when the server exits (its status
// is passed to the shim), when a message exceeds max_message_bytes (the
// server is killed), or when the daemon shuts down. In every case the
// container and its task are removed. At start-up the daemon removes
// whatever a crashed predecessor left in its containerd namespace.
package daemon
