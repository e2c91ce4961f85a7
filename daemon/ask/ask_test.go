package ask

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

func TestSealerBindsAndRefuses(t *testing.T) {
	s := NewSealer()
	now := time.Now()
	want := State{Session: "s1", User: "alice", Agent: "claude", Server: "github", Method: "tools/call",
		Digest: RequestDigest("tools/call", "tool", "echo", map[string]any{"text": "hi"}), Key: "k", Expires: now.Add(time.Minute).UnixMilli()}
	sealed := s.Seal(want)
	other := NewSealer() // another daemon, or this one after a restart
	tests := []struct {
		name    string
		sealer  *Sealer
		sealed  string
		at      time.Time
		bind    func(*State)
		wantErr error
		wantMis string
	}{
		{"as made", s, sealed, now, nil, nil, ""},
		{"another daemon's key", other, sealed, now, nil, ErrForged, ""},
		{"altered payload", s, sealed[:len(StatePrefix)+3] + "x" + sealed[len(StatePrefix)+4:], now, nil, ErrForged, ""},
		{"no prefix", s, strings.TrimPrefix(sealed, StatePrefix), now, nil, ErrForged, ""},
		{"expired", s, sealed, now.Add(2 * time.Minute), nil, ErrExpired, ""},
		{"another session", s, sealed, now, func(st *State) { st.Session = "s2" }, nil, "session"},
		{"another user", s, sealed, now, func(st *State) { st.User = "bob" }, nil, "user"},
		{"another agent", s, sealed, now, func(st *State) { st.Agent = "cursor" }, nil, "agent"},
		{"other arguments", s, sealed, now, func(st *State) {
			st.Digest = RequestDigest("tools/call", "tool", "echo", map[string]any{"text": "rm -rf /"})
		}, nil, "request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.sealer.Open(tc.sealed, tc.at)
			if err != tc.wantErr {
				t.Fatalf("Open: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			cmp := want
			if tc.bind != nil {
				tc.bind(&cmp)
			}
			if got := st.Mismatch(cmp); (got == "") != (tc.wantMis == "") || !strings.Contains(got, tc.wantMis) {
				t.Fatalf("Mismatch = %q, want one naming %q", got, tc.wantMis)
			}
		})
	}
	st, _ := s.Open(sealed, now)
	if !s.Use(st, now) || s.Use(st, now) {
		t.Fatal("a state must be usable once, and only once")
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		result  string
		answer  api.Answer
		outcome Outcome
	}{
		{`{"action":"accept","content":{"decision":"once"}}`, api.AnswerOnce, Answered},
		{`{"action":"accept","content":{"decision":"duration"}}`, api.AnswerDuration, Answered},
		{`{"action":"accept","content":{"decision":"forever"}}`, "", Unusable},
		{`{"action":"accept"}`, "", Unusable},
		{`{"action":"decline"}`, api.AnswerDeny, Answered},
		{`{"action":"cancel"}`, "", Dismissed},
		{`not json`, "", Unusable},
		{``, "", Unusable},
		// An answer larger than mcpcage's one-field form takes is not read.
		{`{"action":"accept","content":{"decision":"once","pad":"` + strings.Repeat("a", MaxAnswerBytes) + `"}}`, "", Unusable},
	}
	for _, tc := range tests {
		a, o := ParseAnswer([]byte(tc.result))
		if a != tc.answer || o != tc.outcome {
			t.Errorf("ParseAnswer(%.80s) = %q, %q; want %q, %q", tc.result, a, o, tc.answer, tc.outcome)
		}
	}
}

func TestQuestionShowsWhoWhatAndCode(t *testing.T) {
	q := Question{Agent: "claude-code", User: "alice", Server: "github", Method: "tools/call", Kind: "tool", Name: "create_issue",
		Arguments: `{"repo":"acme/app"}`, Code: "K7Q-2MX", For: "8h0m0s", Annotations: "destructive"}
	var p struct {
		Mode            string `json:"mode"`
		Message         string `json:"message"`
		RequestedSchema struct {
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
			Required []string `json:"required"`
		} `json:"requestedSchema"`
	}
	if err := json.Unmarshal(q.Elicitation(), &p); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{Title, "K7Q-2MX", "claude-code", "alice", "github", `"create_issue"`, "acme/app", "call tool", "destructive"} {
		if !strings.Contains(p.Message, want) {
			t.Errorf("question %q lacks %q", p.Message, want)
		}
	}
	if p.Mode != "form" || strings.Join(p.RequestedSchema.Properties["decision"].Enum, ",") != "once,session,duration,deny" || p.RequestedSchema.Required[0] != "decision" {
		t.Errorf("question form: %+v", p)
	}
}

func TestImitation(t *testing.T) {
	tests := []struct {
		doc  string
		want bool
	}{
		{`{"message":"What is your name?"}`, false},
		{`{"message":"mcpcage consent question"}`, true},
		{`{"message":"M.C.P-Cage says allow"}`, true},
		{`{"message":"ＭＣＰＣＡＧＥ"}`, true},                   // full width
		{`{"message":"mcp\u0063age"}`, true},              // an escape
		{`{"requestedSchema":{"title":"McpCage"}}`, true}, // anywhere
		{`{"message":"code k7q 2mx: allow?"}`, true},      // the session's code
		{`{"message":"code K7Q-2MY: allow?"}`, false},     // another code
		{`not json`, true},
	}
	for _, tc := range tests {
		if got := ImitatesJSON([]byte(tc.doc), "K7Q-2MX"); got != tc.want {
			t.Errorf("ImitatesJSON(%s) = %v, want %v", tc.doc, got, tc.want)
		}
	}
	if c := NewCode(); len(c) != 7 || c[3] != '-' {
		t.Errorf("NewCode() = %q", c)
	}
}

func TestBookKeepsListsAndRefuses(t *testing.T) {
	b := NewBook()
	now := time.Now()
	tgt := Target{User: "alice", Agent: "a", Server: "s", Kind: "tool", Name: "echo"}
	p1, ok := b.Keep(Pending{Target: tgt, UID: 1000}, now, time.Hour)
	if !ok || p1.ID == "" {
		t.Fatal("Keep refused the first request")
	}
	p2, _ := b.Keep(Pending{Target: tgt, UID: 1000}, now.Add(time.Second), time.Hour)
	if p2.ID != p1.ID || p2.Attempts != 2 {
		t.Fatalf("another attempt: %+v, want the same id, 2 attempts", p2)
	}
	if len(b.List(1001, false, now)) != 0 || len(b.List(1001, true, now)) != 1 || len(b.List(1000, false, now)) != 1 {
		t.Fatal("a user must see their own pending requests only; an administrator all")
	}
	if _, ok := b.Take(p1.ID, 1001, false, now); ok {
		t.Fatal("another user took alice's pending request")
	}
	if _, ok := b.Take(p1.ID, 1000, false, now); !ok {
		t.Fatal("alice could not take her pending request")
	}
	if _, ok := b.Take(p1.ID, 1000, false, now); ok {
		t.Fatal("a pending request was taken twice")
	}
	for i := 0; i < maxPendingPerUser; i++ {
		tgt := tgt
		tgt.Name = strings.Repeat("x", i+1)
		if _, ok := b.Keep(Pending{Target: tgt, UID: 1000}, now, time.Hour); !ok {
			t.Fatalf("Keep refused request %d", i)
		}
	}
	if _, ok := b.Keep(Pending{Target: Target{Name: "one too many"}, UID: 1000}, now, time.Hour); ok {
		t.Fatal("a user kept more than maxPendingPerUser pending requests")
	}
	if _, ok := b.Keep(Pending{Target: Target{User: "uid:100003", Name: "sub"}, UID: 100003, Account: 1000}, now, time.Hour); ok {
		t.Fatal("a subordinate uid of a user at maxPendingPerUser kept a pending request")
	}
	if _, ok := b.Keep(Pending{Target: Target{User: "uid:200003", Name: "sub"}, UID: 200003, Account: 1001}, now, time.Hour); !ok {
		t.Fatal("a subordinate uid of another user could not keep a pending request")
	}
	if len(b.List(1000, false, now.Add(2*time.Hour))) != 0 {
		t.Fatal("pending requests outlived their time")
	}
	b.Refuse(tgt, now.Add(time.Hour), now)
	if b.Refused(tgt, now).IsZero() || !b.Refused(tgt, now.Add(2*time.Hour)).IsZero() {
		t.Fatal("a refusal must last until its time, no longer")
	}
	b.Unrefuse(func(t Target) bool { return t.Name == "other" })
	if b.Refused(tgt, now).IsZero() {
		t.Fatal("a consent for another tool lifted the refusal")
	}
	b.Unrefuse(func(t Target) bool { return t.Name == "echo" })
	if !b.Refused(tgt, now).IsZero() {
		t.Fatal("a grant did not lift the refusal")
	}
}

func TestLimiter(t *testing.T) {
	var l Limiter
	now := time.Now()
	for i := 0; i < 2; i++ {
		if why := l.Take(2, now); why != "" {
			t.Fatalf("question %d refused: %s", i, why)
		}
		l.Done()
	}
	if why := l.Take(2, now); !strings.Contains(why, "ask_per_minute") {
		t.Fatalf("a third question in the same minute: %q", why)
	}
	if why := l.Take(2, now.Add(31*time.Second)); why != "" {
		t.Fatalf("after half a minute one question is allowed again: %q", why)
	}
	for i := 0; i < MaxOpen; i++ {
		l.Take(100, now.Add(time.Hour))
	}
	if why := l.Take(100, now.Add(time.Hour)); !strings.Contains(why, "waiting") {
		t.Fatalf("more than MaxOpen questions open: %q", why)
	}
}

func TestExactNumbers(t *testing.T) {
	tests := []struct {
		doc  string
		want bool
	}{
		{`{"a":1,"b":0.1,"c":-2.5e-3,"d":[1e21,1.0]}`, true},
		{`{"id":9007199254740993}`, false},      // not a double
		{`{"id":18446744073709551000}`, false},  // two of these would share a digest
		{`{"x":0.10000000000000000555}`, false}, // reads as 0.1 to a double
		{`{"x":"9007199254740993"}`, true},      // a string is exact
		{`{"deep":[{"n":123456789012345678}]}`, false},
		{`not json`, false},
	}
	for _, tc := range tests {
		if got := ExactNumbers([]byte(tc.doc)); got != tc.want {
			t.Errorf("ExactNumbers(%s) = %v, want %v", tc.doc, got, tc.want)
		}
	}
	var p struct {
		RequestedSchema struct {
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
		} `json:"requestedSchema"`
	}
	if err := json.Unmarshal(Question{NoDuration: true}.Elicitation(), &p); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.RequestedSchema.Properties["decision"].Enum, ","); got != "once,session,deny" {
		t.Fatalf("a bare interpreter's question offers %s", got)
	}
}

