// Package oauth signs a delegating user in to a remote MCP server the way
// MCP's authorization specification describes, and keeps the tokens:
// protected-resource metadata found from the server's 401 (RFC 9728),
// authorization-server metadata (RFC 8414, OpenID discovery as fallback),
// dynamic client registration (RFC 7591) unless a client id is
// configured, the authorization code grant with PKCE S256 and a loopback
// redirect (RFC 8252) that `mcpcage login` listens on, resource
// indicators (RFC 8707) on every token request, the issuer of every
// answer, code or error, checked against the server asked (RFC 9207,
// against mix-up),
// and refresh ahead of expiry. golang.org/x/oauth2 builds the authorization URL and PKCE and
// exchanges the code; the refresh request is a plain form POST so it can
// carry the resource indicator.
//
// Grants are kept per (user, server, agent) in a root-only store under
// the daemon's state dir; tokens never leave the daemon: not to the
// client, the CLI, logs, audit records or process arguments.
package oauth
