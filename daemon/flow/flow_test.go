package flow

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/config"
)

func result(server string, labels []string, found map[string]int) Influence {
	return Influence{Time: time.Now(), Server: server, Session: "s1", Kind: ToolResult, Name: "lookup", Call: "s1.1", Size: 10, Digest: "sha256:x", Labels: labels, Found: found}
}

func TestTaintAndRules(t *testing.T) {
	rules := []config.Flow{
		{From: "confidential", To: "external", Action: config.FlowLog},
		{From: "confidential", To: "external", Action: config.FlowDeny},
		{From: "confidential", To: "partner", Action: config.FlowRedact, When: config.FlowCarries},
		{From: "pii", To: "external", Action: config.FlowAsk},
	}
	var runs Runs
	r := runs.Attach(1000, "alice", 42, 7)
	if got := Rules(rules, r, []string{"external"}, Evidence{}); len(got) != 0 {
		t.Fatalf("an untainted run: %+v", got)
	}
	in := r.Record(result("crm-db", []string{"confidential"}, map[string]int{"us_ssn": 1}), []string{"tok"})
	if in.ID == "" {
		t.Fatal("no influence id")
	}
	r.Record(result("crm-db", []string{"confidential"}, nil), nil) // a second result keeps the first taint
	tt, ok := r.Tainted("confidential")
	if !ok || tt.Influence != in.ID || tt.Results != 2 || tt.Found["us_ssn"] != 1 || tt.Server != "crm-db" {
		t.Fatalf("taint: %+v %v", tt, ok)
	}
	tests := []struct {
		name string
		to   []string
		ev   Evidence
		want []config.FlowAction
	}{
		{"strongest first", []string{"external"}, Evidence{}, []config.FlowAction{config.FlowDeny, config.FlowLog}},
		{"another label", []string{"internal"}, Evidence{}, nil},
		{"carries: nothing carried", []string{"partner"}, Evidence{}, nil},
		{"carries: a finding", []string{"partner"}, Evidence{Found: map[string]int{"email": 1}}, []config.FlowAction{config.FlowRedact}},
		{"carries: a string of the label", []string{"partner"}, Evidence{Carried: map[string]int{"confidential": 1}}, []config.FlowAction{config.FlowRedact}},
		{"carries: a string of another label", []string{"partner"}, Evidence{Carried: map[string]int{"pii": 1}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Rules(rules, r, tc.to, tc.ev)
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want actions %v", got, tc.want)
			}
			for i := range got {
				if got[i].Action != tc.want[i] || got[i].Taint.Server != "crm-db" {
					t.Fatalf("rule %d: %+v, want %s", i, got[i], tc.want[i])
				}
			}
		})
	}
	why := Rules(rules, r, []string{"external"}, Evidence{Found: map[string]int{"us_ssn": 1}})[0].Explain(Evidence{Found: map[string]int{"us_ssn": 1}})
	for _, want := range []string{ReasonPrefix, "crm-db", `"lookup"`, "us_ssn ×1", "deny"} {
		if !strings.Contains(why, want) {
			t.Errorf("explanation %q lacks %q", why, want)
		}
	}
}

func TestToolListsDoNotTaint(t *testing.T) {
	var runs Runs
	r := runs.Attach(0, "root", 1, 1)
	in := result("crm-db", []string{"confidential"}, nil)
	in.Kind = ToolList
	r.Record(in, nil)
	if _, ok := r.Tainted("confidential"); ok {
		t.Fatal("a tool list tainted the run")
	}
	if len(r.Trail()) != 1 {
		t.Fatal("the tool list is not in the trail")
	}
}

// TestWhichListsTaint: definitions (tools, prompts, resource templates,
// the server's instructions) do not taint; a resource list, the
// server's data, does.
func TestWhichListsTaint(t *testing.T) {
	for k, taints := range map[Kind]bool{ToolList: false, PromptList: false, ResourceTemplates: false, ServerInfo: false, ResourceList: true} {
		var runs Runs
		r := runs.Attach(0, "root", 1, 1)
		in := result("crm-db", []string{"confidential"}, nil)
		in.Kind = k
		r.Record(in, nil)
		if _, ok := r.Tainted("confidential"); ok != taints {
			t.Errorf("%s: tainted %v, want %v", k, ok, taints)
		}
	}
}

func TestTrailIsBoundedAndKeepsFlagged(t *testing.T) {
	var runs Runs
	r := runs.Attach(0, "root", 1, 1)
	r.Record(result("crm-db", []string{"confidential"}, nil), nil)
	for i := 0; i < 3*RecentMax; i++ {
		r.Record(result("web", nil, nil), nil)
	}
	trail := r.Trail()
	if len(trail) != RecentMax+1 {
		t.Fatalf("trail has %d entries, want the last %d and the flagged one", len(trail), RecentMax)
	}
	if trail[0].Server != "crm-db" {
		t.Fatalf("the flagged influence is not kept first (oldest): %+v", trail[0])
	}
	for i := 0; i < 2*FlaggedMax; i++ {
		r.Record(result("crm-db", []string{"confidential"}, nil), nil)
	}
	if n := len(r.Trail()); n > RecentMax+FlaggedMax {
		t.Fatalf("trail has %d entries, over the bounds", n)
	}
}

