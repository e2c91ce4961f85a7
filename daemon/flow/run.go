package flow

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/daemon/detect"
)

// Bounds of what a run remembers.
const (
	RecentMax       = 16   // the last influences, whatever they were
	FlaggedMax      = 32   // the last influences with a label, a finding or a suspect match
	MaxFingerprints = 1024 // high-entropy strings seen in labelled results, per run
	MaxRuns         = 1024 // runs kept without sessions before those of gone processes are dropped
	MaxUserRuns     = 64   // runs one user keeps without sessions: past it, the user's oldest is dropped
	maxName         = 200  // bytes of an influence's name kept
)

// Kind is what reached the agent.
type Kind string

// Kinds of influence.
const (
	ToolResult        Kind = "tool_result"        // a tools/call result
	Resource          Kind = "resource"           // resources/read contents
	Prompt            Kind = "prompt"             // prompts/get messages
	ToolList          Kind = "tool_list"          // a tools/list result: names, descriptions, schemas
	PromptList        Kind = "prompt_list"        // a prompts/list result
	ResourceList      Kind = "resource_list"      // a resources/list result: the server's resources, its data (names of files, records)
	ResourceTemplates Kind = "resource_templates" // a resources/templates/list result
	ServerInfo        Kind = "server_info"        // an initialize or server/discover result (its instructions)
	Completion        Kind = "completion"         // completion/complete values
	Notification      Kind = "notification"       // a server's notification (a log message, progress, a task's status)
	TaskStatus        Kind = "task_status"        // a tasks/get, tasks/list or tasks/cancel result: tasks' status messages
	Request           Kind = "server_request"     // a request the server makes of the client: sampling (the server's prompt to the model), elicitation (its question to the user)
	Reply             Kind = "reply"              // any other answer: an error instead of a result (of completion/complete, a list, initialize...), or the result of a request that carries no data (ping, logging/setLevel, a subscription, a method mcpcage does not know)
)

// Listing reports whether k is a list of what a server offers: such lists
// do not taint (they hold definitions, not data). A resources/list result
// is not one: its items are the server's data (the names and
// descriptions of its files and records: found by a red-team helper, a
// customer record a resource was named after reached an external
// server), and it taints as a result does.
func (k Kind) Listing() bool {
	return k == ToolList || k == PromptList || k == ResourceTemplates || k == ServerInfo
}

// Influence is one thing a server showed the agent in the run: where it
// came from and what was found in it, never its content.
type Influence struct {
	ID      string         `json:"id"`
	Seq     uint64         `json:"seq"` // the ID's number in its run
	Time    time.Time      `json:"time"`
	Server  string         `json:"server"`
	Session string         `json:"session"`
	Kind    Kind           `json:"kind"`
	Name    string         `json:"name,omitempty"` // tool, resource URI, prompt
	Call    string         `json:"call,omitempty"` // the call whose result it was
	Size    int            `json:"size"`
	Digest  string         `json:"digest"`
	Labels  []string       `json:"labels,omitempty"`
	Found   map[string]int `json:"found,omitempty"`   // detector -> count
	Suspect []string       `json:"suspect,omitempty"` // injection heuristics that matched
}

// InfluenceID names influence seq of run key.
func InfluenceID(run string, seq uint64) string { return run + "#" + strconv.FormatUint(seq, 10) }

// Flagged reports whether the influence is kept among the flagged ones.
func (in *Influence) Flagged() bool {
	return len(in.Labels) > 0 || len(in.Found) > 0 || len(in.Suspect) > 0
}

// Taint is the first time a label's data reached the run.
type Taint struct {
	Label     string         `json:"label"`
	Server    string         `json:"server"`
	Influence string         `json:"influence"`
	Kind      Kind           `json:"kind"`
	Name      string         `json:"name,omitempty"`
	Call      string         `json:"call,omitempty"`
	Time      time.Time      `json:"time"`
	Found     map[string]int `json:"found,omitempty"` // what the tainting result held
	Results   int            `json:"results"`         // results with the label since
}

// origin is what a fingerprint remembers: the influence and its labels.
type origin struct {
	influence string
	server    string
	labels    []string
}

