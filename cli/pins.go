package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

// pinsCommand lists tool pins, shows a quarantined tool's diff and
// approves it.
func pinsCommand(socket *string, stdout io.Writer) *cobra.Command {
	var server string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "pins",
		Short: "Tool pins: the approved definition of every tool, and the changed ones held back",
		Long: "Every tool a server shows is pinned (the digest of its definition). A tool whose definition\n" +
			"changes afterwards is quarantined: hidden from agents and its calls refused until you review\n" +
			"the change (pins diff) and approve it (pins approve). The server's instructions are pinned as\n" +
			"'(instructions)', and each UI resource a host reads (MCP Apps) under its ui:// URI: TOOL names\n" +
			"any of them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []api.PinInfo
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpPins, Server: server}, &list); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, list)
			}
			tw := newTable(stdout)
			tw.printf("SERVER\tTOOL\tSTATE\tPIN\tAPPROVED\n")
			for _, p := range list {
				state := "pinned"
				if p.Quarantined {
					state = "QUARANTINED since " + p.PendingAt.Local().Format("2006-01-02 15:04") + " (pins diff " + p.Server + " " + p.Tool + ")"
				}
				name := p.Server
				if p.Owner != "" {
					name += " (" + p.Owner + "'s)"
				}
				approved := "-"
				if p.Digest != "" {
					approved = p.ApprovedAt.Local().Format("2006-01-02 15:04") + " by " + p.ApprovedBy
				}
				tw.printf("%s\t%s\t%s\t%.19s\t%s\n", printable(name), printable(p.Tool), state, orDefault(p.Digest, "-"), approved)
			}
			return tw.flush()
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "only this server's tools")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(&cobra.Command{
		Use:   "diff SERVER TOOL",
		Short: "Show how a quarantined tool's definition differs from the approved one (- approved, + now)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []api.PinInfo
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpPins, Server: args[0], Name: args[1]}, &list); err != nil {
				return err
			}
			for _, p := range list {
				if !p.Quarantined {
					_, err := fmt.Fprintf(stdout, "%s %s of %s is not quarantined: its definition is the approved one (%s)\n", p.Kind.Noun(), printable(p.Tool), printable(p.Server), p.Digest)
					return err
				}
				if _, err := fmt.Fprintf(stdout, "--- approved %s\n+++ now      %s\n%s", orDefault(p.Digest, "(never: a new tool)"), p.Pending, printableLines(p.Diff)); err != nil {
					return err
				}
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "approve SERVER TOOL DIGEST",
		Short: "Approve the definition you reviewed (DIGEST, from pins diff's +++ line): it becomes the pin, and agents see the tool again",
		Long: "Approve the quarantined definition of TOOL whose digest is DIGEST (as pins diff shows it on its +++ line,\n" +
			"or its first 12 hex digits). If the server changed the tool again since your review, nothing is approved.",
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p api.PinInfo
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpPinApprove, Server: args[0], Name: args[1], Digest: args[2]}, &p); err != nil {
				return err
			}
			_, err := fmt.Fprintf(stdout, "approved: %s %s of %s is pinned to %s\n", p.Kind.Noun(), printable(p.Tool), printable(p.Server), p.Digest)
			return err
		},
	})
	return cmd
}
