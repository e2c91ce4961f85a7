package consent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "consent.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func grant(t *testing.T, s *Store, r Record) *Record {
	t.Helper()
	if r.User == "" {
		r.User = "alice"
	}
	if r.Agent == "" {
		r.Agent = "claude-desktop"
	}
	if r.Server == "" {
		r.Server = "github"
	}
	r.CreatedBy, r.Via = "alice", "cli"
	if err := s.Add(&r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestRecordMatching(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	now := time.Now()
	soon := now.Add(time.Hour)
	rec := grant(t, s, Record{Tools: []string{"list_*", "get_issue"}, ExpiresAt: &soon})
	tests := []struct {
		name string
		q    Query
		want bool
	}{
		{"glob", Query{Name: "list_repos"}, true},
		{"exact", Query{Name: "get_issue"}, true},
		{"not covered", Query{Name: "create_issue"}, false},
		{"glob is whole-name", Query{Name: "xlist_repos"}, false},
		{"other agent", Query{Agent: "cursor", Name: "list_repos"}, false},
		{"other user", Query{User: "bob", Name: "list_repos"}, false},
		{"other server", Query{Server: "gitlab", Name: "list_repos"}, false},
		{"just before expiry", Query{Name: "list_repos", Now: soon.Add(-time.Millisecond)}, true},
		{"at expiry", Query{Name: "list_repos", Now: soon}, false},
		{"resource kind not covered by tool patterns", Query{Kind: KindResource, Name: "list_x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.q
			if q.User == "" {
				q.User = "alice"
			}
			if q.Agent == "" {
				q.Agent = "claude-desktop"
			}
			if q.Server == "" {
				q.Server = "github"
			}
			if q.Kind == "" {
				q.Kind = KindTool
			}
			if q.Now.IsZero() {
				q.Now = now
			}
			d := e.Decide(q)
			if d.Allow != tt.want {
				t.Fatalf("Decide = %+v, want allow=%v", d, tt.want)
			}
			if d.Allow && d.Record != rec.ID {
				t.Fatalf("allowed by %q, want %q", d.Record, rec.ID)
			}
			if !d.Allow && d.Reason == "" {
				t.Fatal("denial without a reason")
			}
		})
	}
}

func TestRevokeAppliesAtOnce(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	r := grant(t, s, Record{Tools: []string{"*"}})
	q := Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "x", Now: time.Now()}
	if !e.Decide(q).Allow {
		t.Fatal("not allowed before revoke")
	}
	if _, err := s.Revoke(r.ID, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	e.Invalidate()
	if d := e.Decide(q); d.Allow || !strings.Contains(d.Reason, "revoked") {
		t.Fatalf("after revoke: %+v", d)
	}
	if _, err := s.Revoke(r.ID, "alice", "again"); err == nil {
		t.Fatal("double revoke accepted")
	}
	got, _ := s.Get(r.ID)
	if got.RevokedBy != "alice" || got.Reason != "done" || got.RevokedAt == nil {
		t.Fatalf("revocation not recorded: %+v", got)
	}
}

func TestBudgetUnderConcurrency(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	max := int64(25)
	grant(t, s, Record{Tools: []string{"*"}, MaxCalls: &max})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if e.Decide(Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "x", Now: time.Now()}).Allow {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != max {
		t.Fatalf("%d calls allowed on a budget of %d", allowed.Load(), max)
	}
}

func TestConditions(t *testing.T) {
	tests := []struct {
		name, expr string
		args       map[string]any
		compileErr bool
		want       bool
		evalErr    bool
	}{
		{"true", `args.repo.startsWith("acme/") && size(args.body) < 10000`, map[string]any{"repo": "acme/x", "body": "hi"}, false, true, false},
		{"false", `args.repo.startsWith("acme/")`, map[string]any{"repo": "evil/x"}, false, false, false},
		{"uses tool and user", `tool == "list_repos" && user == "alice"`, nil, false, true, false},
		{"missing key errors", `args.repo == "x"`, map[string]any{}, false, false, true},
		{"syntax error", `args.repo ==`, nil, true, false, false},
		{"unknown variable", `secret == 1`, nil, true, false, false},
		{"not a bool", `size(tool)`, nil, true, false, false},
		// What README says of comparisons across JSON types: an exclusion
		// passes "true" and 1, which servers coerce to true; a positive
		// check passes a real false only; an ordering on a string fails.
		{"exclusion passes a coerced true", `args.recursive != true`, map[string]any{"recursive": "true"}, false, true, false},
		{"exclusion passes a coerced 1", `args.recursive != true`, map[string]any{"recursive": int64(1)}, false, true, false},
		{"positive check refuses a string", `args.recursive == false`, map[string]any{"recursive": "false"}, false, false, false},
		{"positive check refuses 0", `args.recursive == false`, map[string]any{"recursive": int64(0)}, false, false, false},
		{"positive check passes false", `args.recursive == false`, map[string]any{"recursive": false}, false, true, false},
		{"typed check refuses a string", `type(args.recursive) == bool && !args.recursive`, map[string]any{"recursive": "false"}, false, false, false},
		{"optional argument left out", `!has(args.recursive) || args.recursive == false`, map[string]any{}, false, true, false},
		{"ordering on a string errors", `args.n <= 10`, map[string]any{"n": "3"}, false, false, true},
		{"too costly", `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a+b+c+d+e > 0)))))`, nil, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Compile(tt.expr)
			if tt.compileErr {
				if err == nil {
					t.Fatal("compiled")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Eval(Input{Args: tt.args, Tool: "list_repos", User: "alice", Now: time.Now()})
			if (err != nil) != tt.evalErr || got != tt.want {
				t.Fatalf("Eval = %v, %v; want %v (error %v)", got, err, tt.want, tt.evalErr)
			}
		})
	}
}

func TestConditionInDecision(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	grant(t, s, Record{Tools: []string{"create_issue"}, When: `args.repo.startsWith("acme/")`})
	q := Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "create_issue", Now: time.Now()}
	q.Args = map[string]any{"repo": "acme/web"}
	if !e.Decide(q).Allow {
		t.Fatal("condition true but denied")
	}
	q.Args = map[string]any{"repo": "other/web"}
	if d := e.Decide(q); d.Allow || !strings.Contains(d.Reason, "condition") {
		t.Fatalf("condition false: %+v", d)
	}
	if !e.Visible("alice", 0, "claude-desktop", "github", "", "", KindTool, "create_issue", time.Now()) {
		t.Fatal("conditional grant hides the tool from tools/list")
	}
	// Arguments too large to read: a condition cannot be evaluated, so its
	// record allows nothing; one without a condition still does.
	q.Args, q.ArgsUnread = nil, "its arguments hold 20000 values"
	if d := e.Decide(q); d.Allow || !strings.Contains(d.Reason, "cannot be evaluated: its arguments hold 20000 values") {
		t.Fatalf("a condition over unread arguments: %+v", d)
	}
	grant(t, s, Record{Tools: []string{"create_issue"}})
	e.Invalidate()
	if d := e.Decide(q); !d.Allow {
		t.Fatalf("a record without a condition, arguments unread: %+v", d)
	}
}

func TestListFiltersAndMigrations(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	grant(t, s, Record{User: "alice", Tools: []string{"a"}})
	grant(t, s, Record{User: "bob", Tools: []string{"b"}})
	r := grant(t, s, Record{User: "alice", Server: "fs", Tools: []string{"c"}})
	if _, err := s.Revoke(r.ID, "alice", ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		f    Filter
		want int
	}{{Filter{}, 2}, {Filter{User: "alice"}, 1}, {Filter{User: "alice", IncludeInactive: true}, 2}, {Filter{Server: "fs", IncludeInactive: true}, 1}} {
		got, err := s.List(context.Background(), tt.f)
		if err != nil || len(got) != tt.want {
			t.Errorf("List(%+v) = %d records, %v; want %d", tt.f, len(got), err, tt.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening applies no migration twice and keeps the data.
	s, err = Open(filepath.Join(dir, "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if v, _ := s.SchemaVersion(); v != len(migrations) {
		t.Fatalf("schema version %d", v)
	}
	if got, _ := s.List(context.Background(), Filter{IncludeInactive: true}); len(got) != 3 {
		t.Fatalf("%d records after reopen", len(got))
	}
}

func TestStoreFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "consent.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	grant(t, s, Record{Tools: []string{"x"}}) // a write: the WAL and its index exist now
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(p), err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Base(p), m)
		}
	}
}

func TestCallsCountedWithAndWithoutBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consent.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(s)
	max := int64(10)
	free := grant(t, s, Record{Tools: []string{"free_*"}})
	budget := grant(t, s, Record{Tools: []string{"paid_*"}, MaxCalls: &max})
	for _, name := range []string{"free_a", "free_b", "free_a", "paid_x", "paid_x"} {
		if d := e.Decide(Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: name, Now: time.Now()}); !d.Allow {
			t.Fatalf("%s denied: %s", name, d.Reason)
		}
	}
	for _, tt := range []struct {
		id   string
		want int64
	}{{free.ID, 3}, {budget.ID, 2}} {
		r, err := s.Get(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if r.CallsUsed != tt.want {
			t.Errorf("record %s: calls_used %d, want %d", tt.id, r.CallsUsed, tt.want)
		}
	}
	// Counts survive a restart.
	e.Decide(Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "free_c", Now: time.Now()})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s2.Close() }()
	if r, _ := s2.Get(free.ID); r == nil || r.CallsUsed != 4 {
		t.Fatalf("after reopening: %+v, want calls_used 4", r)
	}
}

func TestConditionNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string // must all be among Names()
	}{
		{`args.repo.startsWith("acme/")`, []string{"repo", "acme/"}},
		{`"path" in args && args["path"] != "/etc"`, []string{"path", "/etc"}},
		{`args.opts.mode == "r"`, []string{"opts", "mode", "r"}},
		{`tool == "x"`, []string{"x"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			c, err := Compile(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, n := range c.Names() {
				have[n] = true
			}
			for _, w := range tc.want {
				if !have[w] {
					t.Errorf("Names() = %q lacks %q", c.Names(), w)
				}
			}
		})
	}
}

// TestSessionAndPinBinding: a record answered for one session covers no
// other session, and a record bound to a tool definition covers no other
// definition; the refusal says which record and why.
func TestSessionAndPinBinding(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	grant(t, s, Record{Tools: []string{"create_issue"}, Session: "s1"})
	pinned := grant(t, s, Record{Tools: []string{"delete_repo"}, Pin: "aaaa1111"})
	own := grant(t, s, Record{Tools: []string{"push"}, Definition: "d1d1d1d1"})
	admins := grant(t, s, Record{Tools: []string{"pull"}})
	tests := []struct {
		name       string
		q          Query
		want       bool
		wantReason string
	}{
		{"its session", Query{Name: "create_issue", Session: "s1"}, true, ""},
		{"another session", Query{Name: "create_issue", Session: "s2"}, false, "no consent"},
		{"no session", Query{Name: "create_issue"}, false, "no consent"},
		{"the pinned definition", Query{Name: "delete_repo", Pin: "aaaa1111"}, true, ""},
		{"another definition", Query{Name: "delete_repo", Pin: "bbbb2222"}, false, pinned.ID + " was given for another definition"},
		{"definition unknown", Query{Name: "delete_repo"}, false, "another definition"},
		// The server's definition (config.Server.Definition).
		{"the user's server as granted", Query{Name: "push", Definition: "d1d1d1d1"}, true, ""},
		{"the user's server defined anew", Query{Name: "push", Definition: "d2d2d2d2"}, false, own.ID + " was given for another definition of server github"},
		{"the administrator's server of the name", Query{Name: "push"}, false, "a user's own server named github, not the administrator's"},
		{"a user's own server where the administrator's was", Query{Name: "pull", Definition: "d1d1d1d1"}, false, admins.ID + " was given for the administrator's server github"},
		{"the administrator's server as granted", Query{Name: "pull"}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.User, q.Agent, q.Server, q.Kind, q.Now = "alice", "claude-desktop", "github", KindTool, time.Now()
			d := e.Decide(q)
			if d.Allow != tc.want || !strings.Contains(d.Reason, tc.wantReason) {
				t.Fatalf("Decide = %+v, want allow=%v with reason containing %q", d, tc.want, tc.wantReason)
			}
		})
	}
	if e.Visible("alice", 0, "claude-desktop", "github", "s2", "", KindTool, "create_issue", time.Now()) {
		t.Fatal("a record of session s1 makes the tool visible in session s2")
	}
	if !e.Visible("alice", 0, "claude-desktop", "github", "s1", "", KindTool, "create_issue", time.Now()) {
		t.Fatal("a record of session s1 does not make the tool visible in s1")
	}
	if e.Visible("alice", 0, "claude-desktop", "github", "s1", "d2d2d2d2", KindTool, "push", time.Now()) {
		t.Fatal("a record of one definition of the server makes the tool visible in a session of another")
	}
	if !e.Visible("alice", 0, "claude-desktop", "github", "s1", "d1d1d1d1", KindTool, "push", time.Now()) {
		t.Fatal("a record of a definition of the server does not make the tool visible in its session")
	}
}

