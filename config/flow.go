package config

import (
	"fmt"
	"regexp"
	"slices"
)

// Flow is one rule of the data-flow guard ([[flow]]): once an agent run
// has received a result from a server labelled From, a request mcpcage
// decides (tools/call, prompts/get, resources/read...) to a server
// labelled To is decided by Action.
type Flow struct {
	From   string     `toml:"from"`
	To     string     `toml:"to"`
	Action FlowAction `toml:"action"`
	// When: FlowTainted ("" too) applies the rule to every such call;
	// FlowCarries only to calls whose arguments carry a detector's
	// finding or a string seen in a result from a From server.
	When FlowWhen `toml:"when"`
}

// FlowAction is what a [[flow]] rule does with a call it applies to.
type FlowAction string

// Flow actions, weakest first: when several rules apply, the strongest
// decides.
const (
	FlowLog    FlowAction = "log"    // forward it; record that the rule applied
	FlowRedact FlowAction = "redact" // replace what the detectors and fingerprints find in its arguments, then forward it
	FlowAsk    FlowAction = "ask"    // ask the user about this one call (denied when nobody can be asked)
	FlowDeny   FlowAction = "deny"   // refuse it
)

// Strength orders actions: the strongest applicable rule decides.
func (a FlowAction) Strength() int {
	return slices.Index([]FlowAction{FlowLog, FlowRedact, FlowAsk, FlowDeny}, a)
}

// FlowWhen says which calls a rule applies to.
type FlowWhen string

// Flow conditions.
const (
	FlowTainted FlowWhen = "tainted" // every call to a To server once the run is tainted (the default)
	FlowCarries FlowWhen = "carries" // only calls whose arguments carry sensitive or tainted data
)

// Detector is a user-defined content detector ([[detector]]): findings
// are reported as "custom:NAME".
type Detector struct {
	Name    string `toml:"name"`
	Pattern string `toml:"pattern"`
}

// OnSuspect is what happens when a server shows the model text that
// looks like a prompt injection (see package daemon/inject).
type OnSuspect string

// Reactions to a suspect influence.
const (
	SuspectLog        OnSuspect = "log"             // record it (the default)
	SuspectQuarantine OnSuspect = "quarantine-tool" // a suspect tool description hides the tool (quarantined until approved); a suspect result is recorded
	SuspectEndSession OnSuspect = "end-session"     // end the session
)

// Suspect returns the server's reaction to suspect influences.
func (s *Server) Suspect() OnSuspect {
	if s.OnSuspect == "" {
		return SuspectLog
	}
	return s.OnSuspect
}

// GuardOn reports whether the data-flow guard runs: only then are
// results and arguments scanned and the influence trail kept.
func (c *Config) GuardOn() bool {
	if len(c.Flows) > 0 || len(c.Detectors) > 0 {
		return true
	}
	for _, s := range c.Servers {
		if len(s.Labels) > 0 || s.OnSuspect != "" {
			return true
		}
	}
	return false
}

var labelName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,39}$`)

var detectorName = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)

// validateFlow checks the guard's keys.
func (c *Config) validateFlow(bad func(msg string, key ...string)) {
	labels := map[string]bool{}
	for _, name := range c.ServerNames() {
		s := c.Servers[name]
		for _, l := range s.Labels {
			if !labelName.MatchString(l) {
				bad(fmt.Sprintf("label %q: labels use lower-case letters, digits, '_', '.', '-' (at most 40)", l), "servers", name, "labels")
			}
			labels[l] = true
		}
		switch s.OnSuspect {
		case "", SuspectLog, SuspectQuarantine, SuspectEndSession:
		default:
			bad(fmt.Sprintf(`must be "log", "quarantine-tool" or "end-session", got %q`, s.OnSuspect), "servers", name, "on_suspect")
		}
	}
	for i, f := range c.Flows {
		key := fmt.Sprintf("flow[%d]", i)
		for _, l := range []struct{ k, v string }{{"from", f.From}, {"to", f.To}} {
			if !labelName.MatchString(l.v) {
				bad(fmt.Sprintf("%s must be a label, got %q", l.k, l.v), key, l.k)
			} else if !labels[l.v] {
				bad(fmt.Sprintf("no server has the label %q: add labels = [%q] to a [servers.NAME] table", l.v, l.v), key, l.k)
			}
		}
		if f.Action.Strength() < 0 {
			bad(fmt.Sprintf(`must be "deny", "ask", "redact" or "log", got %q`, f.Action), key, "action")
		}
		switch f.When {
		case "", FlowTainted, FlowCarries:
		default:
			bad(fmt.Sprintf(`must be "tainted" or "carries", got %q`, f.When), key, "when")
		}
	}
	seen := map[string]bool{}
	for i, d := range c.Detectors {
		key := fmt.Sprintf("detector[%d]", i)
		if !detectorName.MatchString(d.Name) {
			bad(fmt.Sprintf("name %q: use lower-case letters, digits and '_' (at most 40)", d.Name), key, "name")
		}
		if seen[d.Name] {
			bad(fmt.Sprintf("detector %q is defined twice", d.Name), key, "name")
		}
		seen[d.Name] = true
		re, err := regexp.Compile(d.Pattern)
		switch {
		case err != nil:
			bad(fmt.Sprintf("not a valid RE2 regular expression: %v", err), key, "pattern")
		case matchesEmpty(re):
			bad("can match an empty string (as `x*`, `\\b` or `^` do): it would match everywhere", key, "pattern")
		}
	}
}

// matchesEmpty reports whether re matches an empty string in ordinary
// texts: alone, or at a position inside one (`\b`, `(?m)^`).
func matchesEmpty(re *regexp.Regexp) bool {
	for _, probe := range []string{"", "x", " x-1 ", "\n", "word\nword", "a_b.c@d"} {
		for _, m := range re.FindAllStringIndex(probe, -1) {
			if m[0] == m[1] {
				return true
			}
		}
	}
	return false
}
