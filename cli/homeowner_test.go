package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// Run by root for a home of root's that others may write in (as /tmp),
// client setup and restore refuse: a user could have put the files that
// say what root writes where.
func TestAsHomeOwnerRefusesASharedRootHome(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "root")
	tests := []struct {
		name    string
		mode    os.FileMode
		wantErr string
	}{
		{"root's own", 0o700, ""},
		{"others may write in it", 0o1777, "others may write in it"},
		{"its group may write in it", 0o770, "others may write in it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			if err := os.Mkdir(home, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(home, tt.mode); err != nil {
				t.Fatal(err)
			}
			err := asHomeOwner(home, io.Discard)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("asHomeOwner = %v, want %q", err, tt.wantErr)
			}
			if os.Geteuid() != 0 {
				t.Fatal("asHomeOwner dropped root for a home of root's")
			}
		})
	}
}
