package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
)

func whyCommand(socket *string, stdout io.Writer) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "why CALL_ID",
		Short: "Show under what influence a tool call was made: what the agent had seen, from which server, and which rules fired",
		Long: `Why prints the chain behind one tools/call, from its tool.call record in
the audit log: the decision and its reason, the data-flow rules that
applied, the labels whose data had reached the agent run and where from,
what the call's arguments carried, and what the agent had received in
that run before the call (results, resources, prompts, tool lists: each
with its server, time, size, digest, labels and detector findings).

CALL_ID is the "call" of a tool.call record (mcpcage audit --type
tool.call --json) and is named in the data-flow guard's denials. The
trail is kept while the data-flow guard runs (see [[flow]] in the
configuration). Users see their own calls; root and the admin group all.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := findCall(*socket, args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(stdout, rec)
			}
			w := bufio.NewWriter(stdout)
			printWhy(w, rec)
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the call's tool.call record as stored")
	return cmd
}

// findCall returns the tool.call record of call id.
func findCall(socket, id string) (map[string]any, error) {
	c, err := api.Dial(api.SocketPath(socket))
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Do(api.Request{Op: api.OpAudit, Audit: &api.AuditQuery{Call: id, Type: string(api.RecordToolCall)}})
	if err != nil {
		return nil, err
	}
	if !r.OK {
		return nil, errors.New(r.Error)
	}
	var found map[string]any
	var lines lineJoiner
	for {
		t, payload, err := c.R.Next()
		if err != nil {
			break // the daemon closes the stream after the history
		}
		if t != api.FrameStdout {
			continue
		}
		lines.feed(payload, func(line []byte) {
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil {
				found = rec
			}
		})
	}
	if found == nil {
		return nil, fmt.Errorf("no tool call %q in the audit log you may read: call ids are in tool.call records (mcpcage audit --type tool.call --json) and in the data-flow guard's denials", id)
	}
	return found, nil
}

// whyRecord is the part of a tool.call record mcpcage why prints.
type whyRecord struct {
	Time     string `json:"time"`
	Call     string `json:"call"`
	Tool     string `json:"tool"`
	Server   string `json:"server"`
	Agent    string `json:"agent"`
	User     string `json:"user"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Consent  string `json:"consent"`
	Flow     *struct {
		Run        string `json:"run"`
		Action     string `json:"action"`
		Reason     string `json:"reason"`
		Asked      bool   `json:"asked"`
		Influences []struct {
			ID      string         `json:"id"`
			Time    time.Time      `json:"time"`
			Server  string         `json:"server"`
			Kind    string         `json:"kind"`
			Name    string         `json:"name"`
			Call    string         `json:"call"`
			Size    int            `json:"size"`
			Digest  string         `json:"digest"`
			Labels  []string       `json:"labels"`
			Found   map[string]int `json:"found"`
			Suspect []string       `json:"suspect"`
		} `json:"influences"`
		Rules []struct {
			Index  int    `json:"rule"`
			From   string `json:"from"`
			To     string `json:"to"`
			Action string `json:"action"`
			When   string `json:"when"`
			Taint  struct {
				Server    string         `json:"server"`
				Influence string         `json:"influence"`
				Kind      string         `json:"kind"`
				Name      string         `json:"name"`
				Call      string         `json:"call"`
				Time      time.Time      `json:"time"`
				Found     map[string]int `json:"found"`
			} `json:"taint"`
		} `json:"rules"`
		Evidence struct {
			Found   map[string]int `json:"found"`
			Carried map[string]int `json:"carried"`
		} `json:"evidence"`
		Redacted map[string]int `json:"redacted"`
	} `json:"flow"`
}

func printWhy(w *bufio.Writer, rec map[string]any) {
	b, _ := json.Marshal(rec)
	var r whyRecord
	_ = json.Unmarshal(b, &r)
	fmt.Fprintf(w, "call %s: tools/call %q of server %s by agent %s for user %s at %s\n", r.Call, r.Tool, r.Server, r.Agent, r.User, localTime(r.Time))
	switch r.Decision {
	case "allow":
		fmt.Fprintf(w, "  decision: allowed by consent %s\n", r.Consent)
	default:
		fmt.Fprintf(w, "  decision: %s: %s\n", r.Decision, r.Reason)
	}
	f := r.Flow
	if f == nil {
		fmt.Fprintln(w, "  no influence trail: the data-flow guard was off (configure [[flow]] rules, [[detector]]s or server labels)")
		return
	}
	fmt.Fprintf(w, "  agent run: %s\n", f.Run)
	if len(f.Rules) == 0 {
		fmt.Fprintln(w, "  flow rules: none applied")
	}
	for _, ru := range f.Rules {
		t := ru.Taint
		fmt.Fprintf(w, "  flow rule %d: %s -> %s, action %s (%s)\n", ru.Index, ru.From, ru.To, ru.Action, ru.When)
		fmt.Fprintf(w, "    because the run received %s data from server %s: %s %q", ru.From, t.Server, t.Kind, t.Name)
		if t.Call != "" {
			fmt.Fprintf(w, " (call %s)", t.Call)
		}
		fmt.Fprintf(w, " at %s", t.Time.Local().Format("15:04:05"))
		if len(t.Found) > 0 {
			fmt.Fprintf(w, ", holding %s", counts(t.Found))
		}
		fmt.Fprintf(w, " [influence %s]\n", t.Influence)
	}
	if f.Action != "" {
		what := f.Action
		if f.Asked {
			what += " (the user was asked)"
		}
		fmt.Fprintf(w, "  guard's action: %s\n", what)
	}
	if len(f.Evidence.Found) > 0 || len(f.Evidence.Carried) > 0 {
		var parts []string
		if len(f.Evidence.Found) > 0 {
			parts = append(parts, counts(f.Evidence.Found))
		}
		for _, l := range sortedKeys(f.Evidence.Carried) {
			parts = append(parts, fmt.Sprintf("%d string(s) seen in %s results", f.Evidence.Carried[l], l))
		}
		fmt.Fprintf(w, "  the arguments carried: %s\n", strings.Join(parts, "; "))
	}
	if len(f.Redacted) > 0 {
		fmt.Fprintf(w, "  redacted before forwarding: %s\n", counts(f.Redacted))
	}
	if len(f.Influences) == 0 {
		fmt.Fprintln(w, "  the agent had received nothing in this run before the call")
		return
	}
	fmt.Fprintln(w, "  what the agent had received in this run before the call (oldest first):")
	for _, in := range f.Influences {
		line := fmt.Sprintf("    %s  %-12s %-11s", in.Time.Local().Format("15:04:05.000"), in.Server, in.Kind)
		if in.Name != "" {
			line += fmt.Sprintf(" %q", in.Name)
		}
		if in.Call != "" {
			line += " call " + in.Call
		}
		line += fmt.Sprintf("  %d B  %.19s", in.Size, in.Digest)
		if len(in.Labels) > 0 {
			line += "  labels " + strings.Join(in.Labels, ",")
		}
		if len(in.Found) > 0 {
			line += "  found " + counts(in.Found)
		}
		if len(in.Suspect) > 0 {
			line += "  SUSPECT " + strings.Join(in.Suspect, ",")
		}
		fmt.Fprintln(w, line)
	}
}

func localTime(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
