// Package consent stores and evaluates delegations: what a user allowed an
// agent to do with a server. A record names the user, the agent, the
// server, glob patterns of the tools (and resources, prompts) it covers,
// and optionally a condition, an expiry and a call budget. Records are
// kept in SQLite under the daemon's state dir (versioned migrations) and
// are never deleted: revocation marks them, so the audit can always name
// the record behind a past decision.
//
// Patterns are shell globs as path.Match reads them, matched against the
// whole name: "list_*", "get_issue", "*". Resource patterns match URIs
// ("file:///work/*"); note that '*' does not cross '/'.
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
// e.g. args.repo.startsWith("acme/") && size(args.body) < 10000. They are
// type-checked when granted and evaluated per call with a cost limit; an
// evaluation error denies the call.
package consent