// TestBindUnbound: records made before records were bound to a server
// definition (the migration gives them Unbound) cover nothing until
// BindUnbound binds them to the definition their server has now; a pair
// whose definition cannot be read stays unbound, the others are bound.
func TestBindUnbound(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	mine := grant(t, s, Record{Server: "mine", Tools: []string{"a"}})
	adm := grant(t, s, Record{Server: "adm", Tools: []string{"a"}})
	broken := grant(t, s, Record{User: "bob", Server: "mine", Tools: []string{"a"}})
	if _, err := s.db.Exec(`UPDATE consents SET definition = ?`, Unbound); err != nil {
		t.Fatal(err)
	}
	e.Invalidate()
	allowed := func(user, server, def string) bool {
		return e.Decide(Query{User: user, Agent: "claude-desktop", Server: server, Kind: KindTool, Name: "a", Definition: def, Now: time.Now()}).Allow
	}
	for _, def := range []string{"", "d1"} {
		if allowed("alice", "mine", def) || allowed("alice", "adm", def) {
			t.Fatalf("an unbound record covers a session of definition %q", def)
		}
	}
	bound, err := s.BindUnbound(func(user, server string) (string, error) {
		switch {
		case user == "bob":
			return "", os.ErrPermission
		case server == "mine":
			return "d1", nil
		}
		return "", nil
	})
	slices.SortFunc(bound, func(a, b Bound) int { return strings.Compare(a.Server, b.Server) })
	if want := []Bound{{"alice", "adm", "", 1}, {"alice", "mine", "d1", 1}}; !slices.Equal(bound, want) || err == nil || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("BindUnbound = %+v, %v; want %+v and an error naming bob's", bound, err, want)
	}
	e.Invalidate()
	for _, tc := range []struct {
		user, server, def string
		want              bool
	}{
		{"alice", "mine", "d1", true}, {"alice", "mine", "d2", false}, {"alice", "mine", "", false},
		{"alice", "adm", "", true}, {"alice", "adm", "d1", false},
		{"bob", "mine", "d1", false}, {"bob", "mine", "", false},
	} {
		if got := allowed(tc.user, tc.server, tc.def); got != tc.want {
			t.Errorf("%s's %s, definition %q: allowed %v, want %v", tc.user, tc.server, tc.def, got, tc.want)
		}
	}
	for id, want := range map[string]string{mine.ID: "d1", adm.ID: "", broken.ID: Unbound} {
		if r, err := s.Get(id); err != nil || r.Definition != want {
			t.Errorf("record %s: definition %q (%v), want %q", id, r.Definition, err, want)
		}
	}
}

