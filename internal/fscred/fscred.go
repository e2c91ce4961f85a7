// Package fscred gives a thread of the daemon, and only that thread,
// another user's file-system credentials (fsuid, fsgid, supplementary
// groups), so that the kernel decides what that user may open, read or
// make, as the user, on the very file at hand.
package fscred

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Cred is a user's file-system identity.
type Cred struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

// Take gives the calling thread c's file-system credentials. The thread
// must be locked (runtime.LockOSThread) and never unlocked: it ends with
// its goroutine, so no other goroutine ever runs with them. setgroups,
// setfsgid and setfsuid (golang.org/x/sys/unix) act on one thread only.
func Take(c Cred) error {
	groups := make([]int, 0, len(c.Groups))
	for _, g := range c.Groups {
		groups = append(groups, int(g))
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("take the groups of uid %d: %w", c.UID, err)
	}
	// setfs[ug]id report failure only by leaving the id unchanged: both
	// are read back.
	_, _ = unix.SetfsgidRetGid(int(c.GID))
	_, _ = unix.SetfsuidRetUid(int(c.UID))
	uid, _ := unix.SetfsuidRetUid(-1)
	gid, _ := unix.SetfsgidRetGid(-1)
	if uint32(uid) != c.UID || uint32(gid) != c.GID {
		return fmt.Errorf("cannot take uid %d's file-system ids (mcpcaged needs CAP_SETUID and CAP_SETGID)", c.UID)
	}
	return nil
}

// Do runs f on a thread of its own that holds c's file-system
// credentials; the thread ends when f returns.
func Do(c Cred, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := Take(c); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}
