package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/cli/clientsetup"
)

func serverCommand(socket *string, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "server", Short: "Manage your own server definitions (they run as you, on mcpcage's default sandbox)"}
	var def api.ServerDef
	var mounts, env []string
	add := &cobra.Command{
		Use:   "add NAME [--mount SRC:DST[:rw]] [--egress HOST:PORT] [--network host] [--env K=V] -- COMMAND [ARGS...] | add NAME --url URL",
		Short: "Add (or replace) one of your servers: a command in a sandbox, or a remote server (--url)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case def.URL != "" && len(args) == 1:
				def.Name = args[0]
			case def.URL == "" && cmd.ArgsLenAtDash() == 1 && len(args) > 1:
				def.Name, def.Command = args[0], args[1:]
			default:
				return errors.New("usage: mcpcage server add NAME [flags] -- COMMAND [ARGS...], or mcpcage server add NAME --url URL")
			}
			for _, m := range mounts {
				md, err := parseMount(m)
				if err != nil {
					return err
				}
				def.Mounts = append(def.Mounts, md)
			}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				if def.Env == nil {
					def.Env = map[string]string{}
				}
				def.Env[k] = v
			}
			if len(def.Egress) > 0 && def.Network == "" {
				def.Network = "host"
			}
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerAdd, Def: &def}, nil); err != nil {
				return err
			}
			if def.URL != "" {
				_, err := fmt.Fprintf(stdout, "server %s added: sign in with `mcpcage login %s` if it asks, run it with `mcpcage run %s`\n", def.Name, def.Name, def.Name)
				return err
			}
			_, err := fmt.Fprintf(stdout, "server %s added: run it with `mcpcage run %s`\n", def.Name, def.Name)
			return err
		},
	}
	add.Flags().StringArrayVar(&mounts, "mount", nil, "SRC:DST[:rw] host path shown in the sandbox (read-only unless :rw)")
	add.Flags().StringArrayVar(&def.Egress, "egress", nil, "allowed destination HOST:PORT (implies --network host)")
	add.Flags().StringVar(&def.Network, "network", "", "none (default) or host")
	add.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE (use secret:NAME for secrets)")
	add.Flags().StringVar(&def.Workdir, "workdir", "", "working directory in the sandbox")
	add.Flags().StringArrayVar(&def.Hosts, "host", nil, "with --url: another host the daemon may contact for it (its sign-in), HOST or HOST:PORT")
	add.Flags().StringVar(&def.URL, "url", "", "a remote MCP server's streamable-HTTP URL (https; http only to loopback): sign in with mcpcage login NAME")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove one of your servers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerRm, Name: args[0]}, nil)
		},
	}
	cmd.AddCommand(add, rm)
	return cmd
}

func parseMount(s string) (api.MountDef, error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 2:
		return api.MountDef{Source: parts[0], Target: parts[1]}, nil
	case len(parts) == 3 && (parts[2] == "rw" || parts[2] == "ro"):
		return api.MountDef{Source: parts[0], Target: parts[1], Writable: parts[2] == "rw"}, nil
	}
	return api.MountDef{}, fmt.Errorf("--mount %q: want SRC:DST or SRC:DST:rw", s)
}

// clientState remembers what setup did, for restore.
type clientState struct {
	Path    string   `json:"path"`
	Backup  string   `json:"backup"`
	Servers []string `json:"servers"`
	Time    string   `json:"time"`
}

func statePath(home string) string { return filepath.Join(home, ".config", "mcpcage", "clients.json") }

// loadState reads what setup did. A state file that cannot be read or
// parsed is an error: saving over it would lose the way back.
func loadState(home string) (map[string]clientState, error) {
	m := map[string]clientState{}
	b, err := os.ReadFile(statePath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", statePath(home), err)
	}
	return m, nil
}

