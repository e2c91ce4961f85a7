package sandbox

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/fscred"
)

// Cred is the identity of the user who chose a mount's source.
type Cred struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

// reach is how much of a directory a mount's user may see.
type reach int

const (
	reachNone  reach = iota // no search: no entry below is within their reach (none needs a mask)
	reachNames              // search only: they reach the names they know
	reachAll                // read and search, or their own directory (they may chmod it)
)

// viewer answers, on a thread with the user's file-system credentials,
// how far the user reaches into directories the daemon opened. The
// kernel decides (mode, ACLs, LSMs), on the very directory opened: a
// rename meanwhile cannot make it answer for another.
type viewer struct {
	uid  uint32
	req  chan int
	resp chan reach
}

// newViewer starts the checking thread; stop it with close.
func newViewer(c Cred) (*viewer, error) {
	v := &viewer{uid: c.UID, req: make(chan int), resp: make(chan reach)}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread holds the user's credentials and
		// ends with this goroutine.
		runtime.LockOSThread()
		if err := takeFSCred(c); err != nil {
			started <- err
			return
		}
		started <- nil
		for fd := range v.req {
			v.resp <- reachOf(fd)
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return v, nil
}

func (v *viewer) close() { close(v.req) }

// reach says how far the user reaches into the open directory f.
func (v *viewer) reach(f *os.File) reach {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err == nil && st.Uid == v.uid {
		return reachAll
	}
	v.req <- int(f.Fd())
	return <-v.resp
}

func reachOf(fd int) reach {
	can := func(mode uint32) bool {
		return unix.Faccessat2(fd, "", mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS) == nil
	}
	switch {
	case !can(unix.X_OK):
		return reachNone
	case can(unix.R_OK):
		return reachAll
	}
	return reachNames
}

// takeFSCred gives the calling (locked) thread c's file-system
// credentials (fscred.Take).
func takeFSCred(c Cred) error {
	return fscred.Take(fscred.Cred{UID: c.UID, GID: c.GID, Groups: c.Groups})
}
