package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

func serversCommand(socket *string, stdout io.Writer) *cobra.Command {
	var jsonOut bool
	var whose string
	list := func() ([]api.ServerInfo, error) {
		var l []api.ServerInfo
		err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServers, User: whose}, &l)
		return l, err
	}
	cmd := &cobra.Command{
		Use:   "servers",
		Short: "List the servers mcpcaged can run, with the sandbox each gets for you",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := list()
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, l)
			}
			tw := newTable(stdout)
			tw.printf("NAME\tUSER\tNETWORK\tMEMORY\tPIDS\tCPUS\tSECCOMP\tLANDLOCK\tMOUNTS\tCOMMAND\n")
			for _, s := range l {
				if s.URL != "" {
					tw.printf("%s\t-\tremote\t-\t-\t-\t-\t-\t-\t%s\n", s.Name, s.URL)
					continue
				}
				tw.printf("%s\t%s\t%s\t%dMiB\t%d\t%g\t%s\t%v\t%s\t%s\n", s.Name, s.User, s.Network, s.Memory>>20, s.Pids, s.CPUs,
					s.Seccomp, s.Landlock, orDefault(strings.Join(s.Mounts, ","), "-"), orDefault(strings.Join(s.Command, " "), imageCommand(s)))
			}
			return tw.flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.PersistentFlags().StringVar(&whose, "user", "", "list this user's servers, their own included (root or admin group only)")

	var spec bool
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one server's effective sandbox, or with --spec the OCI spec it would run with",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if spec && whose != "" {
				return fmt.Errorf("--spec shows the spec of your own sessions only; without --spec, --user %s shows that user's server", whose)
			}
			if spec {
				var raw json.RawMessage
				if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerSpec, Server: args[0]}, &raw); err != nil {
					return err
				}
				var v any
				_ = json.Unmarshal(raw, &v)
				return writeJSON(stdout, v)
			}
			l, err := list()
			if err != nil {
				return err
			}
			for _, s := range l {
				if s.Name != args[0] {
					continue
				}
				if jsonOut {
					return writeJSON(stdout, s)
				}
				tw := newTable(stdout)
				tw.printf("name:\t%s\ncommand:\t%s\nimage:\t%s\nworkdir:\t%s\nuser:\t%s\nnetwork:\t%s\nmemory:\t%d MiB\npids:\t%d\ncpus:\t%g\nseccomp:\t%s\nlandlock:\t%v\n",
					s.Name, orDefault(strings.Join(s.Command, " "), imageCommand(s)), orDefault(s.Image, "(host root, read-only)"), s.Workdir, s.User, s.Network,
					s.Memory>>20, s.Pids, s.CPUs, s.Seccomp, s.Landlock)
				for _, m := range s.Mounts {
					tw.printf("mount:\t%s\n", m)
				}
				for _, h := range s.Hidden {
					tw.printf("hidden:\t%s\n", h)
				}
				for _, e := range s.Env {
					tw.printf("env:\t%s\n", e)
				}
				if s.Definition != "" {
					tw.printf("owner:\t%s\ndefinition:\t%s (a grant for this definition only: mcpcage grant --definition %.16s ...)\n", s.Owner, s.Definition, s.Definition)
				}
				return tw.flush()
			}
			return fmt.Errorf("no server named %q: `mcpcage servers` lists them", args[0])
		},
	}
	show.Flags().BoolVar(&spec, "spec", false, "print the generated OCI runtime spec (JSON)")
	show.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(show)
	return cmd
}

// imageCommand describes what an image server without command runs.
func imageCommand(s api.ServerInfo) string {
	if s.Image == "" {
		return ""
	}
	return strings.TrimSpace("(the image's entrypoint) " + strings.Join(s.Args, " "))
}
