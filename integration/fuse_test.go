package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/mcpcage/mcpcage/api"
)

// stuckFile is a file whose attributes (or, with holdFlush, whose
// flush at each close), once its gate is armed, are not answered until
// the gate opens: a FUSE server a user runs can do that to any process
// that asks the file system about it, or closes it.
type stuckFile struct {
	fs.Inode
	holdFlush bool
	armed     atomic.Bool
	asked     chan struct{} // closed when an armed call came
	release   chan struct{}
	once      sync.Once
}

var (
	_ fs.NodeGetattrer = (*stuckFile)(nil)
	_ fs.NodeOpener    = (*stuckFile)(nil)
	_ fs.FileFlusher   = (*stuckHandle)(nil)
)

// hold waits, when armed, until release closes.
func (f *stuckFile) hold(ctx context.Context) syscall.Errno {
	if !f.armed.Load() {
		return 0
	}
	f.once.Do(func() { close(f.asked) })
	select {
	case <-f.release:
		return 0
	case <-ctx.Done():
		return syscall.EINTR
	}
}

func (f *stuckFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !f.holdFlush {
		if errno := f.hold(ctx); errno != 0 {
			return errno
		}
	}
	out.Mode = fuse.S_IFREG | 0o644
	return 0
}

func (f *stuckFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &stuckHandle{f}, fuse.FOPEN_DIRECT_IO, 0
}

// stuckHandle is an open stuckFile.
type stuckHandle struct{ f *stuckFile }

func (h *stuckHandle) Flush(ctx context.Context) syscall.Errno {
	if h.f.holdFlush {
		return h.f.hold(ctx)
	}
	return 0
}

// stuckRoot is a directory holding one stuckFile, "stuck".
type stuckRoot struct {
	fs.Inode
	file *stuckFile
}

var _ fs.NodeOnAdder = (*stuckRoot)(nil)

func (r *stuckRoot) OnAdd(ctx context.Context) {
	r.AddChild("stuck", r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: fuse.S_IFREG}), false)
}

// TestFileOnFUSEIsRefusedWithoutAsking: a file the shim passes is
// classified by the pipe and socket code alone, never by its file
// system: the daemon's fstat of a file on a FUSE mount whose server does
// not answer held the request's thread, the user's session slot and a
// daemon stop for good (found by a red-team helper). It is refused at
// once, with the reason.
func TestFileOnFUSEIsRefusedWithoutAsking(t *testing.T) {
	_, file, answered := passStuckFile(t, false)
	select {
	case err := <-answered:
		must(t, err, "the refusal")
	case <-file.asked:
		t.Fatal("the daemon asked the FUSE server about a passed file (fstat): a server that never answers holds the daemon's thread")
	case <-time.After(60 * time.Second): // a bound, not a wait: the refusal comes at once
		t.Fatal("no answer to a session whose stdin is a FUSE file")
	}
}

// mountStuckFile mounts a FUSE file system of one stuckFile (holding its
// flushes when holdFlush, else its attributes) and opens it.
func mountStuckFile(t *testing.T, holdFlush bool) (*stuckFile, *os.File) {
	t.Helper()
	file := &stuckFile{holdFlush: holdFlush, asked: make(chan struct{}), release: make(chan struct{})}
	mnt := t.TempDir()
	zero := time.Duration(0)
	server, err := fs.Mount(mnt, &stuckRoot{file: file}, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "mcpcage-itest-stuck"},
		AttrTimeout:  &zero, EntryTimeout: &zero, // every fstat asks the server
	})
	must(t, err, "mount the FUSE file system")
	f, err := os.Open(filepath.Join(mnt, "stuck"))
	must(t, err, "open the FUSE file")
	t.Cleanup(func() {
		file.once.Do(func() { close(file.asked) })
		close(file.release) // frees whatever waits on it, then unmount
		_ = f.Close()
		_ = server.Unmount()
	})
	return file, f
}

// TestRefusedFUSEFileCloseIsBounded: closing a refused passed file calls
// its file system (a FUSE file's flush), and the kernel waits for the
// answer without a timeout, not even SIGKILL ending the wait: a FUSE
// server that never answered kept the closing thread, the user's session
// slot and the daemon's exit waiting for good (found by a red-team helper
// of TestFileOnFUSEIsRefusedWithoutAsking). Past 5 s the daemon aborts
// that FUSE connection; the refusal then comes, and the daemon stops.
func TestRefusedFUSEFileCloseIsBounded(t *testing.T) {
	d, file, answered := passStuckFile(t, true)
	select {
	case err := <-answered:
		must(t, err, "the refusal")
	case <-time.After(60 * time.Second): // a bound, not a wait: the abort comes after 5 s
		t.Fatalf("no answer to a session whose stdin is a FUSE file that never flushes\n%s", d.log.String())
	}
	select {
	case <-file.asked:
	default:
		t.Fatal("the daemon's close never reached the FUSE server's flush: the test does not test the wait")
	}
	d.waitLog(`msg="aborted the FUSE connection of a passed file that did not close in time`)
	d.stop() // its exit no longer waits on the flush
}

// passStuckFile starts a daemon and asks it for a session of "test"
// whose stdin is an armed stuckFile (see mountStuckFile); it sends nil
// once the daemon refuses it naming stdin (an error otherwise).
func passStuckFile(t *testing.T, holdFlush bool) (*daemon, *stuckFile, <-chan error) {
	d := startDaemon(t, testIsTheShim(t))
	file, f := mountStuckFile(t, holdFlush)
	_, outW := blockingPipe(t)
	file.armed.Store(true)
	c, err := api.Dial(d.socket)
	must(t, err, "dial")
	t.Cleanup(func() { _ = c.Close() })
	answered := make(chan error, 1)
	go func() {
		reply, err := c.DoPassing(api.Request{Op: api.OpRun, Server: "test", PassStdio: true}, []int{int(f.Fd()), int(outW.Fd())})
		if err == nil && (reply.OK || !strings.Contains(reply.Error, "stdin: not a pipe or a stream socket")) {
			err = fmt.Errorf("reply = %+v, want a refusal naming stdin", reply)
		}
		answered <- err
	}()
	return d, file, answered
}
