package flow

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
)

// Applied is a [[flow]] rule that applies to a call: the rule, its index
// in the configuration, and the taint that made it apply.
type Applied struct {
	Index  int               `json:"rule"`
	From   string            `json:"from"`
	To     string            `json:"to"`
	Action config.FlowAction `json:"action"`
	When   config.FlowWhen   `json:"when"`
	Taint  Taint             `json:"taint"`
}

// Evidence is what the outgoing arguments carry: detector findings by
// detector, and strings seen in labelled results, by the label of their
// source.
type Evidence struct {
	Found   map[string]int `json:"found,omitempty"`
	Carried map[string]int `json:"carried,omitempty"` // label -> strings seen in its results
	// Unread: the request was too large to read whole (see
	// daemon's evidence); it may carry anything.
	Unread bool `json:"unread,omitempty"`
}

// Empty reports whether the request carries nothing the guard knows of,
// and was read whole.
func (e Evidence) Empty() bool { return len(e.Found) == 0 && len(e.Carried) == 0 && !e.Unread }

// carries reports whether the arguments carry data for a rule from label:
// a detector's finding, a string seen in a result labelled from, or
// what could not be read.
func (e Evidence) carries(from string) bool {
	return len(e.Found) > 0 || e.Carried[from] > 0 || e.Unread
}

// Rules returns the rules that apply to a call to a server with labels
// to, in run r, strongest first (the first decides).
func Rules(rules []config.Flow, r *Run, to []string, ev Evidence) []Applied {
	if r == nil || len(to) == 0 {
		return nil
	}
	var out []Applied
	for i, f := range rules {
		if !slices.Contains(to, f.To) {
			continue
		}
		t, ok := r.Tainted(f.From)
		if !ok {
			continue
		}
		when := f.When
		if when == "" {
			when = config.FlowTainted
		}
		if when == config.FlowCarries && !ev.carries(f.From) {
			continue
		}
		out = append(out, Applied{Index: i, From: f.From, To: f.To, Action: f.Action, When: when, Taint: t})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Action.Strength() > out[j].Action.Strength() })
	return out
}

// ReasonPrefix starts every explanation of a rule.
const ReasonPrefix = "flow rule"

// Explain says, for the agent and the user, why a rule applies: where
// the data came from, what it held, and what the call carries.
func (a Applied) Explain(ev Evidence) string {
	t := a.Taint
	var b strings.Builder
	fmt.Fprintf(&b, ReasonPrefix+" %q -> %q (%s): this agent run received %s data from server %s", a.From, a.To, a.Action, a.From, t.Server)
	what := map[Kind]string{ToolResult: "tool", Resource: "resource", Prompt: "prompt", Notification: "notification",
		TaskStatus: "task status", Request: "request", Reply: "reply to", ResourceList: "list"}[t.Kind]
	if t.Name != "" && what != "" {
		fmt.Fprintf(&b, " (%s %q at %s", what, t.Name, t.Time.Local().Format("15:04:05"))
		if len(t.Found) > 0 {
			fmt.Fprintf(&b, ", holding %s", api.Counts(t.Found))
		}
		b.WriteString(")")
	}
	if !ev.Empty() {
		b.WriteString("; it carries ")
		var parts []string
		if len(ev.Found) > 0 {
			parts = append(parts, api.Counts(ev.Found))
		}
		for _, l := range api.CountNames(ev.Carried) {
			parts = append(parts, fmt.Sprintf("%d string(s) seen in %s results", ev.Carried[l], l))
		}
		if ev.Unread {
			parts = append(parts, "more than mcpcage reads of one request (it may carry anything)")
		}
		b.WriteString(strings.Join(parts, " and "))
	}
	return b.String()
}
