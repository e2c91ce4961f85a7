package daemon

import (
	"strings"
	"testing"
)

func TestUIDSlots(t *testing.T) {
	s := uidSlots{what: "things", max: 2}
	r1, err := s.take(1000)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.take(1000)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		uid     uint32
		wantErr bool
	}{
		{"a third for the same user", 1000, true},
		{"another user", 1001, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			release, err := s.take(st.uid)
			if (err != nil) != st.wantErr {
				t.Fatalf("take(%d) = %v, want error %v", st.uid, err, st.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "uid 1000 already has 2 things open") {
				t.Fatalf("refusal %q does not say what", err)
			}
			if release != nil {
				release()
			}
		})
	}
	r1()
	r1() // twice: counted once
	if _, err := s.take(1000); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	if n := s.held[1000]; n != 1 {
		t.Fatalf("held = %d, want 1", n)
	}
}