// TestUncoveredReason pins the text of the reason an uncovered request
// gets (it is in every observe and deny record): the name is quoted as Go
// quotes it, so a name with quotes or control characters stays one token.
func TestUncoveredReason(t *testing.T) {
	e := NewEngine(openStore(t))
	tests := []struct {
		name, want string
	}{
		{"echo", `no consent lets agent claude-desktop use tool "echo" of server github for user alice`},
		{"a\"b\n", `no consent lets agent claude-desktop use tool "a\"b\n" of server github for user alice`},
		{"é\x00", `no consent lets agent claude-desktop use tool "é\x00" of server github for user alice`},
	}
	for _, tt := range tests {
		d := e.Decide(Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: tt.name, Now: time.Now()})
		if d.Allow || d.Reason != tt.want {
			t.Errorf("Decide(%q) = %+v, want the reason %s", tt.name, d, tt.want)
		}
	}
}

// PruneInactive keeps the newest inactive records of a user, deletes the
// older ones, and never touches active records or another user's.
func TestPruneInactive(t *testing.T) {
	s := openStore(t)
	past := time.Now().Add(-time.Hour)
	base := time.Now().Add(-time.Hour)
	add := func(r *Record, age int) {
		t.Helper()
		if err := s.Add(r); err != nil {
			t.Fatal(err)
		}
		// Distinct creation times, oldest first (Add takes the clock's).
		if _, err := s.db.Exec(`UPDATE consents SET created_at = ? WHERE id = ?`, base.Add(time.Duration(age)*time.Second).UnixMilli(), r.ID); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := range 6 {
		r := &Record{User: "alice", Agent: "a", Server: "s", Tools: []string{"t"}, CreatedBy: "alice", Via: "cli"}
		add(r, i)
		ids = append(ids, r.ID)
	}
	for _, id := range []string{ids[0], ids[1], ids[3], ids[4]} {
		if _, err := s.Revoke(id, "alice", "done"); err != nil {
			t.Fatal(err)
		}
	}
	expired := &Record{User: "alice", Agent: "a", Server: "s", Tools: []string{"t"}, CreatedBy: "alice", Via: "cli", ExpiresAt: &past}
	add(expired, 2)
	other := &Record{User: "bob", Agent: "a", Server: "s", Tools: []string{"t"}, CreatedBy: "bob", Via: "cli"}
	add(other, 0)
	if _, err := s.Revoke(other.ID, "bob", "done"); err != nil {
		t.Fatal(err)
	}
	// alice's inactive, newest first: ids[4], ids[3], expired, ids[1], ids[0].
	n, err := s.PruneInactive("alice", 2)
	if err != nil || n != 3 {
		t.Fatalf("PruneInactive = %d, %v; want 3 (5 inactive, keep 2)", n, err)
	}
	all, err := s.List(t.Context(), Filter{IncludeInactive: true})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, r := range all {
		left = append(left, r.ID)
	}
	want := []string{ids[5], ids[4], ids[3], ids[2], other.ID}
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v (the two newest inactive, the active ones and bob's)", left, want)
	}
}

// TestInvalidationIsPerTriple: a change to one (user, agent, server)'s
// records sends only that triple's next decision to the store. One user
// churning grants used to empty the whole cache, so every other user's
// decisions queued on the store's one connection behind the churn.
func TestInvalidationIsPerTriple(t *testing.T) {
	one := int64(1)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *Store, e *Engine)
		// allowed is whether bob's call is allowed after the change.
		allowed bool
	}{
		{"alice grants", func(t *testing.T, s *Store, e *Engine) {
			r := grant(t, s, Record{Tools: []string{"*"}})
			e.InvalidateFor(r.User, r.Agent, r.Server)
		}, true},
		{"alice revokes", func(t *testing.T, s *Store, e *Engine) {
			r := grant(t, s, Record{Tools: []string{"*"}})
			if _, err := s.Revoke(r.ID, "alice", "test"); err != nil {
				t.Fatal(err)
			}
			e.InvalidateFor(r.User, r.Agent, r.Server)
		}, true},
		{"alice spends a budget", func(t *testing.T, s *Store, e *Engine) {
			grant(t, s, Record{Tools: []string{"*"}, MaxCalls: &one})
			if !e.Decide(Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "x", Now: time.Now()}).Allow {
				t.Fatal("alice's budgeted call not allowed")
			}
		}, true},
		{"bob's own consent revoked", func(t *testing.T, s *Store, e *Engine) {
			rs, err := s.List(context.Background(), Filter{User: "bob"})
			if err != nil || len(rs) != 1 {
				t.Fatalf("bob's records: %v %v", rs, err)
			}
			if _, err := s.Revoke(rs[0].ID, "bob", "test"); err != nil {
				t.Fatal(err)
			}
			e.InvalidateFor("bob", "claude-desktop", "github")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			e := NewEngine(s)
			grant(t, s, Record{User: "bob", Tools: []string{"*"}})
			bob := Query{User: "bob", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "x", Now: time.Now()}
			if !e.Decide(bob).Allow {
				t.Fatal("bob's call not allowed")
			}
			before := e.Lookups()
			tc.change(t, s, e)
			aliceLookups := e.Lookups() - before
			d := e.Decide(bob)
			if d.Allow != tc.allowed {
				t.Fatalf("bob's call after the change: %+v, want allowed %v", d, tc.allowed)
			}
			bobLookups := e.Lookups() - before - aliceLookups
			if want := uint64(0); tc.allowed && bobLookups != want {
				t.Fatalf("bob's decision read the store %d times after a change to alice's records", bobLookups)
			}
			if !tc.allowed && bobLookups != 1 {
				t.Fatalf("bob's decision read the store %d times after a change to his own record, want 1", bobLookups)
			}
		})
	}
}

