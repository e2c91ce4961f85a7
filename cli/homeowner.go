package cli

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mcpcage/mcpcage/cli/clientsetup"
)

// asHomeOwner makes a command run by root for another user's home
// (sudo -E, --home) act as that user before it reads or writes anything
// there: what `client setup` and `client restore` write, and where, is
// the home's to say (its state file names the paths), and root would
// write it anywhere (a state file naming /etc/sudoers.d as the client's
// config and a file of the user's as its backup). As the user, the
// command can do no more than the user; the servers it imports are the
// user's own. Run by root for root's own home, or by a user, it changes
// nothing.
func asHomeOwner(home string, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := homeUser(home)
	if err != nil || uid == 0 {
		return err
	}
	groups, name := []int(nil), strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
		if g, err := strconv.Atoi(u.Gid); err == nil {
			gid = g
		}
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.Atoi(id); err == nil {
					groups = append(groups, g)
				}
			}
		}
	}
	// Go's Setgroups, Setgid and Setuid act on every thread.
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("take the groups of %s, who owns %s: %w", name, home, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("take the group of %s, who owns %s: %w", name, home, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("become %s, who owns %s: %w", name, home, err)
	}
	warn(stderr, "%s is %s's: acting as %s (root does not write where a user's files say)", home, name, name)
	return nil
}

// replaceFile writes data to path through a new file beside it (never
// an existing name, never through a link), renamed over path.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".mcpcage-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := f.Chmod(perm); err != nil && werr == nil {
		werr = err
	}
	if err := f.Close(); err != nil && werr == nil {
		werr = err
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
	}
	return werr
}

// writeNew writes data to path, which must not exist yet (not even as a
// link).
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := f.Close(); err != nil && werr == nil {
		werr = err
	}
	return werr
}

// homeUser is whom a command run by root for home acts as: the owner of
// the home, or, in a home root owns, of what the commands touch below it
// (~/.config, mcpcage's state, the clients' files and directories, links
// included). A home of root's with a user's ~/.config (a chrooted SFTP
// account's layout) was acted on as root, and the user's state file then
// named what root wrote (found by a red-team helper). Several users' files
// there, or a directory of root's that others may write in, are refused.
func homeUser(home string) (uid, gid int, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(home, &st); err != nil {
		return 0, 0, fmt.Errorf("home %s: %w", home, err)
	}
	if st.Uid != 0 {
		return int(st.Uid), int(st.Gid), nil
	}
	if st.Mode&0o022 != 0 {
		return 0, 0, fmt.Errorf("%s is root's but others may write in it (as /tmp): root does not act on files others may put there; run this as the user whose home it is", home)
	}
	owner := -1
	for _, rel := range homeTouched() {
		p := home
		for _, part := range strings.Split(rel, "/") {
			p = filepath.Join(p, part)
			var pst syscall.Stat_t
			if err := syscall.Lstat(p, &pst); err != nil {
				break // not there: nothing of anyone's
			}
			if pst.Mode&syscall.S_IFMT == syscall.S_IFLNK && pst.Uid == 0 {
				// A link of root's: what it leads to is where the files go
				// (a root-owned link to a user's directory was passed).
				var tst syscall.Stat_t
				if err := syscall.Stat(p, &tst); err == nil {
					pst = tst
				}
			}
			switch {
			case pst.Uid == 0 && pst.Mode&syscall.S_IFMT == syscall.S_IFDIR && pst.Mode&0o022 != 0:
				return 0, 0, fmt.Errorf("%s is root's but others may write in it: root does not act on files others may put there; run this as the user whose files they are", p)
			case pst.Uid == 0:
				continue
			case owner >= 0 && owner != int(pst.Uid):
				return 0, 0, fmt.Errorf("files under %s belong to several users (%s is uid %d's, another is uid %d's): run this as the user whose client it is", home, p, pst.Uid, owner)
			}
			owner, gid = int(pst.Uid), int(pst.Gid)
		}
	}
	if owner < 0 {
		return 0, 0, nil // root's own
	}
	return owner, gid, nil
}

// homeTouched are the paths below a home that client setup and restore
// read or write.
func homeTouched() []string {
	paths := []string{filepath.Dir(stateRel)}
	for _, name := range clientsetup.Names() {
		if c, err := clientsetup.Lookup(name); err == nil {
			paths = append(paths, c.Path)
		}
	}
	return paths
}
