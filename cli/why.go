package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
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
			calls, err := auditRecords(*socket, api.AuditQuery{Call: args[0], Type: string(api.RecordToolCall)})
			if err != nil {
				return err
			}
			if len(calls) == 0 {
				return fmt.Errorf("no tool call %q in the audit log you may read: call ids are in tool.call records (mcpcage audit --type tool.call --json) and in the data-flow guard's denials", args[0])
			}
			rec := calls[len(calls)-1]
			var run string
			var influences []uint64
			if r := whyOf(rec); r.Flow != nil {
				run, influences = r.Flow.Run, r.Flow.Influences
			}
			var seen []map[string]any
			if run != "" {
				all, err := auditRecords(*socket, api.AuditQuery{Run: run, Type: string(api.RecordInfluence)})
				if err != nil {
					return err
				}
				seen = received(all, run, influences)
			}
			if jsonOut {
				return writeJSON(stdout, map[string]any{"call": rec, "influences": nonNil(seen)})
			}
			_, err = io.WriteString(stdout, renderWhy(rec, seen))
			return err
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, `print {"call": its tool.call record, "influences": the influence records it names}`)
	return cmd
}

// whyOf reads the part of a tool.call record mcpcage why prints.
func whyOf(rec map[string]any) whyRecord {
	var r whyRecord
	b, _ := json.Marshal(rec)
	_ = json.Unmarshal(b, &r)
	return r
}

// renderWhy is the text of mcpcage why. Every string of the records is
// escaped on its own (printable: a newline too), since clients and
// servers chose them, before it is put in a line: a tool name or a reason
// cannot end its line and forge the next.
func renderWhy(call map[string]any, seen []map[string]any) string {
	esc := make([]map[string]any, len(seen))
	for i, rec := range seen {
		esc[i], _ = escapeStrings(rec).(map[string]any)
	}
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	rec, _ := escapeStrings(call).(map[string]any)
	printWhy(w, whyOf(rec), esc)
	_ = w.Flush() // a bytes.Buffer takes every write
	return out.String()
}

// escapeStrings is v (decoded JSON) with printable applied to every
// string and map key in it.
func escapeStrings(v any) any {
	switch v := v.(type) {
	case string:
		return printable(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[printable(k)] = escapeStrings(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = escapeStrings(x)
		}
		return out
	}
	return v
}

// auditRecords returns the audit records q selects, oldest first.
func auditRecords(socket string, q api.AuditQuery) ([]map[string]any, error) {
	c, err := api.Dial(api.SocketPath(socket))
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Do(api.Request{Op: api.OpAudit, Audit: &q})
	if err != nil {
		return nil, err
	}
	if !r.OK {
		return nil, errors.New(r.Error)
	}
	var out []map[string]any
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
			if rec, err := audit.ParseRecord(line); err == nil {
				out = append(out, rec)
			}
		})
	}
	return out, nil
}

// received picks, from a run's influence records, those a call names
// (by their number in the run), oldest first.
func received(all []map[string]any, run string, seqs []uint64) []map[string]any {
	want := map[string]bool{}
	for _, n := range seqs {
		want[fmt.Sprintf("%s#%d", run, n)] = true
	}
	var out []map[string]any
	for _, rec := range all {
		if id, _ := rec["influence"].(string); want[id] {
			out = append(out, rec)
			delete(want, id) // one record per influence
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return fmt.Sprint(out[i]["time"]) < fmt.Sprint(out[j]["time"]) })
	return out
}

func nonNil(s []map[string]any) []map[string]any {
	if s == nil {
		return []map[string]any{}
	}
	return s
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
		Run        string   `json:"run"`
		Action     string   `json:"action"`
		Reason     string   `json:"reason"`
		Asked      bool     `json:"asked"`
		Influences []uint64 `json:"influences"`
		Rules      []struct {
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

// influenceRecord is the part of an influence record mcpcage why prints.
type influenceRecord struct {
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
}

func printWhy(w *bufio.Writer, r whyRecord, seen []map[string]any) {
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
			fmt.Fprintf(w, ", holding %s", api.Counts(t.Found))
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
			parts = append(parts, api.Counts(f.Evidence.Found))
		}
		for _, l := range api.CountNames(f.Evidence.Carried) {
			parts = append(parts, fmt.Sprintf("%d string(s) seen in %s results", f.Evidence.Carried[l], l))
		}
		fmt.Fprintf(w, "  the arguments carried: %s\n", strings.Join(parts, "; "))
	}
	if len(f.Redacted) > 0 {
		fmt.Fprintf(w, "  redacted before forwarding: %s\n", api.Counts(f.Redacted))
	}
	if len(f.Influences) == 0 {
		fmt.Fprintln(w, "  the agent had received nothing in this run before the call")
		return
	}
	fmt.Fprintln(w, "  what the agent had received in this run before the call (oldest first):")
	if missing := len(f.Influences) - len(seen); missing > 0 {
		fmt.Fprintf(w, "    (%d of the %d influences it names are no longer in the audit log's files)\n", missing, len(f.Influences))
	}
	for _, rec := range seen {
		var in influenceRecord
		b, _ := json.Marshal(rec)
		_ = json.Unmarshal(b, &in)
		line := fmt.Sprintf("    %s  %-12s %-11s", in.Time.Local().Format("15:04:05.000"), in.Server, in.Kind)
		if in.Name != "" {
			line += fmt.Sprintf(" %q", in.Name)
		}
		if in.Call != "" {
			line += " call " + in.Call
		}
		line += fmt.Sprintf("  %d B  %.24s", in.Size, in.Digest) // the prefix and 12 hex digits
		if len(in.Labels) > 0 {
			line += "  labels " + strings.Join(in.Labels, ",")
		}
		if len(in.Found) > 0 {
			line += "  found " + api.Counts(in.Found)
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
