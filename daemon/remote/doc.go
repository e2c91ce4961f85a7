// Package remote bridges a session to an MCP server reached over
// streamable HTTP: the relay writes newline-delimited JSON-RPC messages
// to a [Conn] as it would to a server's stdin and reads the server's
// messages from it as from a stdout. Each client message becomes a POST
// (its body byte for byte), JSON and SSE answers become lines, the
// standalone GET stream carries the server's own messages, a dropped SSE
// stream resumes with Last-Event-ID, Mcp-Session-Id is kept and the
// session is ended with DELETE. Both protocol eras are spoken: the
// initialize era's session and protocol-version header, and the
// 2026-07-28 era's per-request headers (MCP-Protocol-Version, Mcp-Method,
// Mcp-Name) taken from each request.
//
// What the bridge cannot deliver is answered to the client as a JSON-RPC
// error of its own, one line that says what happened and what to do
// (sign in, a TLS or DNS failure, a refused scope, an upstream 5xx).
// Requests are retried only where retrying cannot repeat an effect.
package remote
