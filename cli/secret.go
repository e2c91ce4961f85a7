package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

func secretCommand(socket *string, stdin io.Reader, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage secrets injected into servers (env = { KEY = \"secret:NAME\" }); root only",
	}
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
			return api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretSet, Name: args[0], Secret: v}, nil)
		},
	}, &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretRm, Name: args[0]}, nil)
		},
	}, &cobra.Command{
		Use:   "ls",
		Short: "List the names of the secrets (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretList}, &names); err != nil {
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
