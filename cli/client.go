package cli

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
		Use:   "add NAME [--mount SRC:DST[:rw]] [--egress HOST:PORT] [--network host] [--env K=V] -- COMMAND [ARGS...] | add NAME --image IMAGE [-- ARGS...] | add NAME --url URL",
		Short: "Add (or replace) one of your servers: a command in a sandbox, an OCI image's entrypoint (--image), or a remote server (--url)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case def.URL != "" && len(args) == 1:
				def.Name = args[0]
			case def.Image != "" && len(args) == 1:
				def.Name = args[0]
			case def.Image != "" && cmd.ArgsLenAtDash() == 1:
				def.Name, def.Args = args[0], args[1:]
			case def.URL == "" && cmd.ArgsLenAtDash() == 1 && len(args) > 1:
				def.Name, def.Command = args[0], args[1:]
			default:
				return errors.New("usage: mcpcage server add NAME [flags] -- COMMAND [ARGS...], mcpcage server add NAME --image IMAGE [-- ARGS...], or mcpcage server add NAME --url URL")
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
	add.Flags().StringArrayVar(&def.Egress, "egress", nil, "allowed destination TARGET:PORT: an address, a range, a host name, or public (the internet, not the host nor its local networks); PORT a number or *; implies --network host")
	add.Flags().StringVar(&def.Network, "network", "", "none (default) or host")
	add.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE (use secret:NAME for secrets)")
	add.Flags().StringVar(&def.Workdir, "workdir", "", "working directory in the sandbox")
	add.Flags().StringArrayVar(&def.Hosts, "host", nil, "with --url: another host the daemon may contact for it (its sign-in), HOST or HOST:PORT")
	add.Flags().StringVar(&def.Image, "image", "", "an OCI image to run (its entrypoint; ARGS after -- replace its CMD); the administrator allows images in [daemon] user_images")
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
	Secrets []string `json:"secrets,omitempty"` // moved to the user's secret store
	Time    string   `json:"time"`
	// Mode is the configuration's permission bits, given back by
	// restore: the backup is 0600 whatever they were, as it keeps the
	// credentials moved to the secret store (0: the backup's, as before).
	Mode uint32 `json:"mode,omitempty"`
}

func statePath(home string) string { return filepath.Join(home, stateRel) }

// checkRestoreState refuses a state entry that names other files than
// setup writes: the client's own config in home, and a backup beside it
// named as setup names them. The state file is the user's: whoever runs
// restore must not write or read where it says otherwise (found by a
// red-team helper: it named a file of root's to write and one of the
// user's to write there).
// maxProjectFile bounds what setup reads of a project's .mcp.json.
const maxProjectFile = 1 << 20

// readProjectFile reads a project's server file as Claude Code does,
// through a symbolic link too: a regular file, at most maxProjectFile
// bytes (a FIFO or a device there must not hold setup).
func readProjectFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, maxProjectFile))
}

func checkRestoreState(c clientsetup.Client, home string, st clientState) error {
	cfg := c.ConfigPath(home)
	if filepath.Clean(st.Path) != cfg {
		return fmt.Errorf("%s names %q as %s's configuration, not %s: refused; restore it by hand from its backup", statePath(home), st.Path, c.Name, cfg)
	}
	suffix, ok := strings.CutPrefix(st.Backup, cfg+backupInfix)
	if !ok || suffix == "" || strings.ContainsAny(suffix, "/\x00") {
		return fmt.Errorf("%s names %q as %s's backup, which client setup does not write (%s%s<time>-<random>): refused", statePath(home), st.Backup, c.Name, cfg, backupInfix)
	}
	return nil
}

// backupInfix joins a client's config path and its backup's time.
const backupInfix = ".mcpcage-backup-"

// writeBackup writes data, a client's configuration at path, to a new
// file beside it readable by its owner only (it keeps the credentials
// setup moves to the secret store), named with the time and a random
// suffix (two runs within a second collided: found by a red-team
// review), and returns its name.
func writeBackup(path string, data []byte) (string, error) {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	backup := path + backupInfix + time.Now().Format("20060102-150405") + "-" + hex.EncodeToString(r[:])
	return backup, writeNew(backup, data, 0o600)
}

