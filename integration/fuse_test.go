package integration

import (
	"context"
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

// stuckFile is a file whose attributes, once its gate is armed, are not
// answered until the gate opens: a FUSE server a user runs can do that to
// any process that asks the file system about it.
type stuckFile struct {
	fs.Inode
	armed   atomic.Bool
	asked   chan struct{} // closed when an armed Getattr came
	release chan struct{}
	once    sync.Once
}

var (
	_ fs.NodeGetattrer = (*stuckFile)(nil)
	_ fs.NodeOpener    = (*stuckFile)(nil)
)

func (f *stuckFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if f.armed.Load() {
		f.once.Do(func() { close(f.asked) })
		select {
		case <-f.release:
		case <-ctx.Done():
			return syscall.EINTR
		}
	}
	out.Mode = fuse.S_IFREG | 0o644
	return 0
}

func (f *stuckFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
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
	d := startDaemon(t, "")
	file := &stuckFile{asked: make(chan struct{}), release: make(chan struct{})}
	mnt := t.TempDir()
	zero := time.Duration(0)
	server, err := fs.Mount(mnt, &stuckRoot{file: file}, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "mcpcage-itest-stuck"},
		AttrTimeout:  &zero, EntryTimeout: &zero, // every fstat asks the server
	})
	must(t, err, "mount the FUSE file system")
	t.Cleanup(func() {
		file.once.Do(func() { close(file.asked) })
		close(file.release) // frees whatever waits on it, then unmount
		_ = server.Unmount()
	})
	f, err := os.Open(filepath.Join(mnt, "stuck"))
	must(t, err, "open the FUSE file")
	defer func() { _ = f.Close() }()
	_, outW := blockingPipe(t)
	file.armed.Store(true)

	c, err := api.Dial(d.socket)
	must(t, err, "dial")
	defer func() { _ = c.Close() }()
	type answer struct {
		reply *api.Reply
		err   error
	}
	answered := make(chan answer, 1)
	go func() {
		reply, err := c.DoPassing(api.Request{Op: api.OpRun, Server: "test", PassStdio: true}, []int{int(f.Fd()), int(outW.Fd())})
		answered <- answer{reply, err}
	}()
	select {
	case a := <-answered:
		must(t, a.err, "the request")
		if a.reply.OK || !strings.Contains(a.reply.Error, "stdin: not a pipe or a stream socket") {
			t.Fatalf("reply = %+v, want a refusal naming stdin", a.reply)
		}
	case <-file.asked:
		t.Fatal("the daemon asked the FUSE server about a passed file (fstat): a server that never answers holds the daemon's thread")
	case <-time.After(60 * time.Second): // a bound, not a wait: the refusal comes at once
		t.Fatal("no answer to a session whose stdin is a FUSE file")
	}
}
