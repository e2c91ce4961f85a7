package daemon

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/detect"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/inject"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// The data-flow guard: what servers show the agent becomes the agent
// run's influence trail (and taints the run with the server's labels);
// calls to labelled servers are decided by the [[flow]] rules. It runs
// only when the configuration asks for it (config.GuardOn).

// guardConfig is the guard of one configuration.
type guardConfig struct {
	cfg *config.Config
	set *detect.Set // nil: the guard is off
}

// guard returns the guard of the current configuration, nil when off.
func (d *Daemon) guard() *guardConfig {
	c := d.conf()
	if g := d.guards.Load(); g != nil && g.cfg == c {
		if g.set == nil {
			return nil
		}
		return g
	}
	g := &guardConfig{cfg: c}
	if c.GuardOn() {
		custom := make([]detect.Custom, 0, len(c.Detectors))
		for _, dt := range c.Detectors {
			one := detect.Custom{Name: dt.Name, Pattern: dt.Pattern}
			if _, err := detect.New([]detect.Detector{}, []detect.Custom{one}); err != nil {
				// The configuration's check lets few through; the rest run.
				d.log.Error("custom detector not used", "detector", dt.Name, "err", err)
				continue
			}
			custom = append(custom, one)
		}
		set, err := detect.New(nil, custom)
		if err != nil {
			d.log.Error("custom detectors not used: only the built-in ones run", "err", err)
			set, _ = detect.New(nil, nil)
		}
		g.set = set
	}
	d.guards.Store(g)
	if g.set == nil {
		return nil
	}
	return g
}

// sweepRuns forgets the agent runs whose client process is gone.
func (d *Daemon) sweepRuns(ctx context.Context) {
	every(ctx, 30*time.Second, func() bool {
		if n := d.runs.Sweep(identity.Alive); n > 0 {
			d.log.Debug("agent runs ended", "count", n)
		}
		return false
	})
}

// Bounds of the guard's work on one message.
const (
	maxGuardScan     = 1 << 20 // bytes of strings scanned per message
	maxGuardTokens   = 256     // fingerprints taken from one result
	maxSuspectsShown = 4       // influence.suspect records per influence
)

// jsonStrings calls fn with the strings of a JSON document, decoded:
// member names, string values and numbers (as written). It reads at most
// the first max bytes of the document; complete reports whether it read
// the whole document, every string to its end and every bracket closed.
// Documents here passed the wire layer's check (valid JSON); anything
// else is read as far as it goes and is not complete. (A hand-written
// walk: encoding/json's Decoder.Token cost a tenth of a guarded call.)
func jsonStrings(doc []byte, max int, fn func(string)) (complete bool) {
	return jsonWalk(doc, max, func(str string, _ bool) { fn(str) })
}

