package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// A user's consents live on root's disk: one grant, the consents one
// user keeps in force and the reason of a revocation are bounded (found
// by a red-team helper: 30 grants of 9000 patterns each took 34 MB in
// 7 s).
func TestGrantBounds(t *testing.T) {
	d := testDaemon(t, policyConfig)
	many := func(n int, p string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = p
		}
		return out
	}
	tests := []struct {
		name  string
		grant api.Grant
		err   string // "" allowed
	}{
		{"a usual grant", api.Grant{Agent: "cd", Server: "gh", Tools: []string{"list_*", "get_*"}}, ""},
		{"too many patterns", api.Grant{Agent: "cd", Server: "gh", Tools: many(maxGrantPatterns+1, "x")}, "at most 256"},
		{"a pattern too long", api.Grant{Agent: "cd", Server: "gh", Resources: []string{strings.Repeat("a", maxGrantPatternBytes+1)}}, "at most 1024"},
		{"patterns too large together", api.Grant{Agent: "cd", Server: "gh", Tools: many(20, strings.Repeat("b", 1000))}, "at most 16384"},
		{"a condition too long", api.Grant{Agent: "cd", Server: "gh", Tools: []string{"x"}, When: "args.a == '" + strings.Repeat("c", maxConditionBytes) + "'"}, "--when"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.grant
			_, err := d.grant(Peer{UID: 0}, &g)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("grant: %v, want %q", err, tt.err)
			}
		})
	}
	// Consents in force, per user.
	for i := 1; i < maxActiveConsents; i++ { // one is in force from the table
		if _, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"list_*"}}); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	_, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"list_*"}})
	if err == nil || !strings.Contains(err.Error(), "1024 consents in force") || !strings.Contains(err.Error(), "mcpcage revoke") {
		t.Fatalf("a grant past the user's bound: %v", err)
	}
	// An answer to a question stores a consent too: the same bound
	// (answers went around it: found by a red-team helper's review).
	if _, err := d.consentFromAnswer(answerGrant{target: ask.Target{User: "root", Agent: "cd", Server: "gh", Kind: string(consent.KindTool), Name: "list_x"},
		answer: api.AnswerSession, session: "s1", by: "root", via: "prompt"}); err == nil || !strings.Contains(err.Error(), "1024 consents in force") {
		t.Fatalf("an answer past the user's bound: %v", err)
	}
	// A revocation makes room; its reason is bounded.
	list, _ := d.consents.Store().List(t.Context(), consent.Filter{User: "root"})
	if _, err := d.revoke(Peer{UID: 0}, list[0].ID, strings.Repeat("r", maxRevokeReason+1)); err == nil {
		t.Fatal("a revocation with an over-long reason was taken")
	}
	if _, err := d.revoke(Peer{UID: 0}, list[0].ID, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"list_*"}}); err != nil {
		t.Fatalf("a grant after a revocation made room: %v", err)
	}
}

// TestBindUnboundConsents: consents stored before consents were bound to
// a server's definition are bound, at the daemon's start, to the
// definition their user's server of that name has then: the user's own
// server's digest (a user named by uid too: found by a red-team helper,
// such users' records were bound to the administrator's server), or the
// administrator's ("") for an administrator's server, a server that no
// longer exists and a user that no longer does.
func TestBindUnboundConsents(t *testing.T) {
	d := testDaemon(t, policyConfig)
	us, err := userservers.Open(filepath.Join(t.TempDir(), "userservers"))
	if err != nil {
		t.Fatal(err)
	}
	d.userServers = us
	mine := userservers.Server{Command: []string{"x"}}
	if _, err := us.Put(0, "mine", mine); err != nil {
		t.Fatal(err)
	}
	// A user the system cannot look up (LDAP without cgo) is "uid:N".
	theirs := userservers.Server{Command: []string{"y"}}
	if _, err := us.Put(4242, "mine", theirs); err != nil {
		t.Fatal(err)
	}
	add := func(user, server string) string {
		r := &consent.Record{User: user, Agent: "cd", Server: server, Tools: []string{"a"}, CreatedBy: "root", Via: "cli", Definition: consent.Unbound}
		if err := d.consents.Store().Add(r); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	want := map[string]string{
		add("root", "mine"):                      userservers.Digest(mine),
		add("root", "gh"):                        "",
		add("root", "gone"):                      "",
		add("mcpcage-no-such-user-here", "mine"): "",
		add("uid:4242", "mine"):                  userservers.Digest(theirs),
	}
	d.bindUnboundConsents()
	for id, def := range want {
		r, err := d.consents.Store().Get(id)
		if err != nil || r.Definition != def {
			t.Errorf("consent %s of %s for %s: definition %q (%v), want %q", id, r.User, r.Server, r.Definition, err, def)
		}
	}
}

// TestGrantForAUserNamedByUID: an administrator grants for a user the
// system cannot look up by name (LDAP without cgo: their sessions are
// "uid:N") as uid:N, and the record carries the name those sessions have;
// a user who is not an administrator may not grant for another.
func TestGrantForAUserNamedByUID(t *testing.T) {
	d := testDaemon(t, policyConfig)
	for _, tc := range []struct {
		name     string
		by       Peer
		user     string
		wantUser string
		wantErr  string
	}{
		{"root for uid:4242", Peer{UID: 0}, "uid:4242", "uid:4242", ""},
		{"root for an unknown name", Peer{UID: 0}, "mcpcage-no-such-user-here", "", "no user"},
		{"a user for another", Peer{UID: 4243}, "uid:4242", "", "may only grant for yourself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := d.grant(tc.by, &api.Grant{User: tc.user, Agent: "cd", Server: "gh", Tools: []string{"list_*"}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("grant: %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || r.User != tc.wantUser {
				t.Fatalf("grant = %+v, %v; want a record for %s", r, err, tc.wantUser)
			}
		})
	}
}