// readBackup reads a backup that is a regular file, not through a link,
// and returns its content and mode.
func readBackup(path string) ([]byte, os.FileMode, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxBackup+1))
	if err != nil {
		return nil, 0, err
	}
	if len(b) > maxBackup {
		return nil, 0, fmt.Errorf("%s is over %d bytes: not a client configuration setup backed up", path, maxBackup)
	}
	return b, st.Mode().Perm(), nil
}

// maxBackup bounds what restore reads back.
const maxBackup = 16 << 20

// stateRel is statePath below the home.
const stateRel = ".config/mcpcage/clients.json"

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
	return replaceFile(statePath(home), b, 0o600)
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
imports every local (stdio) server (Claude Code's per-project ones too)
as one of your mcpcage servers with a
conservative sandbox (no network unless it is a known network server,
named exactly: the package npx, uvx... fetch, or the command's name; the
folders it works on mounted read-only), rewrites the entry to
"/usr/bin/mcpcage run NAME" (this mcpcage's absolute path), keeps a
timestamped backup and prints the diff and which entries get the network.
An entry whose server name is taken (by another entry, or a server or
secrets you have) runs as NAME-2, NAME-3...: setup never replaces what
it did not make. An entry that runs "mcpcage run NAME" through another
mcpcage (a bare name found in PATH) is pointed at this one; one with a
socket of its own (--socket, MCPCAGE_SOCKET) is written anew without it.
Remote (url) entries become remote mcpcage servers: mcpcage speaks
streamable HTTP to them and keeps the sign-in (mcpcage login NAME).
"docker run IMAGE" entries become image-based servers (the same image,
pulled through containerd; its -e variables, bind mounts and workdir;
the administrator allows images in [daemon] user_images). Credentials in
an entry's env (names with token, key, secret, password) go to your own
secret store (mcpcage secret) and the server's env names them.
A Claude Code project's own .mcp.json is read, not rewritten (its
repository shares it): its servers are reported NOT through mcpcage,
with how to cage them.
Entries mcpcage cannot carry are left as they are, with the reason:
the older HTTP+SSE transport, entries with headers of their own (a
static credential the client holds), docker flags with no equivalent
(--env-file, named volumes, -d...), and images the administrator does not
allow. Running it again changes nothing. "mcpcage client restore CLIENT"
undoes it, secrets included.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientsetup.Lookup(args[0])
			if err != nil {
				return err
			}
			if home == "" {
				home, _ = os.UserHomeDir()
			}
			if err := asHomeOwner(home, stderr); err != nil {
				return err
			}
			path := c.ConfigPath(home)
			old, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read %s's configuration: %w", c.Name, err)
			}
			self, _ := os.Executable()
			inUse, listErr := namesInUse(*socket)
			opts := clientsetup.Options{Home: home, Only: only, Mcpcage: mcpcagePath(self), InUse: inUse, Keep: map[string]string{}}
			res, err := clientsetup.Rewrite(c, old, opts)
			if err != nil {
				return err
			}
			if listErr != nil && len(res.Imported) > 0 {
				// Without the names in use, an import could replace a
				// server or secret of the user's.
				if !dryRun {
					return fmt.Errorf("%w; nothing was changed", listErr)
				}
				warn(stderr, "%v: the server names below may change", listErr)
			}
			var added, stored []string
			var state map[string]clientState
			if !dryRun && res.Changed(old) {
				// The state first: saving over one that cannot be read
				// would lose the way back. Then servers (and their
				// secrets), so the client never points at a missing one.
				// A server the daemon refuses (an image it does not
				// allow users, a mount target it refuses) leaves its
				// entry as it is.
				if state, err = loadState(home); err != nil {
					return err
				}
				if added, stored, err = importServers(*socket, res.Imported, opts.Keep, stderr); err != nil {
					return err
				}
				if len(opts.Keep) > 0 {
					if res, err = clientsetup.Rewrite(c, old, opts); err != nil {
						removeImported(*socket, added, stored, stderr)
						return err
					}
				}
			}
			out := bufio.NewWriter(stdout) // keeps the first write error for Flush
			for _, n := range res.Notes {
				fmt.Fprintf(out, "left as is: %s\n", n)
			}
			for _, n := range clientsetup.ProjectServers(c, old, opts.Mcpcage, readProjectFile) {
				fmt.Fprintf(out, "left as is: %s\n", n)
			}
			for _, r := range res.Unchanged {
				fmt.Fprintf(out, "already through mcpcage: %s\n", r)
			}
			for _, r := range res.Repointed {
				fmt.Fprintf(out, "repointed: %s\n", r)
			}
			for _, s := range res.Imported {
				for _, w := range s.Warnings {
					warn(stderr, "%s", w)
				}
				for name := range s.Secrets {
					fmt.Fprintf(out, "%s: a credential goes to your secret store as %s\n", s.Entry, name)
				}
			}
			if !res.Changed(old) {
				fmt.Fprintf(out, "%s: nothing to change\n", path)
				return out.Flush()
			}
			fmt.Fprint(out, redactSecrets(clientsetup.Diff(path, old, res.Config), res.Imported))
			for _, s := range res.Imported {
				if s.NetworkWhy != "" {
					fmt.Fprintf(out, "network: %s\n", s.NetworkWhy)
				}
			}
			if dryRun {
				fmt.Fprintln(out, "dry run: nothing was changed")
				return out.Flush()
			}
			if err := out.Flush(); err != nil {
				removeImported(*socket, added, stored, stderr)
				return err
			}
			st, err := os.Stat(path)
			if err != nil {
				removeImported(*socket, added, stored, stderr)
				return fmt.Errorf("%s: %w; nothing was changed", path, err)
			}
			backup, err := writeBackup(path, old)
			if err != nil {
				removeImported(*socket, added, stored, stderr)
				return fmt.Errorf("write the backup of %s: %w; nothing was changed", path, err)
			}
			// The state before the file, so that restore knows every
			// server the file runs; a failure undoes all before it.
			prev, had := state[c.Name]
			next := prev
			if next.Backup == "" {
				next = clientState{Path: path, Backup: backup, Mode: uint32(st.Mode().Perm())}
			}
			next.Servers = append(slices.Clip(next.Servers), added...)
			next.Secrets = append(slices.Clip(next.Secrets), stored...)
			next.Time = time.Now().Format(time.RFC3339)
			state[c.Name] = next
			if err := saveState(home, state); err != nil {
				removeImported(*socket, added, stored, stderr)
				_ = os.Remove(backup)
				return fmt.Errorf("record what setup did in %s: %w; nothing was changed", statePath(home), err)
			}
			if err := replaceFile(path, res.Config, st.Mode().Perm()); err != nil {
				delete(state, c.Name)
				if had {
					state[c.Name] = prev
				}
				if serr := saveState(home, state); serr != nil {
					return fmt.Errorf("write %s: %w; %s still records the servers imported (undo them with mcpcage client restore %s): %v", path, err, statePath(home), c.Name, serr)
				}
				removeImported(*socket, added, stored, stderr)
				_ = os.Remove(backup)
				return fmt.Errorf("write %s: %w; nothing was changed", path, err)
			}
			if len(stored) > 0 {
				if _, err := fmt.Fprintf(stdout, "the backup keeps the credentials that went to your secret store (mcpcage client restore needs it): delete it once you no longer want the way back\n"); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(stdout, "%s now runs %d server(s) through mcpcage; backup: %s\nrestart %s, then grant what it may use: mcpcage grant --agent ... --server NAME --tool ...\n",
				c.Name, len(added), backup, c.Name)
			return err
		},
	}
	setup.Flags().BoolVar(&dryRun, "dry-run", false, "print the diff, change nothing")
	setup.Flags().StringArrayVar(&only, "server", nil, "import only this entry (repeatable; a Claude Code project's by its name or as 'NAME (project PATH)')")
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
			if err := asHomeOwner(home, stderr); err != nil {
				return err
			}
			state, err := loadState(home)
			if err != nil {
				return err
			}
			st, ok := state[c.Name]
			if !ok {
				return fmt.Errorf("mcpcage client setup was not run for %s (no record in %s)", c.Name, statePath(home))
			}
			if err := checkRestoreState(c, home, st); err != nil {
				return err
			}
			b, mode, err := readBackup(st.Backup)
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			if st.Mode != 0 {
				mode = os.FileMode(st.Mode) & os.ModePerm
			}
			if err := replaceFile(st.Path, b, mode); err != nil {
				return err
			}
			for _, n := range st.Servers {
				if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpServerRm, Name: n}, nil); err != nil {
					warn(stderr, "remove server %s: %v", n, err)
				}
			}
			for _, n := range st.Secrets {
				if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpSecretRm, Name: n}, nil); err != nil {
					warn(stderr, "remove secret %s: %v", n, err)
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

// mcpcagePath is what client configs should run: this binary's absolute
// path (the package's /usr/bin/mcpcage), never a name looked up in PATH,
// which whoever sets the client's environment could point at a program
// that hands the shim pipes of its own.
func mcpcagePath(self string) string {
	if self == "" {
		return clientsetup.DefaultMcpcage
	}
	return self
}

// namesInUse reports the names setup must not take: a server the user
// has (or an administrator's), a secret the user has, or a server whose
// secrets ("NAME.KEY") the user has. Setup imports under free names only, so it never
// replaces what it did not make, and restore removes only what it made.
func namesInUse(socket string) (func(string) bool, error) {
	var servers []api.ServerInfo
	if err := api.Call(api.SocketPath(socket), api.Request{Op: api.OpServers}, &servers); err != nil {
		return nil, fmt.Errorf("list your servers: %w", err)
	}
	var secrets []string
	if err := api.Call(api.SocketPath(socket), api.Request{Op: api.OpSecretList}, &secrets); err != nil {
		return nil, fmt.Errorf("list your secrets: %w", err)
	}
	taken := map[string]bool{}
	for _, s := range servers {
		taken[s.Name] = true
	}
	return func(name string) bool {
		return taken[name] || slices.ContainsFunc(secrets, func(s string) bool { return s == name || strings.HasPrefix(s, name+".") })
	}, nil
}

// importServers stores each server's secrets, then adds the server. A
// server the daemon refuses (api.CodeDenied: an image [daemon]
// user_images does not allow, a mount target where the user could change
// the way) is skipped and its entry named in keep with the reason; any
// other failure undoes everything done so far.
func importServers(socket string, servers []clientsetup.Server, keep map[string]string, stderr io.Writer) (added, stored []string, err error) {
	call := func(req api.Request) error { return api.Call(api.SocketPath(socket), req, nil) }
	undo := func() { removeImported(socket, added, stored, stderr) }
	for _, s := range servers {
		var mine []string
		for name, value := range s.Secrets {
			if err := call(api.Request{Op: api.OpSecretSet, Name: name, Secret: value}); err != nil {
				stored = append(stored, mine...)
				undo()
				return nil, nil, fmt.Errorf("import %s: store its credential as secret %s: %w; nothing was changed", s.Name, name, err)
			}
			mine = append(mine, name)
		}
		err := call(api.Request{Op: api.OpServerAdd, Def: &s.ServerDef})
		var re *api.ReplyError
		if err != nil && errors.As(err, &re) && re.Code == api.CodeDenied {
			keep[s.Entry] = re.Msg
			for _, n := range mine {
				if err := call(api.Request{Op: api.OpSecretRm, Name: n}); err != nil {
					warn(stderr, "remove secret %s: %v", n, err)
				}
			}
			continue
		}
		stored = append(stored, mine...)
		if err != nil {
			undo()
			return nil, nil, fmt.Errorf("import %s: %w; nothing was changed", s.Name, err)
		}
		added = append(added, s.Name)
	}
	return added, stored, nil
}

// removeImported undoes an import: it removes the servers added and the
// secrets stored, warning of what it could not remove.
func removeImported(socket string, added, stored []string, stderr io.Writer) {
	call := func(req api.Request) error { return api.Call(api.SocketPath(socket), req, nil) }
	for _, n := range added {
		if err := call(api.Request{Op: api.OpServerRm, Name: n}); err != nil {
			warn(stderr, "undo import of %s: remove server: %v", n, err)
		}
	}
	for _, n := range stored {
		if err := call(api.Request{Op: api.OpSecretRm, Name: n}); err != nil {
			warn(stderr, "undo import: remove secret %s: %v", n, err)
		}
	}
}

// redactSecrets replaces in text the credentials servers carry to the
// secret store: the diff shows the entry they came from.
func redactSecrets(text string, servers []clientsetup.Server) string {
	for _, s := range servers {
		for name, v := range s.Secrets {
			if len(v) < 4 {
				continue
			}
			quoted, _ := json.Marshal(v) // as the file may spell it
			for _, form := range []string{v, string(quoted[1 : len(quoted)-1])} {
				text = strings.ReplaceAll(text, form, "[moved to secret "+name+"]")
			}
		}
	}
	return text
}