// TestLookupRacingAChangeIsNotCached: a look-up whose query ran before a
// change to its triple's records, and that ends after it, must not leave
// its stale answer in the cache (a revoked consent would allow on).
func TestLookupRacingAChangeIsNotCached(t *testing.T) {
	s := openStore(t)
	e := NewEngine(s)
	r := grant(t, s, Record{Tools: []string{"*"}})
	q := Query{User: "alice", Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "x", Now: time.Now()}
	afterList = func(triple) {
		afterList = nil // the revocation's own look-up below runs undisturbed
		if _, err := s.Revoke(r.ID, "alice", "test"); err != nil {
			t.Error(err)
		}
		e.InvalidateFor(r.User, r.Agent, r.Server)
	}
	t.Cleanup(func() { afterList = nil })
	if !e.Decide(q).Allow {
		t.Fatal("the racing decision read the store before the revocation and should allow")
	}
	if d := e.Decide(q); d.Allow {
		t.Fatalf("the stale look-up was cached: the revoked consent still allows: %+v", d)
	}
	if len(e.inflight) != 0 {
		t.Fatalf("look-ups left marked under way: %v", e.inflight)
	}
}

func TestCountActive(t *testing.T) {
	s := openStore(t)
	one, past := int64(1), time.Now().Add(-time.Minute)
	grant(t, s, Record{Tools: []string{"a"}})
	grant(t, s, Record{Tools: []string{"b"}, ExpiresAt: &past})
	used := grant(t, s, Record{Tools: []string{"c"}, MaxCalls: &one})
	if ok, err := s.Consume(used.ID, time.Now()); !ok || err != nil {
		t.Fatalf("consume: %v %v", ok, err)
	}
	revoked := grant(t, s, Record{Tools: []string{"d"}})
	if _, err := s.Revoke(revoked.ID, "alice", "test"); err != nil {
		t.Fatal(err)
	}
	grant(t, s, Record{User: "bob", Tools: []string{"e"}})
	// An earlier account of the name "carol" (uid 1001), and one gone when
	// its records were bound: their records cover nothing and count for
	// no account.
	grant(t, s, Record{User: "carol", UID: 1001, Tools: []string{"f"}})
	grant(t, s, Record{User: "carol", UID: api.UIDGone, Tools: []string{"g"}})
	for _, tc := range []struct {
		user string
		uid  int64
		want int
	}{{"alice", 0, 1}, {"bob", 0, 1}, {"carol", 1002, 0}, {"carol", 1001, 1}, {"dave", 0, 0}, {"", 0, 3}} {
		n, err := s.CountActive(context.Background(), tc.user, tc.uid)
		if err != nil {
			t.Fatal(err)
		}
		listed, err := s.List(context.Background(), Filter{User: tc.user})
		if err != nil {
			t.Fatal(err)
		}
		covering := slices.DeleteFunc(listed, func(r *Record) bool { return r.UID < 0 || (tc.user != "" && r.UID != tc.uid) })
		if n != tc.want || n != len(covering) {
			t.Errorf("user %q uid %d: CountActive %d, List %d, want %d", tc.user, tc.uid, n, len(covering), tc.want)
		}
	}
}

