package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/sandbox/landlock"
)

func statusCommand(socket *string, stdout io.Writer) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's status: version, containerd, sessions, enforcement",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st api.Status
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpStatus}, &st); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, st)
			}
			tw := newTable(stdout)
			tw.printf("version:\t%s\nuptime:\t%s\ncontainerd:\t%s\nsessions:\t%d\nservers:\t%s\nconfig:\t%s\n",
				st.Version, st.Uptime, st.Containerd, st.Sessions, strings.Join(st.Servers, ", "), orDefault(st.ConfigPath, "(built-in defaults)"))
			keys := make([]string, 0, len(st.Enforcement))
			for k := range st.Enforcement {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				tw.printf("enforcement %s:\t%s\n", k, st.Enforcement[k])
			}
			if ll, ok := st.Enforcement["landlock"]; ok {
				tw.printf("landlock scopes:\t%s\n", landlockScopes(ll))
			}
			audit := fmt.Sprintf("%s, %d records written since start, healthy", st.AuditLog, st.AuditRecords)
			if st.AuditError != "" {
				audit = fmt.Sprintf("%s: FAILING (%s): tool calls are denied", st.AuditLog, st.AuditError)
			}
			tw.printf("audit log:\t%s\nmetrics:\t%s\n", audit, orDefault(st.Metrics, "disabled"))
			tw.printf("agent identity:\t%s\n", orDefault(st.AgentIdentity, "unknown (older daemon)"))
			tw.printf("ptrace_scope:\t%s\n", orDefault(st.PtraceScope, "unknown (older daemon)"))
			if k := st.Kernel; k != nil {
				tw.printf("kernel sessions:\t%d (egress entries %d, deny entries %d; cgroup %s)\n", k.Sessions, k.EgressEntries, k.DenyEntries, k.CgroupParent)
				tw.printf("kernel events lost:\t%d (ring buffer full), %d (throttled)\n", k.LostRingbuf, k.LostThrottled)
				obs := "detached (no session: the host pays nothing)"
				switch {
				case k.Observing && k.Sessions == 0:
					obs = "attached, lingering: no session; detached " + orDefault(k.ObserverLinger, "a while") + " after the last one ended or the daemon started (observer_linger)"
				case k.Observing:
					obs = "attached (syscall tracepoints while sessions run)"
				}
				tw.printf("kernel observation:\t%s\n", obs)
			}
			if w := st.Warm; w != nil {
				printWarm(tw, w)
			}
			return tw.flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// landlockScopes says, from the daemon's Landlock state ("enforced (ABI
// N)"), whether sandboxes are scoped: mcpcage-init asks for the scopes
// wherever the kernel has them.
func landlockScopes(state string) string {
	const exposed = `a server with network = "host" can connect to the host's abstract unix sockets (X11, D-Bus, ...) and signal outside its sandbox where its pid namespace lets it see`
	var abi int
	if _, err := fmt.Sscanf(state, "enforced (ABI %d)", &abi); err != nil {
		return "none (Landlock not enforced): " + exposed
	}
	if !landlock.Scoped(abi) {
		return fmt.Sprintf("none (Landlock ABI %d; scopes need ABI %d): %s", abi, landlock.ScopeABI, exposed)
	}
	return "abstract unix sockets and signals confined to each sandbox (LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL)"
}

// printWarm shows the pool of prepared sandboxes.
func printWarm(tw *table, w *api.WarmStatus) {
	if w.Disabled != "" {
		tw.printf("warm sandboxes:\toff (%s)\n", w.Disabled)
		return
	}
	tw.printf("warm sandboxes:\t%d ready, %d being prepared (at most %d, %s of memory; each removed after %s unused); %s in use\n",
		len(w.Entries)+w.Others, w.Building, w.Max, mib(w.MemoryMax), w.Idle, mib(w.Memory))
	for _, e := range w.Entries {
		tw.printf("  warm:\t%s for %s (container %s, prepared %s ago, %s)\n", e.Server, e.User, e.Container, e.Age, mib(e.Memory))
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