// jsonWalk is jsonStrings, and tells fn which strings are member names.
func jsonWalk(doc []byte, max int, fn func(str string, name bool)) (complete bool) {
	complete = true
	if len(doc) > max {
		doc, complete = doc[:max], false
	}
	depth := 0
	for i := 0; i < len(doc); {
		switch c := doc[i]; {
		case c == '"':
			j, escaped := i+1, false
			for j < len(doc) && doc[j] != '"' {
				if doc[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			if j >= len(doc) {
				return false // cut inside a string
			}
			k := j + 1
			for k < len(doc) && strings.IndexByte(" \t\r\n", doc[k]) >= 0 {
				k++
			}
			name := k < len(doc) && doc[k] == ':'
			if !escaped {
				if j > i+1 {
					fn(string(doc[i+1:j]), name)
				}
			} else {
				var str string
				if json.Unmarshal(doc[i:j+1], &str) != nil {
					return false
				}
				if str != "" {
					fn(str, name)
				}
			}
			i = j + 1
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(doc) && strings.IndexByte("+-.eE0123456789", doc[j]) >= 0 {
				j++
			}
			num := string(doc[i:j])
			fn(num, false)
			if n, ok := integerForm(num); ok {
				fn(n, false) // 4.111111111111111e15 is a card number to a server reading doubles
			}
			i = j
		case c == '{' || c == '[':
			depth++
			i++
		case c == '}' || c == ']':
			depth--
			i++
		default: // whitespace, ':', ',', true, false, null
			i++
		}
	}
	return complete && depth == 0
}

// integerForm is a number written with a fraction or an exponent,
// written as the integer it is (4111111111111111e0, 5.12448392e8) or,
// when it is not one, as the integer a server that reads doubles holds
// (4111111111111110.9999 and 41111111111111109999e-4 are the double
// 4111111111111111); false when it is neither, is written plainly
// already, or is too large to matter.
func integerForm(num string) (string, bool) {
	if !strings.ContainsAny(num, ".eE") {
		return "", false
	}
	// big.Rat may read it: it is short and its exponent small. A longer
	// number (padded: 4111111111111110. and sixty 9s) is still read as
	// the double it rounds to, which ParseFloat does at any length.
	exact := len(num) <= 64
	if k := strings.IndexAny(num, "eE"); exact && k >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(num[k+1:], "+"))
		exact = err == nil && exp <= 40 && exp >= -40
	}
	if exact {
		var r big.Rat
		if _, ok := r.SetString(num); ok && r.IsInt() {
			return r.Num().String(), true
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v != math.Trunc(v) || math.Abs(v) > maxExactDouble {
		return "", false
	}
	return strconv.FormatFloat(v, 'f', -1, 64), true
}

// maxExactDouble is 2^53: every integer up to it is a double, exactly.
const maxExactDouble = 1 << 53

// scanned is what the guard found in one message.
type scanned struct {
	found    map[string]int
	suspects []inject.Match
	tokens   []string
	// words: a string value (not a member name, not a number) with a
	// letter in it. A labelled server's words are its data, though no
	// detector knows them and they hold no token.
	words bool
}

// scan reads a result or a list for the trail: its first maxGuardScan
// bytes (what lies beyond is not scanned).
func (g *guardConfig) scan(doc []byte, fingerprint bool) scanned {
	var sc scanned
	jsonWalk(doc, maxGuardScan, func(str string, name bool) {
		if !sc.words && !name && strings.IndexFunc(str, unicode.IsLetter) >= 0 {
			sc.words = true
		}
		for _, f := range g.set.Scan(str) {
			if sc.found == nil {
				sc.found = map[string]int{}
			}
			sc.found[string(f.Detector)]++
		}
		if len(sc.suspects) < inject.MaxMatches {
			sc.suspects = append(sc.suspects, inject.Scan(str)...)
		}
		if fingerprint && len(sc.tokens) < maxGuardTokens {
			sc.tokens = append(sc.tokens, detect.Tokens(str)...)
		}
	})
	if len(sc.tokens) > maxGuardTokens {
		sc.tokens = sc.tokens[:maxGuardTokens]
	}
	return sc
}

// influence records what a server showed the agent: a result, resource
// contents, a prompt, a tool list. It returns the influence ("" ID when
// the guard is off) and the suspect matches found in it.
func (p *sessionPolicy) influence(k flow.Kind, name, call string, body []byte) (flow.Influence, []inject.Match) {
	g := p.d.guard()
	if g == nil || p.s.run == nil {
		return flow.Influence{}, nil
	}
	return p.recordInfluence(k, name, call, body, g.scan(body, len(p.srv.Labels) > 0 && !k.Listing()))
}

// maxPassing bounds the notifications, task statuses and replies of a session
// that are recorded (the run is tainted by the first of a labelled
// server's; their fingerprints stop there). Past it a suspect one is
// still withheld, and a log line says the rest go unrecorded.
const maxPassing = 1000

// passingInfluence follows what a server says in passing, often and
// briefly (a notification, a task's status, a reply): scanned always, but on the
// run's trail and in the audit log only when it carries something (a
// finding, a suspect match, or a labelled server's words), is not the
// same as the last one recorded under its name (a task polled every
// second), and the session has recorded fewer than maxPassing, so that
// a flood of progress messages neither pushes results off the trail nor
// fills the log. Task statuses are not fingerprinted: their ids are not
// data. It returns why it is withheld, as suspect does.
func (p *sessionPolicy) passingInfluence(k flow.Kind, name, tool string, body []byte) string {
	g := p.d.guard()
	if g == nil || p.s.run == nil {
		return ""
	}
	labelled := len(p.srv.Labels) > 0
	sc := g.scan(body, labelled && k != flow.TaskStatus)
	// A labelled server's words are its data, token or not (found by a
	// red-team helper: only a token or a finding was recorded, so a
	// confidential server's log message in plain words tainted nothing).
	if len(sc.found) == 0 && len(sc.suspects) == 0 && !(labelled && (sc.words || len(sc.tokens) > 0)) {
		return ""
	}
	digest := p.s.digests.Bytes(body)
	p.mu.Lock()
	repeated := p.lastPassing.m[name] == digest
	if !repeated {
		p.lastPassing.put(name, digest)
	}
	p.mu.Unlock()
	if repeated || p.passing.Add(1) > maxPassing {
		if p.passing.Load() == maxPassing+1 {
			p.s.log.Warn("notifications, task statuses and replies of this session are no longer recorded", "recorded", maxPassing)
		}
		if len(sc.suspects) > 0 && p.srv.Suspect() != config.SuspectLog {
			return p.suspectWhat(k, name, tool, sc.suspects) + ", as one recorded before"
		}
		return ""
	}
	in, suspects := p.recordInfluence(k, name, "", body, sc)
	return p.suspect(in, tool, suspects)
}

// recordInfluence puts what the scan sc of body found on the run's trail
// and in the audit log, and taints the run with the server's labels.
func (p *sessionPolicy) recordInfluence(k flow.Kind, name, call string, body []byte, sc scanned) (flow.Influence, []inject.Match) {
	s := p.s
	labels := p.srv.Labels
	in := flow.Influence{Time: time.Now(), Server: s.server, Session: s.id, Kind: k, Name: name, Call: call,
		Size: len(body), Digest: p.s.digests.Bytes(body), Labels: labels, Found: sc.found, Suspect: suspectRules(sc.suspects)}
	tainted := s.run.Taints()
	in = s.run.Record(in, sc.tokens)
	var content any // only with audit_arguments = "full", injected secrets scrubbed as in arguments
	if mode := p.d.conf().Daemon.AuditArguments; mode == config.AuditArgsFull && len(body) <= maxDecodedForRecord {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			content = audit.Arguments(m, string(mode), p.secretValues())
		}
	}
	p.d.audit.AppendAsync(s.influenceRecord(in, content))
	agent := metrics.Agent(s.agent)
	for det, n := range in.Found {
		p.d.metrics.DetectorHits.WithLabelValues(agent, s.serverLabel, det, "result").Add(float64(n))
	}
	if !k.Listing() {
		for _, l := range labels {
			if hadTaint(tainted, l) {
				continue
			}
			if t, ok := s.run.Tainted(l); ok && t.Influence == in.ID {
				p.d.metrics.FlowTaints.WithLabelValues(agent, s.serverLabel, l).Inc()
				p.d.audit.AppendAsync(s.taintRecord(t))
				s.log.Info("agent run tainted", "label", l, "run", s.run.Key, "kind", string(k), "name", name, "found", api.Counts(in.Found))
			}
		}
	}
	return in, sc.suspects
}

func hadTaint(ts []flow.Taint, label string) bool {
	for _, t := range ts {
		if t.Label == label {
			return true
		}
	}
	return false
}

// suspectRules lists the heuristics that matched, once each.
func suspectRules(ms []inject.Match) []string {
	var out []string
	for _, r := range inject.Rules(ms) {
		out = append(out, string(r))
	}
	return out
}

// suspect acts on a suspect influence as the server's on_suspect says:
// it records it; unless on_suspect is "log", the agent is not shown what
// was suspect, and "quarantine-tool" keeps tool (when set) from the rest
// of the session, "end-session" ends it. It returns why the suspect
// content is withheld ("" when it is shown).
func (p *sessionPolicy) suspect(in flow.Influence, tool string, ms []inject.Match) string {
	if len(ms) == 0 {
		return ""
	}
	s := p.s
	action := p.srv.Suspect()
	prio := audit.Decision
	if action == config.SuspectEndSession {
		prio = audit.Essential // what ended the session, a few records at most
	}
	for i, m := range ms {
		if i == maxSuspectsShown {
			break
		}
		p.d.metrics.InfluenceSuspect.WithLabelValues(metrics.Agent(s.agent), s.serverLabel, string(m.Rule)).Inc()
		m.Excerpt = p.safeExcerpt(m)
		p.d.audit.Enqueue(s.suspectRecord(in, tool, m, action), prio)
	}
	what := p.suspectWhat(in.Kind, in.Name, tool, ms)
	s.log.Warn("suspect influence", "kind", string(in.Kind), "tool", tool, "rules", suspectRules(ms), "on_suspect", string(action))
	switch action {
	case config.SuspectQuarantine:
		if tool != "" {
			p.mu.Lock()
			if p.suspectTools == nil {
				p.suspectTools = map[string]string{}
			}
			if len(p.suspectTools) < maxSuspectTools {
				p.suspectTools[tool] = what
			}
			p.mu.Unlock()
		}
	case config.SuspectEndSession:
		s.suspectEnd.Store(what)
		s.stopForPolicy()
	default:
		return ""
	}
	return what + "; on_suspect = \"" + string(action) + "\" withheld it (`mcpcage audit --type influence.suspect` shows the matched text)"
}

// queryValue is a URL query value, hidden in excerpts of
// exfiltration URLs: the data the URL would carry.
var queryValue = regexp.MustCompile(`([?&][^=&\s]*=)[^&\s#"'<>)\]]+`)

// safeExcerpt is the span of a suspect match as the audit log keeps it:
// none with audit_arguments = "digest"; otherwise with what the detectors
// find, the secrets mcpcage injects and a URL's query values replaced.
func (p *sessionPolicy) safeExcerpt(m inject.Match) string {
	mode := p.d.conf().Daemon.AuditArguments
	if mode == config.AuditArgsDigest {
		return ""
	}
	ex := m.Excerpt
	if g := p.d.guard(); g != nil {
		ex = detect.Redact(ex, g.set.Scan(ex))
	}
	for _, sec := range p.secretValues() {
		if sec != "" {
			ex = strings.ReplaceAll(ex, sec, "[redacted]")
		}
	}
	if m.Rule == inject.ExfiltrationURL {
		ex = queryValue.ReplaceAllString(ex, "${1}…")
	}
	return ex
}

// maxSuspectTools bounds the tools one session keeps quarantined (a
// server's tool list is bounded by max_message_bytes; this bounds what
// is remembered across lists).
const maxSuspectTools = 4096

// suspectWhat says what of the session's server looks like a prompt
// injection, and by which rules.
func (p *sessionPolicy) suspectWhat(k flow.Kind, name, tool string, ms []inject.Match) string {
	return fmt.Sprintf("%s of server %s looks like a prompt injection (%s)", describeInfluence(k, name, tool), p.s.server, strings.Join(suspectRules(ms), ", "))
}

// describeInfluence names what was suspect, for people (name: the
// influence's name, the request a reply answers).
func describeInfluence(k flow.Kind, name, tool string) string {
	switch k {
	case flow.Reply:
		if name == "" {
			return "its reply to a request"
		}
		return fmt.Sprintf("its reply to %s", name)
	case flow.ToolList:
		return fmt.Sprintf("the definition of tool %q", tool)
	case flow.PromptList, flow.ResourceList, flow.ResourceTemplates:
		return "an item of a list"
	case flow.ServerInfo:
		return "the server's instructions"
	case flow.Completion:
		return "a completion"
	case flow.ToolResult:
		return fmt.Sprintf("a result of tool %q", tool)
	case flow.Resource:
		return "a resource's contents"
	case flow.Notification:
		return "a notification"
	case flow.Request:
		return "a request it made of the client"
	case flow.TaskStatus:
		if tool != "" {
			return fmt.Sprintf("the status of a task of tool %q", tool)
		}
		return "a task's status"
	}
	return "a prompt"
}

// suspectReason says why a tool is refused after a suspect influence
// ("" when it is not).
func (p *sessionPolicy) suspectReason(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if what, ok := p.suspectTools[name]; ok {
		return what + "; on_suspect = \"quarantine-tool\" keeps the tool from this session"
	}
	return ""
}

// flowOutcome is what the guard decided about an outgoing call.
type flowOutcome struct {
	applied  []flow.Applied
	ev       flow.Evidence
	action   config.FlowAction // of the strongest rule; "" when none applies
	reason   string            // the strongest rule's explanation
	redacted map[string]int    // what redaction replaced, by detector
	trail    []uint64          // what the agent had received before the call (numbers in the run)
	asked    bool              // the user allowed this call when asked (flow ask)
	call     string            // the call's id (tools/call)
}

// flowReasonPrefix starts a denial the data-flow guard decided.
const flowReasonPrefix = flow.ReasonPrefix

// maxTrailInRecord bounds the influences a tool.call record names.
const maxTrailInRecord = flow.RecentMax + flow.FlaggedMax

// flowCheck runs the guard on an outgoing request mcpcage decides
// (tools/call, prompts/get, resources/read and subscribe,
// completion/complete): what its params carry (names, URIs and _meta
// too), which rules apply. When the strongest rule redacts, newParams are
// the params to forward instead (nil: unchanged); what cannot be
// redacted turns the rule's action into deny.
func (p *sessionPolicy) flowCheck(params []byte) (fo *flowOutcome, newParams []byte) {
	g := p.d.guard()
	s := p.s
	if g == nil || s.run == nil {
		return nil, nil
	}
	fo = &flowOutcome{trail: s.run.TrailSeqs()}
	fo.ev = p.evidence(g, params)
	agent := metrics.Agent(s.agent)
	for det, n := range fo.ev.Found {
		p.d.metrics.DetectorHits.WithLabelValues(agent, s.serverLabel, det, "arguments").Add(float64(n))
	}
	fo.applied = flow.Rules(g.cfg.Flows, s.run, p.srv.Labels, fo.ev)
	if len(fo.applied) == 0 {
		return fo, nil
	}
	top := fo.applied[0]
	fo.action, fo.reason = top.Action, top.Explain(fo.ev)
	p.d.metrics.FlowDecisions.WithLabelValues(agent, s.serverLabel, string(top.Action)).Inc()
	if top.Action != config.FlowRedact {
		return fo, nil
	}
	if fo.ev.Unread {
		// It is refused whatever redaction would make of it (the check
		// below), so it is not decoded for it (found by a red-team helper:
		// 60 MiB of params took 1.5 GiB to redact, only to be refused).
		fo.action = config.FlowDeny
		fo.reason += fmt.Sprintf("; mcpcage could not redact the request (it is larger than the guard reads whole: %d KiB of params, a string over %d KiB, or more findings than one scan returns), so it is refused", maxGuardScan>>10, detect.MaxScan>>10)
		return fo, nil
	}
	np, redacted, err := p.redactParams(g, params, top.From)
	if err == nil {
		after := params
		if len(redacted) > 0 {
			after = np
		}
		switch left := p.evidence(g, after); {
		case left.Unread:
			err = fmt.Errorf("it is larger than the guard reads whole (%d KiB of params, a string over %d KiB, or more findings than one scan returns)", maxGuardScan>>10, detect.MaxScan>>10)
		case !left.Empty():
			err = errors.New("it carries sensitive or tainted data outside its arguments' values (in a name, a URI, _meta or a number), which cannot be redacted")
		}
	}
	switch {
	case err != nil:
		fo.action = config.FlowDeny
		fo.reason += "; mcpcage could not redact the request (" + err.Error() + "), so it is refused"
	case len(redacted) > 0:
		fo.redacted = redacted
		newParams = np
	}
	return fo, newParams
}

// evidence is what a request's params carry (every string and number,
// decoded): detector findings, and strings seen in labelled results of
// the run. Params too large to read whole (over maxGuardScan, a string
// over detect.MaxScan, more findings or fingerprinted strings than one
// scan returns) are Unread: rules then treat them as carrying data.
func (p *sessionPolicy) evidence(g *guardConfig, params []byte) flow.Evidence {
	var ev flow.Evidence
	complete := jsonStrings(params, maxGuardScan, func(str string) {
		if len(str) > detect.MaxScan {
			ev.Unread = true
		}
		fs := g.set.Scan(str)
		if len(fs) >= detect.MaxFindings {
			ev.Unread = true
		}
		for _, f := range fs {
			if ev.Found == nil {
				ev.Found = map[string]int{}
			}
			ev.Found[string(f.Detector)]++
		}
		cs, whole := p.s.run.Carries(str)
		if !whole {
			ev.Unread = true
		}
		for _, c := range cs {
			for _, l := range c.Labels {
				if ev.Carried == nil {
					ev.Carried = map[string]int{}
				}
				ev.Carried[l]++
			}
		}
	})
	ev.Unread = ev.Unread || !complete
	return ev
}

// errKeyFinding: a finding in a member name cannot be redacted.
var errKeyFinding = errors.New("an argument's name holds sensitive data")

// redactParams replaces what the detectors find, and strings seen in
// labelled results (named "seen_in_" and the rule's from label), in the
// string values of params.arguments. It returns the new params and what
// was replaced (nothing: nil params).
func (p *sessionPolicy) redactParams(g *guardConfig, params []byte, from string) ([]byte, map[string]int, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(params, &obj); err != nil {
		return nil, nil, err
	}
	raw, ok := obj["arguments"]
	if !ok {
		return nil, nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("trailing data after the arguments")
	}
	counts := map[string]int{}
	var keyErr error
	redactString := func(str string) string {
		fs := g.set.Scan(str)
		cs, _ := p.s.run.Carries(str) // what is not read whole was refused by evidence
		for _, c := range cs {
			label := c.Labels[0]
			if slices.Contains(c.Labels, from) {
				label = from
			}
			fs = append(fs, detect.Finding{Detector: detect.Detector("seen_in_" + label), Start: c.Start, End: c.End})
		}
		fs = nonOverlapping(fs)
		for _, f := range fs {
			counts[string(f.Detector)]++
		}
		return detect.Redact(str, fs)
	}
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case string:
			return redactString(t)
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
		case map[string]any:
			for k, val := range t {
				if redactString(k) != k {
					keyErr = errKeyFinding
				}
				t[k] = walk(val)
			}
		}
		return x
	}
	v = walk(v)
	if keyErr != nil {
		return nil, nil, keyErr
	}
	if len(counts) == 0 {
		return nil, nil, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, nil, err
	}
	obj["arguments"] = bytes.TrimRight(buf.Bytes(), "\n")
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	return out, counts, nil
}