func TestRevokeServer(t *testing.T) {
	s := openStore(t)
	mine := []*Record{
		grant(t, s, Record{Server: "mine", Tools: []string{"a"}}),
		grant(t, s, Record{Server: "mine", Agent: "cursor", Tools: []string{"b"}}),
	}
	others := []*Record{
		grant(t, s, Record{Server: "other", Tools: []string{"a"}}),
		grant(t, s, Record{User: "bob", Server: "mine", Tools: []string{"a"}}),
	}
	got, err := s.RevokeServer("alice", "mine", "mcpcaged", "server mine was removed by its user")
	if err != nil || len(got) != len(mine) {
		t.Fatalf("revoked %d (%v), want %d", len(got), err, len(mine))
	}
	for _, tc := range []struct {
		recs    []*Record
		revoked bool
	}{{mine, true}, {others, false}} {
		for _, r := range tc.recs {
			now, err := s.Get(r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if (now.RevokedAt != nil) != tc.revoked || tc.revoked && now.Reason != "server mine was removed by its user" {
				t.Errorf("%s (%s, %s, %s): revoked %v reason %q, want revoked %v", r.ID, r.User, r.Agent, r.Server, now.RevokedAt != nil, now.Reason, tc.revoked)
			}
		}
	}
	if again, err := s.RevokeServer("alice", "mine", "mcpcaged", "again"); err != nil || len(again) != 0 {
		t.Fatalf("a second revocation: %d %v", len(again), err)
	}
}

// TestRecordOfAnotherUIDCoversNothing: a record covers the sessions of
// the uid its user had when it was given; an account made anew under the
// name (another uid) inherits nothing, and records of a release before
// uids were kept cover nothing until bound.
func TestRecordOfAnotherUIDCoversNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		recUID int64
		uid    uint32
		allow  bool
		reason string
	}{
		{"the same uid", 1000, 1000, true, ""},
		{"the name's new account", 1000, 1005, false, "when the name was uid 1000, not uid 1005"},
		{"not yet bound", api.UIDUnbound, 1000, false, "before consents were bound to a uid"},
		{"its user was gone", api.UIDGone, 1000, false, "when no account of that name existed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			e := NewEngine(s)
			grant(t, s, Record{Tools: []string{"list_*"}, UID: tc.recUID})
			q := Query{User: "alice", UID: tc.uid, Agent: "claude-desktop", Server: "github", Kind: KindTool, Name: "list_repos", Now: time.Now()}
			d := e.Decide(q)
			if d.Allow != tc.allow || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("Decide = %+v, want allow %v, reason with %q", d, tc.allow, tc.reason)
			}
			if v := e.Visible("alice", tc.uid, "claude-desktop", "github", "", "", KindTool, "list_repos", time.Now()); v != tc.allow {
				t.Fatalf("Visible = %v, want %v", v, tc.allow)
			}
		})
	}
}

