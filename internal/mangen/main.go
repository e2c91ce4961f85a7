// Command mangen writes the manual pages mcpcage(1) (one page per
// subcommand, mcpcage-run(1), ...) and mcpcaged(8) into a directory,
// generated from the command definitions so they cannot drift from the
// binaries. `make package` runs it; the packages ship the pages.
//
// Usage: go run ./internal/mangen DIR
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/mcpcage/mcpcage/cli"
	"github.com/mcpcage/mcpcage/daemon"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mangen DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	source := "mcpcage " + cli.Version
	root := cli.Command()
	root.DisableAutoGenTag = true
	if err := doc.GenManTree(root, &doc.GenManHeader{Title: "MCPCAGE", Section: "1", Source: source, Manual: "mcpcage manual"}, dir); err != nil {
		return fmt.Errorf("mcpcage(1): %w", err)
	}
	d := &cobra.Command{
		Use:   daemon.Usage,
		Short: "the mcpcage daemon: sandboxed MCP servers under consent, audit and eBPF enforcement",
		Long: daemon.Summary + `

It listens on a unix socket (normally activated by mcpcaged.socket), reads
each caller's identity from the kernel, runs every session's MCP server in
a containerd/runc sandbox with seccomp, Landlock and eBPF enforcement,
decides every tools/call, resources/read and prompts/get against the
consents users granted with mcpcage grant, and writes a hash-chained audit
log. SIGHUP (systemctl reload) re-reads the configuration for new sessions;
SIGTERM ends every session and exits. See /etc/mcpcage/config.toml for
every setting, and mcpcage(1) for the client side.`,
		DisableAutoGenTag: true,
		Run:               func(*cobra.Command, []string) {},
	}
	d.Flags().AddGoFlagSet(daemon.Flags())
	d.Flags().VisitAll(func(f *pflag.Flag) { f.Shorthand = "" })
	f, err := os.Create(filepath.Join(dir, "mcpcaged.8"))
	if err != nil {
		return err
	}
	if err := doc.GenMan(d, &doc.GenManHeader{Title: "MCPCAGED", Section: "8", Source: "mcpcaged " + daemon.Version, Manual: "mcpcage manual"}, f); err != nil {
		_ = f.Close()
		return fmt.Errorf("mcpcaged(8): %w", err)
	}
	return f.Close()
}