// Run is one agent run.
type Run struct {
	Key string // uid:pid@start: what finds the run
	// ID names this run in records (Key and a random tag): a run made
	// again under the same Key (after a daemon restart, or dropped and
	// made again) numbers its influences anew under another ID.
	ID   string
	UID  uint32
	User string
	PID  int
	// Start is the client process's start time (clock ticks since boot),
	// which tells it from a later process with the same pid.
	Start uint64

	mu       sync.Mutex
	seq      uint64
	taints   map[string]*Taint
	recent   []Influence
	flagged  []Influence
	fp       *detect.Fingerprints[origin]
	sessions int
	detached time.Time
}

// Record adds an influence to the trail and returns it with its id; a
// result (not a tool list) from a labelled server taints the run with
// its labels, and tokens are remembered as fingerprints.
func (r *Run) Record(in Influence, tokens []string) Influence {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	in.Seq = r.seq
	in.ID = InfluenceID(r.ID, r.seq)
	if len(in.Name) > maxName {
		in.Name = strings.ToValidUTF8(in.Name[:maxName], "") + "…"
	}
	if !in.Kind.Listing() {
		for _, l := range in.Labels {
			if t, ok := r.taints[l]; ok {
				t.Results++
				continue
			}
			if r.taints == nil {
				r.taints = map[string]*Taint{}
			}
			r.taints[l] = &Taint{Label: l, Server: in.Server, Influence: in.ID, Kind: in.Kind, Name: in.Name, Call: in.Call, Time: in.Time, Found: in.Found, Results: 1}
		}
		if len(in.Labels) > 0 && len(tokens) > 0 {
			if r.fp == nil {
				r.fp = detect.NewFingerprints[origin](MaxFingerprints)
			}
			o := origin{influence: in.ID, server: in.Server, labels: in.Labels}
			for _, t := range tokens {
				r.fp.Add(t, merged(o, r.fp.Match(t)))
			}
		}
	}
	r.recent = appendBounded(r.recent, in, RecentMax)
	if in.Flagged() {
		r.flagged = appendBounded(r.flagged, in, FlaggedMax)
	}
	return in
}

// merged keeps the first origin of a token seen again, with the labels
// of every result it was seen in.
func merged(o origin, seen []detect.FingerprintMatch[origin]) origin {
	if len(seen) == 0 {
		return o
	}
	first := seen[0].Origin
	labels := slices.Clone(first.labels)
	for _, l := range o.labels {
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	first.labels = labels
	return first
}

func appendBounded(s []Influence, in Influence, max int) []Influence {
	if len(s) >= max {
		s = slices.Delete(s, 0, 1)
	}
	return append(s, in)
}

// Taints returns the run's taints, by label.
func (r *Run) Taints() []Taint {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Taint, 0, len(r.taints))
	for _, t := range r.taints {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Label < out[j].Label })
	return out
}

// Tainted returns the taint of label, if the run has it.
func (r *Run) Tainted(label string) (Taint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.taints[label]
	if !ok {
		return Taint{}, false
	}
	return *t, true
}

// Trail returns what the agent had received so far: the last RecentMax
// influences and every flagged one still kept, oldest first.
func (r *Run) Trail() []Influence {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Influence, 0, len(r.recent)+len(r.flagged))
	seen := make(map[string]bool, len(r.recent))
	for _, in := range r.recent {
		seen[in.ID] = true
		out = append(out, in)
	}
	for _, in := range r.flagged {
		if !seen[in.ID] {
			out = append(out, in)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// TrailSeqs is Trail by the influences' numbers in the run, without
// copying them: what a call's record names.
func (r *Run) TrailSeqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, 0, len(r.recent)+len(r.flagged))
	// Both lists are in the order of the run's numbers: merge them.
	i, j := 0, 0
	for i < len(r.recent) || j < len(r.flagged) {
		switch {
		case j == len(r.flagged) || (i < len(r.recent) && r.recent[i].Seq < r.flagged[j].Seq):
			out = append(out, r.recent[i].Seq)
			i++
		case i == len(r.recent) || r.flagged[j].Seq < r.recent[i].Seq:
			out = append(out, r.flagged[j].Seq)
			j++
		default: // in both
			out = append(out, r.recent[i].Seq)
			i++
			j++
		}
	}
	return out
}

// Carried is a string of an outgoing argument seen before in a labelled
// result: where, and where it came from.
type Carried struct {
	Start, End int
	Influence  string
	Server     string
	Labels     []string
}