// TestBindUIDs: records of a release before uids were kept are bound to
// the uid their user has now; a user no longer known binds to UIDGone
// (covering nothing, whoever takes the name later); a user whose uid
// cannot be read stays unbound.
func TestBindUIDs(t *testing.T) {
	s := openStore(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		grant(t, s, Record{User: u, Tools: []string{"*"}, UID: api.UIDUnbound})
	}
	grant(t, s, Record{User: "alice", Tools: []string{"x"}, UID: 1000}) // bound already: left as it is
	bound, err := s.BindUIDs(func(user string) (uint32, bool, error) {
		switch user {
		case "alice":
			return 1000, true, nil
		case "bob":
			return 0, false, nil
		}
		return 0, false, errors.New("nss down")
	})
	if err == nil || !strings.Contains(err.Error(), "carol") {
		t.Fatalf("BindUIDs error %v, want one naming carol", err)
	}
	if bound["alice"] != 1 || bound["bob"] != 1 || bound["carol"] != 0 {
		t.Fatalf("bound %v", bound)
	}
	want := map[string]int64{"alice": 1000, "bob": api.UIDGone, "carol": api.UIDUnbound}
	recs, err := s.List(context.Background(), Filter{IncludeInactive: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.UID != want[r.User] {
			t.Errorf("%s's record %s has uid %d, want %d", r.User, r.ID, r.UID, want[r.User])
		}
	}
}
