package daemon

import (
	"fmt"
	"os/user"

	"github.com/mcpcage/mcpcage/config"
)

// groupLookup finds a group by name (user.LookupGroup; tests give
// their own).
type groupLookup func(name string) (*user.Group, error)

// checkAdminGroup checks admin_group against the user database as it is
// now. The configuration refuses the socket's group by name; another
// name for its gid would make every user of mcpcage an administrator
// just the same, so it is refused (err). A group the database does not
// have is only worth a warning: nobody but root administers until it
// exists, which fails closed.
func checkAdminGroup(name string, lookup groupLookup) (warning string, err error) {
	if name == "" {
		return "", nil
	}
	g, lerr := lookup(name)
	if lerr != nil {
		return fmt.Sprintf("admin_group %q is not a group in the user database: nobody but root administers consents until it exists (%v)", name, lerr), nil
	}
	if sameGroupAsSocket(g, lookup) {
		return "", fmt.Errorf("admin_group %q has gid %s, the gid of group %s, the daemon's socket group, which every user of mcpcage is in: each of them would administer every user's consents; name a group of administrators only", name, g.Gid, config.SocketGroup)
	}
	return "", nil
}

// sameGroupAsSocket reports whether g is the socket's group under any
// name.
func sameGroupAsSocket(g *user.Group, lookup groupLookup) bool {
	s, err := lookup(config.SocketGroup)
	return err == nil && s.Gid == g.Gid
}
