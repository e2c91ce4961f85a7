package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

func traceCommand(socket *string, stdout io.Writer) *cobra.Command {
	var session, server string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Stream the kernel events of live sessions: file opens, execs, connections, denials",
		Long: `Trace streams what sandboxed servers do on the host, as the kernel saw it:
files opened (the kernel's own path of the new file), programs executed,
connections attempted and UDP destinations, and every denial. Each event
names its session, server and the tools/call requests in flight.
Users see their own sessions; root sees all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := api.Dial(api.SocketPath(*socket))
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			r, err := c.Do(api.Request{Op: api.OpTrace, Session: session, Server: server})
			if err != nil {
				return err
			}
			if !r.OK {
				return errors.New(r.Error)
			}
			w := bufio.NewWriter(stdout) // keeps the first write error for Flush
			for {
				t, payload, err := c.R.Next()
				if err != nil {
					return errors.Join(fmt.Errorf("trace ended: %w", err), w.Flush())
				}
				if t != api.FrameStdout {
					continue
				}
				if jsonOut {
					w.Write(payload)
				} else {
					for _, line := range bytes.Split(bytes.TrimSpace(payload), []byte("\n")) {
						var ev api.KernelEvent
						if json.Unmarshal(line, &ev) == nil {
							fmt.Fprintln(w, formatEvent(ev))
						}
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().StringVar(&session, "session", "", "only this session")
	cmd.Flags().StringVar(&server, "server", "", "only sessions of this server")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "one JSON object per line")
	return cmd
}

func formatEvent(ev api.KernelEvent) string {
	ts := ev.Time.Local().Format("15:04:05.000")
	if ev.Type == api.TraceMissed {
		return printable(fmt.Sprintf("%s %-8.8s %-10s %d events not shown: this reader was too slow (see mcpcage audit)", ts, ev.Session, ev.Server, ev.Missed))
	}
	// Paths, names and argv are the server's text: each one value, quoted
	// when it could pass for more (a file named "id_rsa  -> EACCES
	// (deny_paths ~/.ssh)" read as a denial: found by a red-team helper).
	what := ""
	switch {
	case ev.Path != "" && ev.Type == "process.exec":
		argv := make([]string, len(ev.Argv))
		for i, a := range ev.Argv {
			argv[i] = quoteValue(a)
		}
		what = quoteValue(ev.Path) + " " + strings.Join(argv, " ")
	case ev.Path != "" || ev.Hint != "":
		what = quoteValue(ev.Path)
		if ev.Path == "" {
			what = quoteValue(ev.Hint)
		}
		if ev.To != "" {
			what += " -> " + quoteValue(ev.To)
		}
		if strings.HasPrefix(ev.Type, "net.unix_") && ev.Proto != "" {
			what = ev.Proto + " " + what
		}
	case ev.Addr != "":
		what = ev.Proto + " " + ev.Addr
		switch {
		case ev.Type != "net.connect" || ev.Result == nil:
		case ev.Outcome == "abandoned":
			what += " (closed before connecting)"
		case *ev.Result == 0:
			what += " (connected)"
		}
	}
	if ev.Error != "" {
		what += " (" + ev.Error + ")"
	}
	if ev.Repeats > 0 {
		what += fmt.Sprintf(" (+%d opens folded since its last record)", ev.Repeats)
	}
	s := fmt.Sprintf("%s %-8.8s %-10s %-13s %s[%d] %s", ts, ev.Session, ev.Server, ev.Type, quoteValue(ev.Comm), ev.Pid, what)
	if ev.Action != "" {
		s += "  -> " + ev.Action + " (" + ev.Rule + ")"
	} else if ev.Rule != "" {
		s += "  (" + ev.Rule + ")"
	}
	if len(ev.InFlight) > 0 {
		s += "  during tools/call " + strings.Join(ev.InFlight, ",")
	}
	return printable(s) // one line, whatever paths and names the server chose
}
