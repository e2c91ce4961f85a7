package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mcpcage/mcpcage/internal/subid"
)

// TestChargeTo: a connection from a subordinate uid is charged to its
// owner (nobody, whom every test machine has; uid 65534); others, and
// root's subordinate uids, to themselves.
func TestChargeTo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subuid")
	ranges := "65534:3000000000:10\nno-such-user-mcpcage:3100000000:10\nroot:3200000000:10\n"
	if err := os.WriteFile(path, []byte(ranges), 0o644); err != nil {
		t.Fatal(err)
	}
	d := testDaemon(t, "")
	d.subuids = subid.New(path)
	tests := []struct {
		name    string
		uid     uint32
		want    uint32
		wantLog bool // the log attributes say whom it is charged to
	}{
		{"a subordinate uid", 3000000005, 65534, true},
		{"a subordinate uid of root", 3200000005, 3200000005, false},
		{"past the range", 3000000010, 3000000010, false},
		{"an owner nobody has", 3100000000, 3100000000, false},
		{"an account of its own", 1000, 1000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Peer{UID: tt.uid}
			d.chargeTo(&p)
			a := p.account()
			if a.uid != tt.want || (len(a.logAttrs()) > 0) != tt.wantLog {
				t.Fatalf("uid %d is charged to %+v (log %v), want uid %d", tt.uid, a, a.logAttrs(), tt.want)
			}
		})
	}
	if err := refuseStore(Peer{UID: 1000}, "secrets", "set it"); err != nil {
		t.Fatalf("refuseStore of an account of its own: %v", err)
	}
}
