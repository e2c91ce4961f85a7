package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

// pendingCommand lists the requests nobody answered in the client.
func pendingCommand(socket *string, stdout io.Writer) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "Requests waiting for your answer (ask mode): the agent was denied, and tries again once you approve",
		Long: "With default_decision = \"ask\", a request no consent covers is put to you in the client. When the\n" +
			"client cannot ask (no elicitation), or nobody answered in time, the agent is denied and the request\n" +
			"waits here: `mcpcage approve ID` or `mcpcage deny ID` answers it for the agent's next attempt.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []api.PendingInfo
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpPending}, &list); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, list)
			}
			if len(list) == 0 {
				_, err := fmt.Fprintln(stdout, "no requests are waiting for an answer")
				return err
			}
			tw := newTable(stdout)
			tw.printf("ID\tAGENT\tUSER\tSERVER\tDEFINITION\tWHAT\tARGUMENTS\tATTEMPTS\tLAST\tWHY NOT ASKED\n")
			for _, p := range list {
				def := "-" // the administrator's server
				if len(p.Definition) > api.MinDefinitionPrefix {
					def = p.Definition[:api.MinDefinitionPrefix]
				}
				tw.printf("%s\t%s\t%s\t%s\t%s\t%s %s\t%s\t%d\t%s\t%s\n", p.ID, cell(p.Agent), cell(p.User), cell(p.Server), def, cell(p.Kind), cell(p.Name),
					cell(orDefault(p.Arguments, "-")), p.Attempts, p.Last.Local().Format("15:04:05"), cell(p.Why))
			}
			return tw.flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// approveCommand allows a pending request: once (the default), for the
// session that asked, or for a while.
func approveCommand(socket *string, stdout io.Writer) *cobra.Command {
	var once, session bool
	var forDur string
	cmd := &cobra.Command{
		Use:   "approve PENDING_ID",
		Short: "Allow a pending request (see mcpcage pending): --once (default), --session, or --for 8h",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			for _, set := range []bool{once, session, forDur != ""} {
				if set {
					n++
				}
			}
			if n > 1 {
				return errors.New("choose one of --once, --session and --for")
			}
			req := api.Request{Op: api.OpAnswer, Name: args[0], Answer: api.AnswerOnce}
			switch {
			case session:
				req.Answer = api.AnswerSession
			case forDur != "":
				req.Answer, req.For = api.AnswerDuration, forDur
			}
			var rec api.Consent
			if err := api.Call(api.SocketPath(*socket), req, &rec); err != nil {
				return err
			}
			var scope string
			switch {
			case rec.Request != "":
				scope = "that one request, with the same arguments, once, until " + rec.ExpiresAt.Local().Format(time.DateTime)
			case rec.Session != "":
				scope = "every call of session " + rec.Session
			case rec.ExpiresAt != nil:
				scope = "every call until " + rec.ExpiresAt.Local().Format(time.DateTime)
			}
			_, err := fmt.Fprintf(stdout, "consent %s: agent %s may use %s of server %s for %s: %s. The agent's next attempt passes.\n",
				rec.ID, cell(rec.Agent), cell(unglob(first(rec.Tools, rec.Resources, rec.Prompts))), cell(rec.Server), rec.User, scope)
			return err
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "allow one call (the default)")
	cmd.Flags().BoolVar(&session, "session", false, "allow every call of the session that asked")
	cmd.Flags().StringVar(&forDur, "for", "", "allow every call for this long (30m, 8h, 2d)")
	return cmd
}

// denyCommand refuses a pending request: the agent is not asked about it
// again for a while.
func denyCommand(socket *string, stdout io.Writer) *cobra.Command {
	var forDur string
	cmd := &cobra.Command{
		Use:   "deny PENDING_ID",
		Short: "Refuse a pending request (see mcpcage pending); mcpcage does not ask about it again for a while",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Until time.Time `json:"until"`
			}
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpAnswer, Name: args[0], Answer: api.AnswerDeny, For: forDur}, &out); err != nil {
				return err
			}
			_, err := fmt.Fprintf(stdout, "refused; the agent's next attempts are denied without asking until %s\n", out.Until.Local().Format(time.DateTime))
			return err
		},
	}
	cmd.Flags().StringVar(&forDur, "for", "", "how long not to ask again (default: [daemon] ask_duration)")
	return cmd
}

// unglob undoes the escaping of a pattern that names one object.
func unglob(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+1 < len(p) {
			i++
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// first returns the first pattern of the first non-empty list.
func first(lists ...[]string) string {
	for _, l := range lists {
		if len(l) > 0 {
			return l[0]
		}
	}
	return "?"
}
