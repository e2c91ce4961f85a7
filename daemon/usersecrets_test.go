package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/secrets"
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