// nonOverlapping sorts findings and drops those that overlap an earlier
// one.
func nonOverlapping(fs []detect.Finding) []detect.Finding {
	if len(fs) < 2 {
		return fs
	}
	sortFindings(fs)
	out := fs[:1]
	for _, f := range fs[1:] {
		if f.Start < out[len(out)-1].End {
			continue
		}
		out = append(out, f)
	}
	return out
}

func sortFindings(fs []detect.Finding) {
	slices.SortFunc(fs, func(a, b detect.Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return b.End - a.End // the longer first
	})
}

// flowFields are what a tool.call record says of the guard. The
// influences are named by their number in the run: each has its own
// influence record (mcpcage why joins them), so a call's record stays
// small however much the agent had seen.
func (fo *flowOutcome) fields(run string) map[string]any {
	seqs := fo.trail
	if len(seqs) > maxTrailInRecord {
		seqs = seqs[len(seqs)-maxTrailInRecord:]
	}
	m := map[string]any{"run": run, "influences": seqs}
	if !fo.ev.Empty() {
		m["evidence"] = fo.ev
	}
	if len(fo.applied) > 0 {
		m["rules"] = fo.applied
		m["action"] = string(fo.action)
		m["reason"] = fo.reason
	}
	if len(fo.redacted) > 0 {
		m["redacted"] = fo.redacted
	}
	if fo.asked {
		m["asked"] = true
	}
	return m
}

