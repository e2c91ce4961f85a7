package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/identity"
)

func grantCommand(socket *string, stdout io.Writer) *cobra.Command {
	var g api.Grant
	cmd := &cobra.Command{
		Use:   "grant --agent A --server S --tool PATTERN [--tool ...]",
		Short: "Delegate: let an agent use tools (resources, prompts) of a server on your behalf",
		Long: `Grant stores a consent record and prints its id. From then on the agent
sees and may call the tools that match the patterns (shell globs such as
'list_*'), within the administrator's limits, until the record expires,
runs out of calls or is revoked (mcpcage revoke ID).

--when takes a CEL condition over args, tool, server, agent, user and now,
e.g. 'args.repo.startsWith("acme/") && size(args.body) < 10000'. For a
path use pathUnder(args.path, "/work"), never a prefix check: a server
resolves "/work/../etc/passwd" outside /work.
--expires takes a duration (8h, 30m, 2d) or a time (2026-12-01T00:00Z).
Resources (resources/read, completions on resource templates) and prompts
(prompts/get, completions on prompts) need their own --resource/--prompt
patterns: a --tool grant never covers them.

An agent run by an interpreter or a shell (node, python3, bash...) is
script:/path/to/script, as ` + "`mcpcage sessions`" + ` shows it; a grant to the
bare interpreter (exe:/usr/bin/node) would cover every script it runs,
and is refused without --any-script. In resource URI patterns '*'
also crosses '/': --resource '*' covers every resource, and
--resource 'file:///work/*' everything under /work at any depth. Tool
and prompt patterns are plain shell globs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r api.Consent
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpGrant, Grant: &g}, &r); err != nil {
				return err
			}
			if g.AnyScript {
				warn(cmd.ErrOrStderr(), "--any-script: if %s is an interpreter or a shell, this grant covers every script it runs, including any another process of yours starts", g.Agent)
			}
			_, err := fmt.Fprintln(stdout, r.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&g.Agent, "agent", "", "agent name from [agents.*], exe:/path/to/program or script:/path/to/script (required)")
	f.StringVar(&g.Server, "server", "", "server name (required)")
	f.StringArrayVar(&g.Tools, "tool", nil, "tool name pattern (repeatable)")
	f.StringArrayVar(&g.Resources, "resource", nil, "resource URI pattern, '*' crosses '/' (repeatable)")
	f.StringArrayVar(&g.Prompts, "prompt", nil, "prompt name pattern (repeatable)")
	f.StringVar(&g.When, "when", "", "CEL condition on the call")
	f.StringVar(&g.Expires, "expires", "", "expiry: duration or time")
	f.Int64Var(&g.MaxCalls, "max-calls", 0, "call budget")
	f.StringVar(&g.User, "user", "", "grant for this user (root or admin group only)")
	f.BoolVar(&g.AnyScript, "any-script", false, "allow a grant to a bare interpreter or shell (exe:/usr/bin/node): it covers every script it runs")
	f.StringVar(&g.Definition, "definition", "", "for a user's own server: the definition you reviewed (a prefix of the digest `mcpcage servers show NAME --user USER` shows); refused if the server is defined otherwise")
	must(cmd.MarkFlagRequired("agent"))
	must(cmd.MarkFlagRequired("server"))
	return cmd
}

func revokeCommand(socket *string, stdout io.Writer) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a consent; live sessions lose it at their next message",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r api.Consent
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpRevoke, Name: args[0], Reason: reason}, &r); err != nil {
				return err
			}
			_, err := fmt.Fprintf(stdout, "revoked %s (agent %s, server %s, user %s)\n", r.ID, printable(r.Agent), r.Server, r.User)
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	return cmd
}

func consentsCommand(socket *string, stdout io.Writer) *cobra.Command {
	var req api.Request
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "consents",
		Short: "List your consents (root and the admin group: everyone's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Op = api.OpConsents
			var recs []api.Consent
			if err := api.Call(api.SocketPath(*socket), req, &recs); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, recs)
			}
			now := time.Now()
			tw := newTable(stdout)
			tw.printf("ID\tUSER\tAGENT\tSERVER\tCOVERS\tSTATE\tEXPIRES\tCALLS\tVIA\n")
			for _, r := range recs {
				tw.printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.User, agentLabel(r.Agent), r.Server, covers(&r), r.State(now), expires(&r), calls(&r), via(&r))
			}
			return tw.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Agent, "agent", "", "only this agent")
	f.StringVar(&req.Server, "server", "", "only this server")
	f.StringVar(&req.User, "user", "", "only this user (root and the admin group)")
	f.BoolVar(&req.All, "all", false, "include revoked, expired and used-up records")
	f.BoolVar(&jsonOut, "json", false, "print JSON")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one consent record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r api.Consent
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpConsent, Name: args[0]}, &r); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, r)
			}
			tw := newTable(stdout)
			tw.printf("id:\t%s\nstate:\t%s\nuser:\t%s\nagent:\t%s\nserver:\t%s\ncovers:\t%s\ncondition:\t%s\nexpires:\t%s\ncalls:\t%s\ncreated:\t%s by %s (%s)\n",
				r.ID, r.State(time.Now()), r.User, r.Agent, r.Server, covers(&r), orDefault(r.When, "-"), expires(&r), calls(&r),
				r.CreatedAt.Format(time.RFC3339), r.CreatedBy, r.Via)
			if r.RevokedAt != nil {
				tw.printf("revoked:\t%s by %s: %s\n", r.RevokedAt.Format(time.RFC3339), r.RevokedBy, orDefault(r.Reason, "(no reason)"))
			}
			return tw.flush()
		},
	}
	show.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(show)
	return cmd
}

// agentLabel marks a bare interpreter's grants: they cover any script.
func agentLabel(agent string) string {
	if e, ok := strings.CutPrefix(agent, "exe:"); ok && identity.IsInterpreter(e) {
		return agent + " (any script)"
	}
	return agent
}

func covers(r *api.Consent) string {
	var parts []string
	for _, p := range r.Tools {
		parts = append(parts, "tool:"+p)
	}
	for _, p := range r.Resources {
		parts = append(parts, "resource:"+p)
	}
	for _, p := range r.Prompts {
		parts = append(parts, "prompt:"+p)
	}
	s := strings.Join(parts, ",")
	if r.When != "" {
		s += " when " + r.When
	}
	return s
}

func expires(r *api.Consent) string {
	if r.ExpiresAt == nil {
		return "never"
	}
	return r.ExpiresAt.Local().Format("2006-01-02 15:04")
}

func calls(r *api.Consent) string {
	if r.MaxCalls == nil {
		return fmt.Sprintf("%d", r.CallsUsed)
	}
	return fmt.Sprintf("%d/%d", r.CallsUsed, *r.MaxCalls)
}

// agentProgram shows what identifies a session's agent: the executable,
// an interpreter's script and digest, and a binding weaker than the
// kernel's.
func agentProgram(s api.SessionInfo) string {
	p := s.AgentExe
	if s.AgentScript != "" {
		p += " " + s.AgentScript
	}
	if s.AgentBinding != "" && s.AgentBinding != "kernel" {
		p += " [" + s.AgentBinding + "]"
	}
	return p
}

func sessionsCommand(socket *string, stdout io.Writer) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List live sessions: server, agent, user, agent instance, calls allowed/denied, question code, taint",
		Long: "List live sessions. Every consent question mcpcage asks in a client carries its session's\n" +
			"question code (QUESTION CODE): a question without the code shown here is not mcpcage's.\n" +
			"TAINT lists the labels whose data reached the session's agent run (every session of\n" +
			"the same client process) and the server each came from (data-flow guard, [[flow]]).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []api.SessionInfo
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSessions}, &list); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, list)
			}
			tw := newTable(stdout)
			tw.printf("SESSION\tSERVER\tAGENT\tUSER\tAGENT INSTANCE\tSTARTED\tALLOWED\tDENIED\tQUESTION CODE\tTAINT\tAGENT PROGRAM\n")
			for _, s := range list {
				tw.printf("%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.Server, s.Agent, s.User, s.AgentInstance, s.Started, s.Allowed, s.Denied, s.QuestionCode, taint(s), agentProgram(s))
			}
			return tw.flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// taint lists the labels whose data reached the session's agent run:
// "confidential from crm-db" ("-" when none).
func taint(s api.SessionInfo) string {
	if len(s.Taint) == 0 {
		return "-"
	}
	var parts []string
	for _, t := range s.Taint {
		what, _, _ := strings.Cut(t, " at ")
		parts = append(parts, what)
	}
	return strings.Join(parts, "; ")
}

// via says how a record was made and what binds it: "cli", "prompt,
// session 1a2b3c4d, pin sha256:5e1f0c2a".
func via(r *api.Consent) string {
	out := orDefault(r.Via, "-")
	if r.Session != "" {
		out += ", session " + r.Session
	}
	if r.Pin != "" {
		out += fmt.Sprintf(", pin %.19s", r.Pin)
	}
	return out
}
