package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/internal/subid"
)

func TestUserSecretRoom(t *testing.T) {
	st, err := secrets.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < userSecretsMax; i++ {
		if err := st.Set(fmt.Sprintf("s%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, value, wantErr string
	}{
		{"s0", "replaced", ""},
		{"s1", strings.Repeat("x", userSecretMaxBytes), ""},
		{"s1", strings.Repeat("x", userSecretMaxBytes+1), "holds at most"},
		{"new", "v", "the most one user may keep"},
	} {
		err := userSecretRoom(st, tc.name, tc.value)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s (%d bytes): %v, want %q", tc.name, len(tc.value), err, tc.wantErr)
		}
	}
}

// secretReply runs secretOp for peer and returns its reply.
func secretReply(t *testing.T, d *Daemon, peer Peer, req api.Request) api.Reply {
	t.Helper()
	var buf bytes.Buffer
	d.secretOp(api.NewFrameWriter(&buf), peer, req, d.log)
	_, payload, err := api.NewFrameReader(&buf).Next()
	if err != nil {
		t.Fatal(err)
	}
	var r api.Reply
	if err := json.Unmarshal(payload, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSecretsOfSubordinateUIDs: a subordinate uid (/etc/subuid) cannot
// keep secrets on root's disk (its owner could otherwise store 65,536
// times its quota); the refusal names the owner, and what it stored
// before can still be listed and removed.
func TestSecretsOfSubordinateUIDs(t *testing.T) {
	state := t.TempDir()
	d := testDaemon(t, fmt.Sprintf("[daemon]\nstate_dir = %q\n", state))
	d.warm = newWarmPool(d)
	alice := subid.Owner{UID: 1000, Name: "alice"}
	subPeer := Peer{UID: 100003, Owner: &alice}
	// Left by an earlier release, which kept them.
	old, err := d.userSecrets(subPeer.UID, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Set("left", "value"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		peer    Peer
		req     api.Request
		wantOK  bool
		wantErr string
	}{
		{"set, as the subordinate uid", subPeer, api.Request{Op: api.OpSecretSet, Name: "tok", Secret: "value"}, false,
			"uid 100003 is a subordinate uid of alice (/etc/subuid): mcpcaged keeps secrets for accounts, not for the uids of their user namespaces: set it (mcpcage secret set tok) as alice"},
		{"set, as its owner", Peer{UID: 1000}, api.Request{Op: api.OpSecretSet, Name: "tok", Secret: "value"}, true, ""},
		{"rm, as the subordinate uid", subPeer, api.Request{Op: api.OpSecretRm, Name: "left"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := secretReply(t, d, tt.peer, tt.req)
			if r.OK != tt.wantOK || !strings.Contains(r.Error, tt.wantErr) {
				t.Fatalf("reply %+v, want ok %v and an error with %q", r, tt.wantOK, tt.wantErr)
			}
		})
	}
	if names, _ := old.Names(); len(names) != 0 {
		t.Fatalf("the subordinate uid's store holds %v", names)
	}
}

// TestUserSecretsTotalIsBounded: all users' stores together hold at
// most userSecretsMaxTotal, counted again before a refusal (a store
// emptied behind the daemon's back frees its room).
func TestUserSecretsTotalIsBounded(t *testing.T) {
	state := t.TempDir()
	d := testDaemon(t, fmt.Sprintf("[daemon]\nstate_dir = %q\n", state))
	d.warm = newWarmPool(d)
	// Another user's store, all but 100 bytes of the bound (sparse).
	if _, err := d.userSecrets(1001, true); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(d.userSecretsRoot(), "1001", "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, userSecretsMaxTotal-100); err != nil {
		t.Fatal(err)
	}
	set := func(name string, size int) api.Reply {
		return secretReply(t, d, Peer{UID: 1000}, api.Request{Op: api.OpSecretSet, Name: name, Secret: strings.Repeat("x", size)})
	}
	steps := []struct {
		name    string
		do      func() api.Reply
		wantErr string
	}{
		{"a value that fits", func() api.Reply { return set("a", 60) }, ""},
		{"one that does not", func() api.Reply { return set("b", 41) }, "hold 268435416 bytes together, and this value (41 bytes) would take them past 256 MiB, the most mcpcaged keeps on its disk"},
		{"replacing a value counts what it replaces", func() api.Reply { return set("a", 100) }, ""},
		{"removing frees room", func() api.Reply {
			if r := secretReply(t, d, Peer{UID: 1000}, api.Request{Op: api.OpSecretRm, Name: "a"}); !r.OK {
				t.Fatalf("rm: %+v", r)
			}
			return set("b", 100)
		}, ""},
		{"the bound holds again", func() api.Reply { return set("c", 1) }, "the most mcpcaged keeps"},
		{"a store emptied behind the daemon's back", func() api.Reply {
			if err := os.Remove(big); err != nil {
				t.Fatal(err)
			}
			return set("c", 1)
		}, ""},
	}
	for _, st := range steps {
		r := st.do()
		if r.OK != (st.wantErr == "") || !strings.Contains(r.Error, st.wantErr) {
			t.Fatalf("%s: reply %+v, want error %q", st.name, r, st.wantErr)
		}
	}
}
