package daemon

import (
	"fmt"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"

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
//
// socketGID is the group the daemon's socket file has now (-1 when there
// is none yet): systemd may give an activated socket another group
// (SocketGroup=) than config.SocketGroup. Root's group (0, a socket of
// root's alone) is not compared: its members are root's already.
func checkAdminGroup(name string, lookup groupLookup, socketGID int) (warning string, err error) {
	if name == "" {
		return "", nil
	}
	g, lerr := lookup(name)
	if lerr != nil {
		return fmt.Sprintf("admin_group %q is not a group in the user database: nobody but root administers consents until it exists (%v)", name, lerr), nil
	}
	if sameGroupAsSocket(g, lookup) || (socketGID > 0 && g.Gid == strconv.Itoa(socketGID)) {
		return "", fmt.Errorf("admin_group %q has gid %s, the group of the daemon's socket, which every user of mcpcage is in: each of them would administer every user's consents; name a group of administrators only", name, g.Gid)
	}
	return "", nil
}

// socketGID is the group of the socket file at path, -1 when there is
// none.
func socketGID(path string) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return -1
	}
	return int(st.Gid)
}

// sameGroupAsSocket reports whether g is the socket's group under any
// name.
func sameGroupAsSocket(g *user.Group, lookup groupLookup) bool {
	s, err := lookup(config.SocketGroup)
	return err == nil && s.Gid == g.Gid
}
