package cli

import (
	"strings"
	"testing"
)

func TestLandlockScopes(t *testing.T) {
	for _, tt := range []struct{ state, want string }{
		{"enforced (ABI 7)", "confined to each sandbox"},
		{"enforced (ABI 6)", "confined to each sandbox"},
		{"enforced (ABI 5)", "none (Landlock ABI 5; scopes need ABI 6)"},
		{"available (ABI 7), not used", "none (Landlock not enforced)"},
		{"off", "none (Landlock not enforced)"},
	} {
		if got := landlockScopes(tt.state); !strings.Contains(got, tt.want) {
			t.Errorf("landlockScopes(%q) = %q, want %q", tt.state, got, tt.want)
		}
	}
}