func TestCarriesFingerprints(t *testing.T) {
	var runs Runs
	r := runs.Attach(0, "root", 1, 1)
	token := "q8ZrT2vLx4NcW7pKd9HsB3mYf6JgA1uE5tRwXo0Q"
	in := r.Record(result("crm-db", []string{"confidential"}, nil), []string{token})
	got, _ := r.Carries("please store " + token + " in the note")
	if len(got) != 1 || got[0].Influence != in.ID || got[0].Labels[0] != "confidential" || got[0].Start != len("please store ") {
		t.Fatalf("carries: %+v", got)
	}
	if got, _ := r.Carries("nothing of the sort: Zq8rT2vLx4NcW7pKd9HsB3mYf6JgA1uE5tRwXo0"); len(got) != 0 {
		t.Fatalf("a different string matched: %+v", got)
	}
}

func TestRunsLiveWhileTheClientDoes(t *testing.T) {
	var runs Runs
	self := os.Getpid()
	alive := func(pid int, start uint64) bool { return pid == self }
	a := runs.Attach(0, "root", self, 1)
	b := runs.Attach(0, "root", self+1000000, 1) // a process that is gone
	if runs.Attach(0, "root", self, 1) != a {
		t.Fatal("a second session of the same client process is another run")
	}
	if runs.Attach(1000, "alice", self, 1) == a {
		t.Fatal("another user's session joined the run")
	}
	runs.Detach(a)
	runs.Detach(a)
	runs.Detach(b)
	if n := runs.Sweep(alive); n != 1 {
		t.Fatalf("swept %d runs, want the gone client's only", n)
	}
	if runs.Lookup(a.Key) == nil || runs.Lookup(b.Key) != nil {
		t.Fatal("the live client's run was dropped, or the gone one kept")
	}
}

func TestFingerprintKeepsEveryLabel(t *testing.T) {
	var runs Runs
	r := runs.Attach(0, "root", 1, 1)
	token := "q8ZrT2vLx4NcW7pKd9HsB3mYf6JgA1uE5tRwXo0Q"
	first := r.Record(result("crm-db", []string{"confidential"}, nil), []string{token})
	r.Record(result("notes", []string{"external"}, nil), []string{token}) // the agent wrote it there, and read it back
	got, _ := r.Carries(token)
	if len(got) != 1 || got[0].Influence != first.ID || !slices.Contains(got[0].Labels, "confidential") || !slices.Contains(got[0].Labels, "external") {
		t.Fatalf("carries: %+v", got)
	}
}

func TestRegistryBounds(t *testing.T) {
	var runs Runs
	runs.Alive = func(pid int, start uint64) bool { return pid%2 == 0 } // odd pids are gone
	// One user's idle runs are capped at MaxUserRuns: the oldest goes.
	first := runs.Attach(1000, "alice", 2, 1)
	runs.Detach(first)
	for pid := 4; pid < 4+2*MaxUserRuns; pid += 2 {
		runs.Detach(runs.Attach(1000, "alice", pid, 1))
	}
	if runs.Lookup(first.Key) != nil {
		t.Fatal("alice's oldest idle run was kept past MaxUserRuns")
	}
	// Another user's live, idle run is not dropped to make room.
	bob := runs.Attach(2000, "bob", 2, 1)
	bob.Record(result("crm-db", []string{"confidential"}, nil), nil)
	runs.Detach(bob)
	for uid := uint32(3000); uid < 3000+2*MaxRuns; uid++ {
		runs.Detach(runs.Attach(uid, "u", 1, 1)) // gone processes
	}
	if n := runs.Len(); n > MaxRuns+1 {
		t.Fatalf("%d runs kept, over MaxRuns", n)
	}
	if runs.Lookup(bob.Key) == nil {
		t.Fatal("bob's live run was dropped for other users' runs")
	}
	if _, ok := runs.Lookup(bob.Key).Tainted("confidential"); !ok {
		t.Fatal("bob's taint was lost")
	}
}

func TestTrailSeqsMatchesTrail(t *testing.T) {
	var runs Runs
	r := runs.Attach(0, "root", 1, 1)
	for i := 0; i < 3*RecentMax; i++ {
		var labels []string
		if i%5 == 0 {
			labels = []string{"confidential"}
		}
		r.Record(result("s", labels, nil), nil)
		var want []uint64
		for _, in := range r.Trail() {
			want = append(want, in.Seq)
		}
		if got := r.TrailSeqs(); !slices.Equal(got, want) {
			t.Fatalf("after %d: TrailSeqs %v, Trail %v", i, got, want)
		}
	}
}
