package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/shim"
)

// Version is the CLI's version, set at build time.
var Version = "dev"

// exitError carries an exit status through cobra.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Main runs the CLI and returns the process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return int(ee)
	default:
		showError(stderr, err)
		return 1
	}
}

// showError prints a failed command's error. It can carry a remote
// party's words (an authorization server's error_description, through
// the daemon): shown, never interpreted by the terminal.
// showError prints err, its lines after the first indented: words a
// server, a remote peer or another user chose cannot start a line that
// reads as mcpcage's own.
func showError(w io.Writer, err error) {
	_, _ = fmt.Fprintf(w, "mcpcage: %s\n", strings.ReplaceAll(printableLines(err.Error()), "\n", "\n  "))
}

// Command returns the CLI's command tree (for generated documentation).
func Command() *cobra.Command { return newRoot(nil, io.Discard, io.Discard) }

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var socket string
	root := &cobra.Command{
		Use:   "mcpcage",
		Short: "Run local MCP servers in a sandbox, under policy and audit",
		Long: `mcpcage puts each local MCP server an AI client starts into a sandbox run
by mcpcaged. Point your MCP client at "mcpcage run NAME" instead of the
server's own command; NAME is a server configured in mcpcaged's config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&socket, "socket", "", "mcpcaged socket (default $"+api.EnvSocket+" or "+api.DefaultSocket+")")

	root.AddCommand(&cobra.Command{
		Use:   "run NAME",
		Short: "Start a session with server NAME and relay stdio (what MCP clients run)",
		Long: `Run connects to mcpcaged, which starts server NAME in its sandbox. When
stdin and stdout are pipes or stream sockets (as MCP clients give them), run
hands them to mcpcaged, which then reads and writes them itself; otherwise
(a terminal, a file) run relays them byte for byte. The server's stderr
arrives on stderr. It exits with the server's exit status.

Exit statuses of its own: 1 the session ended abnormally, 2 no session could
be started (daemon unreachable, launch failed), 3 no server named NAME.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := shim.Run(api.SocketPath(socket), args[0], stdin, stdout, stderr); code != 0 {
				return exitError(code)
			}
			return nil
		},
	})

	cfgCmd := &cobra.Command{Use: "config", Short: "Work with mcpcaged's configuration file"}
	cfgCmd.AddCommand(&cobra.Command{
		Use:   "check [PATH]",
		Short: "Validate a configuration file without starting anything",
		Long:  "Check reads PATH (default $" + config.EnvPath + " or " + config.DefaultPath + ") and reports every error with its key and line.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			flagPath := ""
			if len(args) == 1 {
				flagPath = args[0]
			}
			path, _ := config.ResolvePath(flagPath)
			cfg, err := config.Load(path, true)
			if err != nil {
				_, _ = fmt.Fprintf(stderr, "mcpcage: %v\n", err)
				return exitError(1)
			}
			_, err = fmt.Fprintf(stdout, "%s: OK (%d servers: %s)\n", path, len(cfg.Servers), strings.Join(cfg.ServerNames(), ", "))
			return err
		},
	})
	root.AddCommand(cfgCmd)

	root.AddCommand(statusCommand(&socket, stdout), serversCommand(&socket, stdout), secretCommand(&socket, stdin, stdout), traceCommand(&socket, stdout),
		grantCommand(&socket, stdout), revokeCommand(&socket, stdout), consentsCommand(&socket, stdout), sessionsCommand(&socket, stdout),
		auditCommand(&socket, stdin, stdout, stderr), serverCommand(&socket, stdout), clientCommand(&socket, stdout, stderr), pinsCommand(&socket, stdout),
		pendingCommand(&socket, stdout), approveCommand(&socket, stdout), denyCommand(&socket, stdout), whyCommand(&socket, stdout),
		loginCommand(&socket, stdout, stderr), logoutCommand(&socket, stdout), tokensCommand(&socket, stdout), jwksCommand(&socket, stdout))
	return root
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// writeJSON prints v as indented JSON for a terminal (terminalJSON).
func writeJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(terminalJSON(b.Bytes()))
	return err
}
