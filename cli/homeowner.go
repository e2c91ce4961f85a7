package cli

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
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
	var st syscall.Stat_t
	if err := syscall.Stat(home, &st); err != nil {
		return fmt.Errorf("home %s: %w", home, err)
	}
	if st.Uid == 0 {
		if st.Mode&0o022 != 0 {
			return fmt.Errorf("%s is root's but others may write in it (as /tmp): root does not act on files others may put there; run this as the user whose home it is", home)
		}
		return nil
	}
	gid, groups, name := int(st.Gid), []int(nil), strconv.Itoa(int(st.Uid))
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
	if err := syscall.Setuid(int(st.Uid)); err != nil {
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