// askFlow puts a call a [[flow]] rule asks about to the user, in the
// client: this one call, once or not at all. A client that cannot be
// asked (no form elicitation, the 2026-07-28 era, a batch) gets a denial
// that says so.
func (p *sessionPolicy) askFlow(method string, k consent.Kind, id []byte, name string, args callArgs, dec consent.Decision, replace []byte, fo *flowOutcome) relay.Verdict {
	s, d := p.s, p.d
	id = append([]byte(nil), id...) // the relay reuses its buffer; a parked request outlives it
	denied := func(why string) relay.Verdict {
		fo.asked = true // decided: the record says why
		return p.settle(method, k, id, name, args, consent.Decision{Reason: fo.reason + "; the rule asks the user, who could not be asked: " + why}, nil, fo)
	}
	q := asked{method: method, kind: k, id: id, name: name, args: args, pin: p.pinOf(k, name),
		target: ask.Target{User: s.user, Agent: s.agent, Server: s.server, Kind: string(k), Name: name}, flow: fo}
	shown, unshowable := p.questionArguments(q, nil)
	switch {
	case unshowable != "":
		return denied(unshowable)
	case len(shown) > ask.MaxArguments:
		return denied(fmt.Sprintf("its arguments are too long to show in a question (over %d bytes)", ask.MaxArguments))
	case s.relay.Claims().Era == relay.EraStateless:
		return denied("mcpcage asks about data flows only in clients of the initialize era (2025-11-25 and before) that can show a question")
	case !s.relay.Claims().FormElicitation:
		return denied("the client did not declare that it can show a question (elicitation)")
	case s.relay.InBatch():
		return denied("the request came inside a JSON-RPC batch, which cannot wait for an answer")
	}
	if why := s.limiter.Take(d.conf().Daemon.AskPerMinute, time.Now()); why != "" {
		return denied(why)
	}
	question := p.question(q, shown)
	question.Flow, question.OnceOnly = fo.reason, true
	qid, answer, err := s.relay.Ask("elicitation/create", question.Elicitation())
	if err != nil {
		s.limiter.Done()
		return denied("the question could not be sent: " + err.Error())
	}
	s.log.Info("asked the user about a data flow (elicitation)", "method", method, "name", name, "question", qid)
	res := make(chan error, 1)
	timeout := time.Duration(d.conf().Daemon.AskTimeout)
	cancelled := make(chan struct{})
	key := wire.IDKey(id)
	p.mu.Lock()
	p.questions[key] = cancelled // a cancel of the request ends its question (Cancelled)
	p.mu.Unlock()
	s.relay.Go("question", func() { // a bug there ends the session, not the daemon
		defer s.limiter.Done()
		defer func() {
			p.mu.Lock()
			if p.questions[key] == cancelled {
				delete(p.questions, key)
			}
			p.mu.Unlock()
		}()
		t := time.NewTimer(timeout)
		defer t.Stop()
		var result []byte
		select {
		case resp, ok := <-answer:
			if !ok {
				res <- relay.ErrParkEnded
				return
			}
			var m wire.Message
			if wire.Peek(resp, &m) == nil && !m.Batch && m.Envelopes[0].Error.Empty() {
				result = m.Envelopes[0].Result.Of(resp)
			}
		case <-t.C:
			s.relay.Forget(qid, "nobody answered in "+timeout.String())
			res <- p.parkedFate(denied("nobody answered the question within " + timeout.String()))
			return
		case <-cancelled:
			s.relay.Forget(qid, "the client cancelled the request")
			d.audit.AppendAsync(s.consentPromptRecord(q, askElicitation, promptDismissed, "", "", "the client cancelled the request"))
			res <- relay.ErrParkEnded
			return
		case <-s.relay.Done():
			res <- relay.ErrParkEnded
			return
		}
		a, outcome := ask.ParseAnswer(result)
		d.audit.AppendAsync(s.consentPromptRecord(q, askElicitation, flowPromptResult(a, outcome), string(a), "", "data flow: "+fo.reason))
		if outcome != ask.Answered || a != api.AnswerOnce {
			res <- p.parkedFate(denied(fmt.Sprintf("%s did not allow it when asked", s.user)))
			return
		}
		fo.asked = true
		// Decide again: a revocation or quarantine meanwhile wins.
		res <- p.parkedFate(p.settle(method, k, id, name, args, p.decide(method, k, name, args, q.pin), nil, fo))
	})
	return relay.Verdict{Park: res, Replace: replace, HoldFailed: func(err error) []byte {
		var pr parkedReply
		if errors.As(err, &pr) {
			return pr.line
		}
		return p.denyReply(id, k, fmt.Sprintf("mcpcage did not forward %s %q: %v.", method, name, err), err.Error()).Reply
	}}
}

