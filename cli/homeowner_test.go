package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/cli/clientsetup"
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

// TestHomeUser: run by root for a home of root's, client setup and
// restore act as the owner of what they touch below it. A home of root's
// with a user's ~/.config was acted on as root, and the user's state file
// then said what root wrote where (found by a red-team helper).
func TestHomeUser(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "root")
	tests := []struct {
		name    string
		owned   map[string]int // paths below home (made as directories) and their owners
		wantUID int
		wantErr string
	}{
		{"root's own", map[string]int{".config": 0}, 0, ""},
		{"a user's .config", map[string]int{".config": 65534}, 65534, ""},
		{"a user's client directory", map[string]int{".cursor": 65534}, 65534, ""},
		{"a user's mcpcage state in root's .config", map[string]int{".config": 0, ".config/mcpcage": 65534}, 65534, ""},
		{"two users' files", map[string]int{".config": 65534, ".cursor": 1742}, 0, "several users"},
		// A link of root's to a user's directory: the files go there (it
		// was passed as root's, found by a review helper).
		{"root's link to a user's directory", map[string]int{"elsewhere": 65534, ".config": -1}, 65534, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			mustT(t, os.Mkdir(home, 0o755))
			for rel, uid := range tt.owned {
				p := filepath.Join(home, rel)
				if uid < 0 { // a link of root's to "elsewhere"
					mustT(t, os.Symlink(filepath.Join(home, "elsewhere"), p))
					continue
				}
				mustT(t, os.MkdirAll(p, 0o755))
				mustT(t, os.Chown(p, uid, uid))
			}
			uid, _, err := homeUser(home)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("homeUser = %d, %v; want an error saying %q", uid, err, tt.wantErr)
				}
				return
			}
			if err != nil || uid != tt.wantUID {
				t.Fatalf("homeUser = %d, %v; want uid %d", uid, err, tt.wantUID)
			}
		})
	}
}

// TestRestoreStateNamesOnlySetupsFiles: restore writes only the client's
// own configuration, from a backup setup named, whatever the (user's)
// state file says.
func TestRestoreStateNamesOnlySetupsFiles(t *testing.T) {
	c, err := clientsetup.Lookup("claude-desktop")
	mustT(t, err)
	home := "/home/u"
	cfg := c.ConfigPath(home)
	for _, tc := range []struct {
		name    string
		st      clientState
		wantErr string
	}{
		{"as setup wrote it", clientState{Path: cfg, Backup: cfg + backupInfix + "20261204-101010"}, ""},
		{"another file to write", clientState{Path: "/etc/cron.d/x", Backup: cfg + backupInfix + "1"}, "not " + cfg},
		{"a path that cleans to another", clientState{Path: cfg + "/../../../../etc/sudoers.d/x", Backup: cfg + backupInfix + "1"}, "refused"},
		{"another file to read", clientState{Path: cfg, Backup: "/home/u/.config/payload"}, "does not write"},
		{"a backup below another directory", clientState{Path: cfg, Backup: cfg + backupInfix + "x/../../payload"}, "does not write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRestoreState(c, home, tc.st)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("checkRestoreState = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
