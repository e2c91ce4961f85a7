package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
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
