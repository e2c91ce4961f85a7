package daemon

import (
	"errors"
	"os/user"
	"strings"
	"testing"
)

// TestCheckAdminGroup: admin_group may not be the socket's group under
// another name (the same gid); one the user database lacks is a warning.
func TestCheckAdminGroup(t *testing.T) {
	groups := map[string]string{"mcpcage": "990", "alias": "990", "admins": "991"}
	lookup := func(name string) (*user.Group, error) {
		if gid, ok := groups[name]; ok {
			return &user.Group{Name: name, Gid: gid}, nil
		}
		return nil, user.UnknownGroupError(name)
	}
	noSocketGroup := func(name string) (*user.Group, error) {
		if name == "mcpcage" {
			return nil, user.UnknownGroupError(name)
		}
		return lookup(name)
	}
	for _, tc := range []struct {
		name, group string
		lookup      groupLookup
		socketGID   int
		refused     string // in the error
		warned      string // in the warning
	}{
		{"none", "", lookup, -1, "", ""},
		{"a group of its own", "admins", lookup, -1, "", ""},
		{"the socket's gid under another name", "alias", lookup, -1, "gid 990, the group of the daemon's socket", ""},
		{"no such group", "wheel2", lookup, -1, "", "not a group in the user database"},
		{"no socket group on the host", "alias", noSocketGroup, -1, "", ""},
		{"the activated socket's own group (SocketGroup=)", "admins", noSocketGroup, 991, "gid 991, the group of the daemon's socket", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warning, err := checkAdminGroup(tc.group, tc.lookup, tc.socketGID)
			if (err != nil) != (tc.refused != "") || (err != nil && !strings.Contains(err.Error(), tc.refused)) {
				t.Fatalf("error %v, want one containing %q", err, tc.refused)
			}
			if (warning != "") != (tc.warned != "") || !strings.Contains(warning, tc.warned) {
				t.Fatalf("warning %q, want one containing %q", warning, tc.warned)
			}
		})
	}
	if _, err := checkAdminGroup("alias", func(string) (*user.Group, error) { return nil, errors.New("nss down") }, -1); err != nil {
		t.Fatalf("a failed look-up refused: %v", err)
	}
}