// flowPromptResult is a data-flow question's result for its record.
func flowPromptResult(a api.Answer, o ask.Outcome) string {
	switch {
	case o == ask.Answered && a == api.AnswerOnce:
		return promptAllowed
	case o == ask.Answered:
		return promptDenied
	}
	return promptDismissed
}

// suspectItem is a tool whose definition looks like a prompt injection.
type suspectItem struct {
	name    string
	matches []inject.Match
}

// itemSuspects scans one tools/list item (its description, its schema's
// descriptions, every string) for prompt injection.
func itemSuspects(item []byte) []inject.Match {
	var ms []inject.Match
	jsonStrings(item, maxGuardScan, func(str string) {
		if len(ms) < inject.MaxMatches {
			ms = append(ms, inject.Scan(str)...)
		}
	})
	return ms
}

// flowOther guards what mcpcage does not decide one by one (a request
// of another method, a notification, the client's answer to a server's
// request such as sampling): in a tainted run, toward a server a rule
// applies to, a message that carries what the rule guards against
// (a finding, a fingerprinted string, or more than the guard reads) is
// refused unless the rule only logs. Nothing here can be asked about or
// redacted.
func (p *sessionPolicy) flowOther(e *wire.Envelope, msg []byte) (relay.Verdict, bool) {
	g := p.d.guard()
	s := p.s
	if g == nil || s.run == nil || len(p.srv.Labels) == 0 {
		return relay.Verdict{}, false
	}
	body := e.Params.Of(msg)
	if e.Kind == wire.KindResponse {
		body = e.Whole.Of(msg)
	}
	if len(body) == 0 {
		return relay.Verdict{}, false
	}
	// With the most evidence there could be, does any rule apply?
	if len(flow.Rules(g.cfg.Flows, s.run, p.srv.Labels, flow.Evidence{Unread: true})) == 0 {
		return relay.Verdict{}, false
	}
	ev := p.evidence(g, body)
	applied := flow.Rules(g.cfg.Flows, s.run, p.srv.Labels, ev)
	if ev.Empty() || len(applied) == 0 || applied[0].Action == config.FlowLog {
		return relay.Verdict{}, false
	}
	top := applied[0]
	what := e.Method
	if e.Kind == wire.KindResponse {
		what = "the client's response to the server's request"
	}
	reason := top.Explain(ev) + "; mcpcage neither asks about nor redacts " + what + ", so it is refused"
	p.d.metrics.FlowDecisions.WithLabelValues(metrics.Agent(s.agent), s.serverLabel, string(config.FlowDeny)).Inc()
	if e.Kind != wire.KindResponse {
		return p.refuse(e, msg, wire.CodeDenied, reason), true
	}
	p.d.audit.AppendAsync(s.messageRefusedRecord(refusal{dir: relay.ClientToServer, kind: "response", id: append(json.RawMessage(nil), e.ID.Of(msg)...), reason: reason}))
	s.denied.Add(1)
	s.log.Warn("message refused", "kind", "response", "reason", reason)
	// The server is told no more than that: where the data came from is
	// for the audit log, not for the server it was kept from.
	const toServer = "it carries data a [[flow]] rule of mcpcage keeps from this server"
	line := wire.ErrorResponse(e.ID.Of(msg), wire.CodeDenied, "mcpcage refused the client's answer: "+toServer, wire.ErrorData{Mcpcage: wire.ClassDenied, Reason: toServer})
	return relay.Verdict{Replace: line[:len(line)-1]}, true
}

