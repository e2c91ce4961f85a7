// Package consent stores and evaluates delegations: what a user allowed an
// agent to do with a server. A record names the user, the agent, the
// server, glob patterns of the tools (and resources, prompts) it covers,
// and optionally a condition, an expiry and a call budget. Records are
// kept in SQLite under the daemon's state dir (versioned migrations) and
// are never deleted: revocation marks them, so the audit can always name
// the record behind a past decision.
//
// Patterns are shell globs matched against the whole name, in the syntax
// of path.Match: '*' any run of characters, '?' one character, "[a-z]" and
// "[^a-z]" classes, '\' escapes the next character. Tool and prompt
// patterns are read by path.Match itself: "list_*", "get_issue", "*".
// Resource patterns match URIs, and there '*' also crosses '/' (so "**"
// means the same): "file:///work/*" covers "file:///work/a/b.txt", "*"
// covers every resource, "repo://acme/*/README.md" covers the README of
// every acme repository and of anything deeper. A pattern with "://" is
// matched part by part (matchURI): no wildcard reaches from the path
// into the host or slips user info in front of it. A URI that is not in
// normal form (package uri: a dot segment, a backslash, ...) matches no
// pattern: a server's SDK may serve it as another URI. A grant is checked when
// made: a malformed pattern is refused. A tool name may hold '/'
// ("repo/delete"): a grant's "*" does not cover it (a grant covers no
// more than it reads), while the administrator's tools_allow and
// tools_deny, matched with MatchText, read '*' across '/' as resource
// patterns do (a ceiling is no narrower than it reads).
//
// Conditions (--when) are CEL expressions that must evaluate to a bool,
// over these variables:
//
//	args    map(string, dyn)  the tools/call arguments
//	tool    string            the tool's name
//	server  string
//	agent   string
//	user    string
//	now     timestamp
//
// e.g. args.repo.startsWith("acme/") && size(args.body) < 10000, and
// pathUnder(args.path, "/work") for a path (see pathunder.go: a prefix
// check lets "/work/../etc" through). They are
// type-checked when granted and evaluated per call with a cost limit; an
// evaluation error denies the call. args is dyn: == and != compare values
// of different types without error (unequal), while servers may coerce
// them ("true" and 1 are true to pydantic and mcp-go), so
// args.recursive != true holds for "recursive":"true". Conditions should
// check what is allowed (args.recursive == false, or
// type(args.recursive) == bool && !args.recursive), never exclude what is
// not; orderings and functions on another type are errors, and deny.
package consent