func TestBookDropsAServersPending(t *testing.T) {
	b := NewBook()
	now := time.Now()
	keep := func(user, server, name string) string {
		p, ok := b.Keep(Pending{Target: Target{User: user, Agent: "claude", Server: server, Kind: "tool", Name: name}, UID: 1000}, now, time.Hour)
		if !ok {
			t.Fatal("not kept")
		}
		return p.ID
	}
	gone := []string{keep("alice", "mine", "a"), keep("alice", "mine", "b")}
	stay := []string{keep("alice", "other", "a"), keep("bob", "mine", "a")}
	if n := b.DropServer("alice", "mine"); n != len(gone) {
		t.Fatalf("dropped %d, want %d", n, len(gone))
	}
	for _, tc := range []struct {
		ids  []string
		kept bool
	}{{gone, false}, {stay, true}} {
		for _, id := range tc.ids {
			if _, ok := b.Take(id, 0, true, now); ok != tc.kept {
				t.Errorf("%s still pending: %v, want %v", id, ok, tc.kept)
			}
		}
	}
	// A dropped request asked again is a new pending entry.
	if id := keep("alice", "mine", "a"); id == gone[0] {
		t.Fatal("a dropped request kept its id")
	}
}

// TestBookKeepsDefinitionsApart: the same request from sessions of two
// definitions of a server is two pending requests (found by a red-team
// helper: merged, the second kept the first's definition, and an approval
// made for the server as defined now was refused).
func TestBookKeepsDefinitionsApart(t *testing.T) {
	b := NewBook()
	now := time.Now()
	target := Target{User: "alice", Agent: "claude", Server: "mine", Kind: "tool", Name: "a"}
	keep := func(def string) Pending {
		p, ok := b.Keep(Pending{PendingInfo: api.PendingInfo{Definition: def}, Target: target, UID: 1000, Digest: "r1"}, now, time.Hour)
		if !ok {
			t.Fatal("not kept")
		}
		return p
	}
	old, cur := keep("d1"), keep("d2")
	if old.ID == cur.ID || cur.Definition != "d2" {
		t.Fatalf("requests of two definitions: %s (%s) and %s (%s), want two entries", old.ID, old.Definition, cur.ID, cur.Definition)
	}
	if again := keep("d2"); again.ID != cur.ID || again.Attempts != 2 {
		t.Fatalf("the same request of one definition again: %s, %d attempts; want %s, 2", again.ID, again.Attempts, cur.ID)
	}
	b.Forget(target, "r1", "d1")
	if _, ok := b.Take(old.ID, 1000, false, now); ok {
		t.Fatal("forgotten, the old definition's request is still pending")
	}
	if p, ok := b.Take(cur.ID, 1000, false, now); !ok || p.Definition != "d2" {
		t.Fatalf("the new definition's request: %+v %v", p, ok)
	}
}