// readFlowKind is the influence kind of what a resources/read or a
// prompts/get returns.
func readFlowKind(m request.Method) flow.Kind {
	if m == request.PromptsGet {
		return flow.Prompt
	}
	return flow.Resource
}

// errorInfluence follows a JSON-RPC error answering a tools/call (or a
// task's tasks/result), resources/read or prompts/get: its message and
// data reach the agent as a result would (they taint the run and are
// scanned). A suspect one is withheld as a result would be; so is one
// answering tasks/get, tasks/list or tasks/cancel, scanned as a task's
// status.
func (p *sessionPolicy) errorInfluence(e *wire.Envelope, msg []byte, method string) (relay.Verdict, bool) {
	id := e.ID.Of(msg)
	var kind flow.Kind
	var name, call, tool string
	switch request.Method(method) {
	case request.ToolsCall:
		c, ok := p.takeCall(id)
		if !ok {
			// An error answering no call this policy let through: scanned
			// as any reply (see FromServer).
			if why := p.passingInfluence(flow.Reply, method, "", e.Error.Of(msg)); why != "" {
				return relay.Verdict{Replace: refusedResult(id, method, why)}, true
			}
			return relay.Verdict{}, false
		}
		p.d.newCall(p.s) // the call ended: later opens are not its
		kind, name, call, tool = flow.ToolResult, c.tool, c.call, c.tool
	case request.TasksResult:
		// A task's failure, in the server's words.
		tool = p.taskTool(id)
		kind, name = flow.ToolResult, cmp.Or(tool, method)
	case request.TasksGet, request.TasksList, request.TasksCancel:
		tool := p.taskTool(id)
		if why := p.passingInfluence(flow.TaskStatus, cmp.Or(tool, method), tool, e.Error.Of(msg)); why != "" {
			return relay.Verdict{Replace: refusedResult(id, method, why)}, true
		}
		return relay.Verdict{}, false
	case request.ResourcesRead, request.PromptsGet:
		n, ok := p.takeRead(id)
		if !ok {
			return relay.Verdict{}, false
		}
		kind, name = readFlowKind(request.Method(method)), n
	default:
		// Any other error (of completion/complete, a list, initialize, a
		// method mcpcage does not know): the server's words all the same,
		// and an error's message often quotes what it was asked.
		if why := p.passingInfluence(flow.Reply, method, "", e.Error.Of(msg)); why != "" {
			return relay.Verdict{Replace: refusedResult(id, method, why)}, true
		}
		return relay.Verdict{}, false
	}
	in, suspects := p.influence(kind, name, call, e.Error.Of(msg))
	if why := p.suspect(in, tool, suspects); why != "" {
		return relay.Verdict{Replace: refusedResult(id, method, why)}, true
	}
	return relay.Verdict{}, false
}
