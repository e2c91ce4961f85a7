package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

func secretCommand(socket *string, stdin io.Reader, stdout io.Writer) *cobra.Command {
	var agent string
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage secrets injected into servers (env = { KEY = \"secret:NAME\" })",
		Long: `Secret manages the values servers' env entries "secret:NAME" receive.

Run as root, it manages the administrator's store, which the servers of
the configuration read. Run as any other user, it manages that user's own
store, which only that user's own servers (mcpcage server add, mcpcage
client setup) read: a user's server never reads the administrator's
secrets, nor another user's.

With --agent (root only), the value is that agent's own: sessions of the agent get it
instead of the default value of NAME, so an agent can hold an upstream
credential of its own (e.g. a read-only token) that no other agent uses.`,
	}
	cmd.PersistentFlags().StringVar(&agent, "agent", "", "the registered agent whose own value this is")
	cmd.AddCommand(&cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret; the value is read from stdin (one trailing newline is dropped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
			if err != nil {
				return fmt.Errorf("read the secret from stdin: %w", err)
			}
			v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			return api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretSet, Name: args[0], Secret: v, Agent: agent}, nil)
		},
	}, &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretRm, Name: args[0], Agent: agent}, nil)
		},
	}, &cobra.Command{
		Use:   "ls",
		Short: "List the names of the secrets (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretList, Agent: agent}, &names); err != nil {
				return err
			}
			for _, n := range names {
				if _, err := fmt.Fprintln(stdout, n); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return cmd
}
