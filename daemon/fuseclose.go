package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Files a process passed and the daemon does not keep are closed with
// closeRefused. A socket's close does not wait out its linger (noLinger). Closing a file calls its file system (a FUSE file's flush,
// which the kernel waits for without a timeout, not even SIGKILL ending
// the wait), so a user's FUSE server that never answers would keep the
// closing thread, the user's session slot and the daemon's exit waiting
// for good (found by a red-team helper). Such a close is given
// fuseCloseWait; past it the daemon aborts that FUSE connection
// (fusectl's abort, as `fusermount -u` would not), which ends the wait.
// The file's connection is found from its device, read with
// AT_STATX_DONT_SYNC so that reading it asks the FUSE server nothing.

// fuseCloseWait is how long closing a passed file on FUSE may take
// before its connection is aborted.
var fuseCloseWait = 5 * time.Second

// fuseConnections is where fusectl lists the FUSE connections.
const fuseConnections = "/sys/fs/fuse/connections"

// fusectlMagic is fusectl's statfs type.
const fusectlMagic = 0x65735543

// refusedFilesLog is where closeRefused says what it aborted: the
// daemon's log, once it runs.
var refusedFilesLog = slog.New(slog.DiscardHandler)

// closeRefused closes fds, passed by another process and not kept.
func closeRefused(fds []int) {
	log := refusedFilesLog
	for _, fd := range fds {
		noLinger(fd)
		conn := fuseConnectionOf(fd)
		if conn == "" {
			_ = unix.Close(fd)
			continue
		}
		done := make(chan struct{})
		go func() {
			_ = unix.Close(fd)
			close(done)
		}()
		select {
		case <-done:
			continue
		case <-time.After(fuseCloseWait):
		}
		if err := abortFUSE(conn); err != nil {
			log.Error("a passed file on FUSE does not close (its server does not answer) and its connection could not be aborted: the thread waits until it is (echo 1 > CONNECTION/abort)", "connection", conn, "err", err)
		} else {
			log.Warn("aborted the FUSE connection of a passed file that did not close in time: its server did not answer", "connection", conn, "waited", fuseCloseWait.String())
		}
		<-done
	}
}

// fuseConnectionOf returns fusectl's directory of the FUSE connection
// fd's file is on, "" when it is on none (pipes and sockets never are).
func fuseConnectionOf(fd int) string {
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &sx); err != nil {
		return ""
	}
	switch uint32(sx.Mode) & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK:
		return ""
	}
	if err := mountFusectl(); err != nil {
		return ""
	}
	// fusectl names a connection by its super block's device number, as
	// the kernel encodes it (major << 20 | minor).
	dir := filepath.Join(fuseConnections, fmt.Sprint(uint64(sx.Dev_major)<<20|uint64(sx.Dev_minor)))
	if _, err := os.Stat(filepath.Join(dir, "abort")); err != nil {
		return ""
	}
	return dir
}

// mountFusectl mounts fusectl where the kernel expects it, once, unless
// it is there (systemd mounts it at boot).
var mountFusectl = sync.OnceValue(func() error {
	var st unix.Statfs_t
	if err := unix.Statfs(fuseConnections, &st); err != nil {
		return err
	}
	if st.Type == fusectlMagic {
		return nil
	}
	if err := unix.Mount("fusectl", fuseConnections, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount fusectl on %s: %w", fuseConnections, err)
	}
	return nil
})

// abortFUSE aborts the FUSE connection conn: every request waiting on it
// ends with an error.
func abortFUSE(conn string) error {
	return os.WriteFile(filepath.Join(conn, "abort"), []byte("1"), 0)
}

// noLinger makes the close of a socket that lingers (SO_LINGER, which
// the sender sets) abortive: when the daemon holds its last reference, a
// close of a lingering socket waits until its unsent data is taken or the
// linger runs out (the sender's choice, an hour or more, with a peer that
// takes nothing: found by a red-team helper). Sockets that do not linger,
// and everything else, are left as they are.
func noLinger(fd int) {
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil || l.Onoff == 0 {
		return
	}
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}