// Carries returns the fingerprinted strings text holds; complete is
// false when text was too long or held too many candidates to look at
// all of them.
func (r *Run) Carries(text string) (_ []Carried, complete bool) {
	r.mu.Lock()
	fp := r.fp
	r.mu.Unlock()
	if fp == nil {
		return nil, true
	}
	ms, complete := fp.MatchAll(text)
	var out []Carried
	for _, m := range ms {
		out = append(out, Carried{Start: m.Start, End: m.End, Influence: m.Origin.influence, Server: m.Origin.server, Labels: m.Origin.labels})
	}
	return out, complete
}

// Runs is the registry of live agent runs.
type Runs struct {
	// Alive reports whether a client process still runs (nil: every
	// process counts as alive).
	Alive func(pid int, start uint64) bool

	mu sync.Mutex
	m  map[string]*Run
}

// Key names the run of a user's client process.
func Key(uid uint32, pid int, start uint64) string {
	return strconv.FormatUint(uint64(uid), 10) + ":" + strconv.Itoa(pid) + "@" + strconv.FormatUint(start, 10)
}

// Attach returns the run of a new session, created when it is the run's
// first.
func (rs *Runs) Attach(uid uint32, user string, pid int, start uint64) *Run {
	key := Key(uid, pid, start)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m == nil {
		rs.m = map[string]*Run{}
	}
	r, ok := rs.m[key]
	if !ok {
		rs.makeRoom(uid)
		r = &Run{Key: key, ID: key + "/" + randomTag(), UID: uid, User: user, PID: pid, Start: start}
		rs.m[key] = r
	}
	r.mu.Lock()
	r.sessions++
	r.mu.Unlock()
	return r
}

func randomTag() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// makeRoom keeps the registry bounded before a run of uid is added: a
// user over MaxUserRuns runs without sessions loses the oldest of them;
// over MaxRuns, runs without sessions whose process is gone go. A run
// another user's client still holds data in is never dropped for room.
func (rs *Runs) makeRoom(uid uint32) {
	var idle, mine []*Run
	for _, r := range rs.m {
		r.mu.Lock()
		if r.sessions == 0 {
			idle = append(idle, r)
			if r.UID == uid {
				mine = append(mine, r)
			}
		}
		r.mu.Unlock()
	}
	if len(mine) >= MaxUserRuns {
		// The user's own: a gone client's run first, then the oldest.
		gone := func(r *Run) bool { return rs.Alive != nil && !rs.Alive(r.PID, r.Start) }
		slices.SortFunc(mine, func(a, b *Run) int {
			if ga, gb := gone(a), gone(b); ga != gb {
				if ga {
					return -1
				}
				return 1
			}
			return a.detached.Compare(b.detached)
		})
		delete(rs.m, mine[0].Key)
	}
	if len(rs.m) < MaxRuns {
		return
	}
	for _, r := range idle {
		if rs.m[r.Key] == r && rs.Alive != nil && !rs.Alive(r.PID, r.Start) {
			delete(rs.m, r.Key)
		}
	}
}

// Detach ends one session's hold on its run; the run stays while its
// client process lives (Sweep).
func (rs *Runs) Detach(r *Run) {
	r.mu.Lock()
	r.sessions--
	if r.sessions == 0 {
		r.detached = time.Now()
	}
	r.mu.Unlock()
}

// Sweep drops the runs without sessions whose client process is gone
// (alive reports whether pid still runs with that start time).
func (rs *Runs) Sweep(alive func(pid int, start uint64) bool) int {
	rs.mu.Lock()
	var idle []*Run
	for _, r := range rs.m {
		r.mu.Lock()
		if r.sessions == 0 {
			idle = append(idle, r)
		}
		r.mu.Unlock()
	}
	rs.mu.Unlock()
	dropped := 0
	for _, r := range idle {
		if alive(r.PID, r.Start) {
			continue
		}
		rs.mu.Lock()
		r.mu.Lock()
		if r.sessions == 0 && rs.m[r.Key] == r {
			delete(rs.m, r.Key)
			dropped++
		}
		r.mu.Unlock()
		rs.mu.Unlock()
	}
	return dropped
}

// Lookup returns the run with key, if it is live.
func (rs *Runs) Lookup(key string) *Run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.m[key]
}

// Len is the number of runs kept.
func (rs *Runs) Len() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.m)
}