func saveState(home string, m map[string]clientState) error {
	if err := os.MkdirAll(filepath.Dir(statePath(home)), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return os.WriteFile(statePath(home), b, 0o600)
}

func clientCommand(socket *string, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "client", Short: "Route an MCP client's local servers through mcpcage, and undo it"}
	var dryRun bool
	var only []string
	var home string
	setup := &cobra.Command{
		Use:   "setup CLIENT",
		Short: "Import CLIENT's stdio servers as your mcpcage servers and point the client at `mcpcage run`",
		Long: `Setup reads CLIENT's configuration (` + strings.Join(clientsetup.Names(), ", ") + `),
imports every local (stdio) server as one of your mcpcage servers with a
conservative sandbox (no network unless it is a known network tool; the
folders it works on mounted read-only), rewrites the entry to
"mcpcage run NAME", keeps a timestamped backup and prints the diff.
Remote (url) entries become remote mcpcage servers: mcpcage speaks
streamable HTTP to them and keeps the sign-in (mcpcage login NAME).
Entries mcpcage cannot carry are left as they are, with the reason:
the older HTTP+SSE transport, entries with headers of their own (a
static credential the client holds), and "docker run" commands. Running it again changes
nothing. "mcpcage client restore CLIENT" undoes it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientsetup.Lookup(args[0])
			if err != nil {
				return err
			}
			if home == "" {
				home, _ = os.UserHomeDir()
			}
			path := c.ConfigPath(home)
			old, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read %s's configuration: %w", c.Name, err)
			}
			self, _ := os.Executable()
			res, err := clientsetup.Rewrite(c, old, clientsetup.Options{Home: home, Only: only, Mcpcage: mcpcagePath(self)})
			if err != nil {
				return err
			}
			out := bufio.NewWriter(stdout) // keeps the first write error for Flush
			for _, n := range res.Notes {
				fmt.Fprintf(out, "left as is: %s\n", n)
			}
			for _, r := range res.Unchanged {
				fmt.Fprintf(out, "already through mcpcage: %s\n", r)
			}
			for _, s := range res.Imported {
				for _, w := range s.Warnings {
					warn(stderr, "%s", w)
				}
			}
			if !res.Changed(old) {
				fmt.Fprintf(out, "%s: nothing to change\n", path)
				return out.Flush()
			}
			fmt.Fprint(out, clientsetup.Diff(path, old, res.Config))
			if dryRun {
				fmt.Fprintln(out, "dry run: nothing was changed")
				return out.Flush()
			}
			if err := out.Flush(); err != nil {
				return err
			}
			state, err := loadState(home)
			if err != nil {
				return err
			}
			// Servers first, so the client never points at a missing one.
			var added []string
			for _, s := range res.Imported {
				if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerAdd, Def: &s.ServerDef}, nil); err != nil {
					for _, n := range added {
						if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerRm, Name: n}, nil); err != nil {
							warn(stderr, "undo import of %s: remove server: %v", n, err)
						}
					}
					return fmt.Errorf("import %s: %w; nothing was changed", s.Name, err)
				}
				added = append(added, s.Name)
			}
			backup := fmt.Sprintf("%s.mcpcage-backup-%s", path, time.Now().Format("20060102-150405"))
			st, _ := os.Stat(path)
			if err := os.WriteFile(backup, old, st.Mode().Perm()); err != nil {
				return fmt.Errorf("write backup: %w", err)
			}
			tmp := path + ".mcpcage-tmp"
			if err := os.WriteFile(tmp, res.Config, st.Mode().Perm()); err != nil {
				return err
			}
			if err := os.Rename(tmp, path); err != nil {
				return err
			}
			prev := state[c.Name]
			if prev.Backup == "" {
				prev = clientState{Path: path, Backup: backup}
			}
			prev.Servers = append(prev.Servers, added...)
			prev.Time = time.Now().Format(time.RFC3339)
			state[c.Name] = prev
			if err := saveState(home, state); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s now runs %d server(s) through mcpcage; backup: %s\nrestart %s, then grant what it may use: mcpcage grant --agent ... --server NAME --tool ...\n",
				c.Name, len(added), backup, c.Name)
			return err
		},
	}
	setup.Flags().BoolVar(&dryRun, "dry-run", false, "print the diff, change nothing")
	setup.Flags().StringArrayVar(&only, "server", nil, "import only this entry (repeatable)")
	setup.Flags().StringVar(&home, "home", "", "home directory (default: yours)")
	must(setup.Flags().MarkHidden("home"))
	restore := &cobra.Command{
		Use:   "restore CLIENT",
		Short: "Undo `client setup`: put the original configuration back and remove the imported servers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientsetup.Lookup(args[0])
			if err != nil {
				return err
			}
			if home == "" {
				home, _ = os.UserHomeDir()
			}
			state, err := loadState(home)
			if err != nil {
				return err
			}
			st, ok := state[c.Name]
			if !ok {
				return fmt.Errorf("mcpcage client setup was not run for %s (no record in %s)", c.Name, statePath(home))
			}
			b, err := os.ReadFile(st.Backup)
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			mode := os.FileMode(0o600)
			if bst, err := os.Stat(st.Backup); err == nil {
				mode = bst.Mode().Perm()
			}
			if err := os.WriteFile(st.Path, b, mode); err != nil {
				return err
			}
			for _, n := range st.Servers {
				if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerRm, Name: n}, nil); err != nil {
					warn(stderr, "remove server %s: %v", n, err)
				}
			}
			delete(state, c.Name)
			if err := saveState(home, state); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s restored from %s\n", st.Path, st.Backup)
			return err
		},
	}
	restore.Flags().StringVar(&home, "home", "", "home directory (default: yours)")
	must(restore.Flags().MarkHidden("home"))
	cmd.AddCommand(setup, restore)
	return cmd
}

// mcpcagePath is what client configs should run: the installed command
// when this binary is it, else this binary's path.
func mcpcagePath(self string) string {
	if self == "" || self == "/usr/bin/mcpcage" {
		return "mcpcage"
	}
	return self
}
