package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/subid"
)

// own is the account of a uid of its own; sub that of alice's (1000)
// subordinate uid.
func own(uid uint32) account { return Peer{UID: uid}.account() }

func sub(uid uint32) account {
	return Peer{UID: uid, Owner: &subid.Owner{UID: 1000, Name: "alice"}}.account()
}

func TestUIDSlots(t *testing.T) {
	s := uidSlots{what: "things", max: 2}
	r1, err := s.take(own(1000))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.take(own(1000))
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		a       account
		wantErr string // "" when the take succeeds
	}{
		{"a third for the same user", own(1000), "uid 1000 already has 2 things open, the most one user may"},
		{"a subordinate uid of the same user", sub(100003), "uid 100003 counts as its owner alice (uid 1000, /etc/subuid), who already has 2 things open"},
		{"another user", own(1001), ""},
		{"a subordinate uid of another user", Peer{UID: 200000, Owner: &subid.Owner{UID: 1001, Name: "bob"}}.account(), ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			release, err := s.take(st.a)
			if (err != nil) != (st.wantErr != "") || (err != nil && !strings.Contains(err.Error(), st.wantErr)) {
				t.Fatalf("take(%+v) = %v, want error %q", st.a, err, st.wantErr)
			}
			if release != nil {
				release()
			}
		})
	}
	r1()
	r1() // twice: counted once
	if _, err := s.take(sub(100004)); err != nil {
		t.Fatalf("after a release, a subordinate uid: %v", err)
	}
	r2()
	if n := s.held[1000]; n != 1 {
		t.Fatalf("held = %d, want 1", n)
	}
}

// TestUIDSlotsAllAccounts: maxAll holds whoever takes the slots, and a
// refusal by it says what to do.
func TestUIDSlotsAllAccounts(t *testing.T) {
	s := uidSlots{what: "connections", max: 2, maxAll: 5}
	var releases []func()
	for uid := uint32(1000); len(releases) < 5; uid++ {
		for range 2 {
			if len(releases) == 5 {
				break
			}
			r, err := s.take(own(uid))
			if err != nil {
				t.Fatalf("take %d: %v", len(releases), err)
			}
			releases = append(releases, r)
		}
	}
	_, err := s.take(own(2000))
	if err == nil || !strings.Contains(err.Error(), "mcpcaged already holds 5 connections from all users") || !strings.Contains(err.Error(), "try again") {
		t.Fatalf("a take past maxAll: %v", err)
	}
	if uid, n := s.most(); uid != 1000 || n != 2 {
		t.Fatalf("most() = %d, %d; want 1000, 2", uid, n)
	}
	releases[4]()
	if _, err := s.take(own(2000)); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if s.total != 5 {
		t.Fatalf("total = %d, want 5", s.total)
	}
}

// TestRefusalLogIsBounded: a flood of refusals makes one warning, and
// the next says how many went unsaid.
func TestRefusalLogIsBounded(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var r refusalLog
	for i := range 1000 {
		r.warn(log, "connection refused", func() []any { return []any{"n", i} })
	}
	if got := strings.Count(buf.String(), "level=WARN"); got != 1 {
		t.Fatalf("%d warnings for 1000 refusals, want 1:\n%.500s", got, buf.String())
	}
	r.last = r.last.Add(-refusalLogEvery) // the interval is over
	r.warn(log, "connection refused", func() []any { return nil })
	if want := fmt.Sprintf("refused_unlogged_since_last_warning=%d", 999); !strings.Contains(buf.String(), want) {
		t.Fatalf("the next warning does not say %q:\n%s", want, buf.String())
	}
}
