package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// Labels set on every container mcpcaged creates.
const (
	LabelManaged = "io.mcpcage.managed"
	LabelServer  = "io.mcpcage.server"
	LabelSession = "io.mcpcage.session"
)

const runtimeName = "io.containerd.runc.v2"

// Launcher runs sandboxes in one containerd namespace.
type Launcher struct {
	client   *containerd.Client
	ns       string
	fifoDir  string
	rootsDir string // the roots of sandboxes on the host's view (makeRoot)
	log      *slog.Logger
	// images keeps removing unused images (RemoveUnusedImages) apart
	// from taking one for a sandbox (image), reference by reference.
	images imageUse
}

// CallHook, when set before NewLauncher, wraps each unary call the
// launcher makes to containerd. Nil but in the daemon's failpoints
// (tests only: TestStopDuringCreateLeavesNoContainer).
var CallHook grpc.UnaryClientInterceptor

// NewLauncher connects to containerd at address. fifoDir holds the stdio
// FIFOs and rootsDir each sandbox's own root, copied from the skeleton of
// the host's view; neither may be reachable by sandboxed servers.
func NewLauncher(ctx context.Context, address, namespace, fifoDir, rootsDir string, log *slog.Logger) (*Launcher, error) {
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return nil, fmt.Errorf("create fifo dir: %w", err)
	}
	if err := os.MkdirAll(rootsDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the sandboxes' roots directory: %w", err)
	}
	advice := "start it with `systemctl start containerd`, or point [daemon] containerd_address at its socket"
	if _, err := os.Stat(address); err != nil {
		return nil, fmt.Errorf("containerd is not running (no socket at %s): %s", address, advice)
	}
	copts := []containerd.Opt{containerd.WithDefaultNamespace(namespace), containerd.WithTimeout(10 * time.Second)}
	if CallHook != nil {
		copts = append(copts, containerd.WithExtraDialOpts([]grpc.DialOption{grpc.WithUnaryInterceptor(CallHook)}))
	}
	c, err := containerd.New(address, copts...)
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w: %s", address, err, advice)
	}
	l := &Launcher{client: c, ns: namespace, fifoDir: fifoDir, rootsDir: rootsDir, log: log}
	if _, err := l.Version(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("containerd at %s: %w: %s", address, err, advice)
	}
	return l, nil
}

// Version asks containerd for its version; it doubles as a health check.
func (l *Launcher) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := l.client.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("containerd is not answering: %w", err)
	}
	return v.Version, nil
}

// Close drops the containerd connection.
func (l *Launcher) Close() error { return l.client.Close() }

func (l *Launcher) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, l.ns)
}

// Stdio are the server's standard streams as seen by the daemon, when
// containerd copies them; all nil: the sandbox gets none from containerd
// (its stdio are a ServerStdio's).
type Stdio struct {
	Stdin  io.Reader // read by containerd's copier until EOF
	Stdout io.WriteCloser
	Stderr io.WriteCloser
}

// StartOptions describe one launch.
type StartOptions struct {
	ID   string
	Spec *specs.Spec
	// Image, when set, is the OCI image whose file system is the root
	// (a fresh snapshot, mounted read-only); the spec's root path must be "rootfs".
	Image  string
	Labels map[string]string
	Stdio  Stdio
	// BeforeStart runs after the task exists and before it starts: the
	// place to put the task's cgroup under watch. An error aborts the
	// launch.
	BeforeStart func(ctx context.Context, pid uint32) error
	// Mounts are the spec's bind mounts; each one with a Pin is checked
	// in the created container before the server runs (see BindMount).
	Mounts []BindMount
	// Masks are the masked host paths the daemon follows while the
	// session runs (WatchedMasks; see MaskCheck).
	Masks []string
}

// Instance is a running sandbox.
type Instance struct {
	ID  string
	Pid uint32
	// Masks are the host paths whose masks the daemon follows
	// (StartOptions.Masks, see MaskCheck).
	Masks     []string
	container containerd.Container
	task      containerd.Task
	exited    chan struct{}
	status    containerd.ExitStatus
	l         *Launcher
	stdio     Stdio
	cleanOnce sync.Once
	cgroup    string
	root      string // its own root (makeRoot), "" for an image's
	limits    Limits
	lost      error // set when containerd went away during the session
}

// ErrContainerdLost says containerd stopped while a session ran: the
// server was killed through its cgroup, and the session ended.
var ErrContainerdLost = errors.New("containerd stopped during the session")

// Lost reports, once Exited is closed, whether the session ended because
// containerd went away (wrapping ErrContainerdLost), nil otherwise.
func (i *Instance) Lost() error { return i.lost }

// Start creates and starts a sandbox. On error nothing is left behind.
func (l *Launcher) Start(ctx context.Context, o StartOptions) (*Instance, error) {
	p, err := l.Create(ctx, o)
	if err != nil {
		return nil, err
	}
	return p.Start(ctx, o.BeforeStart)
}

// Prepared is a sandbox whose container and task exist and whose process
// waits, before the server's first instruction, for Start: runc has built
// its namespaces, mounts, cgroup and seccomp filter. A warm sandbox.
type Prepared struct {
	ID          string
	Pid         uint32
	Fingerprint string // of what it was built from (see Launcher.Fingerprint)
	Created     time.Time
	container   containerd.Container
	task        containerd.Task
	exitCh      <-chan containerd.ExitStatus
	stdio       Stdio
	cgroup      string
	root        string   // its own root (makeRoot), "" for an image's
	masks       []string // the host paths whose masks are followed (StartOptions.Masks)
	l           *Launcher
	ended       sync.Once
}

// Create builds the container and task of o without starting it (its
// BeforeStart is not run). On error nothing is left behind.
func (l *Launcher) Create(ctx context.Context, o StartOptions) (_ *Prepared, retErr error) {
	ctx = l.ctx(ctx)
	labels := map[string]string{LabelManaged: "true"}
	for k, v := range o.Labels {
		labels[k] = v
	}
	opts := []containerd.NewContainerOpts{
		containerd.WithRuntime(runtimeName, nil),
		containerd.WithContainerLabels(labels),
	}
	var img containerd.Image
	if o.Image != "" {
		var err error
		var release func()
		if img, release, err = l.image(ctx, o.Image); err != nil {
			return nil, err
		}
		defer release() // the container holds the image once created
		if err := mergeImageEnv(ctx, img, o.Spec); err != nil {
			return nil, err
		}
		opts = append(opts, containerd.WithImage(img), containerd.WithNewSnapshot(o.ID, img))
	}
	fp, err := fingerprint(o.Spec, img) // of the spec as built: its root is the skeleton's
	if err != nil {
		return nil, err
	}
	spec, root := o.Spec, ""
	if img == nil && spec.Root != nil && filepath.IsAbs(spec.Root.Path) {
		// The host's view: a root of its own, copied from the skeleton.
		root = filepath.Join(l.rootsDir, o.ID)
		if err := makeRoot(spec.Root.Path, root); err != nil {
			return nil, err
		}
		spec = cloneSpec(spec)
		r := *spec.Root
		r.Path = root
		spec.Root = &r
	}
	opts = append(opts, containerd.WithSpec(spec))
	// containerd's creations run to their end, bounded, even when ctx is
	// cancelled (a daemon stopping, a client gone): a call cut off on
	// our side may still complete on containerd's, and its container or
	// task would then be left behind with nobody knowing of it. A
	// cancelled ctx is looked at between them, and what exists removed.
	build, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	defer cancel()
	c, err := l.client.NewContainer(build, o.ID, opts...)
	if err != nil {
		if !errdefs.IsAlreadyExists(err) { // the id of another: never ours to remove
			l.removeUnreturned(o.ID)
		}
		if rerr := removeRoot(root); rerr != nil {
			l.log.Warn("sandbox root not removed", "container", o.ID, "err", rerr)
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	p := &Prepared{ID: o.ID, Fingerprint: fp, Created: time.Now(), container: c, stdio: o.Stdio, root: root, masks: o.Masks, l: l}
	if o.Spec.Linux != nil {
		p.cgroup = o.Spec.Linux.CgroupsPath
	}
	defer func() {
		if retErr != nil {
			_ = p.Discard(ctx) // logged
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	creator := cio.NullIO // the server's stdio are the daemon's own (ServerStdio)
	if o.Stdio != (Stdio{}) {
		creator = cio.NewCreator(cio.WithStreams(o.Stdio.Stdin, o.Stdio.Stdout, o.Stdio.Stderr), cio.WithFIFODir(l.fifoDir))
	}
	if p.task, err = c.NewTask(build, creator); err != nil {
		return nil, fmt.Errorf("create task: %w", explainTaskError(err))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	p.Pid = p.task.Pid()
	if burst := cpuBurst(o.Spec); burst > 0 {
		if err := setCPUBurst(p.cgroup, burst); err != nil {
			l.log.Debug("no CPU burst: the server's CPU limit is applied per period", "container", o.ID, "err", err)
		}
	}
	if err := checkPins(p.Pid, o.Mounts); err != nil {
		return nil, err
	}
	if p.exitCh, err = p.task.Wait(context.WithoutCancel(ctx)); err != nil {
		return nil, fmt.Errorf("wait on task: %w", err)
	}
	return p, nil
}

// createTimeout bounds containerd's creation of one sandbox's container,
// and again of its task (runc builds its namespaces, mounts and cgroup).
const createTimeout = 2 * time.Minute

// removeUnreturned removes the container id when containerd has one
// although its creation failed (a reply lost, a call that timed out on
// our side only): nothing else would know of it until the next daemon's
// Reap. Only mcpcaged's own, by its label.
func (l *Launcher) removeUnreturned(id string) {
	ctx, cancel := context.WithTimeout(l.ctx(context.Background()), 10*time.Second)
	defer cancel()
	c, err := l.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return
	}
	if err == nil {
		var labels map[string]string
		if labels, err = c.Labels(ctx); err == nil {
			if labels[LabelManaged] != "true" {
				return
			}
			err = c.Delete(ctx, containerd.WithSnapshotCleanup)
		}
	}
	if err != nil && !errdefs.IsNotFound(err) {
		l.log.Warn("a container whose creation failed may be left until the next start of mcpcaged", "container", id, "err", err)
	}
}

// Fingerprint is what Create would record as the Fingerprint of a
// sandbox built from spec and image now: equal fingerprints, equal
// sandboxes (the spec, with its environment and mounts, and the image's
// content digest).
func (l *Launcher) Fingerprint(ctx context.Context, spec *specs.Spec, image string) (string, error) {
	var img containerd.Image
	if image != "" {
		var err error
		ctx = l.ctx(ctx)
		var release func()
		if img, release, err = l.image(ctx, image); err != nil {
			return "", err
		}
		defer release()
		spec = cloneSpec(spec)
		if err := mergeImageEnv(ctx, img, spec); err != nil {
			return "", err
		}
	}
	return fingerprint(spec, img)
}

func fingerprint(spec *specs.Spec, img containerd.Image) (string, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	h := sha256.New()
	h.Write(b)
	if img != nil {
		h.Write([]byte("\x00image\x00" + img.Target().Digest.String()))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func cloneSpec(s *specs.Spec) *specs.Spec {
	c := *s
	if s.Process != nil {
		p := *s.Process
		p.Env = append([]string(nil), s.Process.Env...)
		c.Process = &p
	}
	return &c
}

// Alive says whether the prepared process still waits to be started.
func (p *Prepared) Alive() bool {
	select {
	case <-p.exitCh:
		return false
	default:
		return true
	}
}

// CheckMounts checks again, as Create did, that the sandbox shows each
// pinned object of mounts at its target (pins taken now, for a sandbox
// prepared earlier).
func (p *Prepared) CheckMounts(mounts []BindMount) error { return checkPins(p.Pid, mounts) }

// CheckMasks checks that every path of masked the sandbox shows is still
// hidden: a file by /dev/null, a directory by a tmpfs, as runc hid them
// at Create. The kernel removes a mount in every namespace when its
// mount point is unlinked or renamed over on the host (passwd replacing
// /etc/shadow, an editor saving a file), and a path that appeared on the
// host after Create was never hidden: a prepared sandbox that waited
// through either is stale.
func (p *Prepared) CheckMasks(masked []string) error {
	root, err := os.OpenFile(fmt.Sprintf("/proc/%d/root", p.Pid), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("check hidden paths: %w", err)
	}
	defer func() { _ = root.Close() }()
	for _, m := range masked {
		fd, err := unix.Openat2(int(root.Fd()), m, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			continue // not there, or a symlink: nothing to read
		}
		if err != nil {
			return fmt.Errorf("check hidden path %s: %w", m, err)
		}
		var st unix.Stat_t
		var fs unix.Statfs_t
		err = unix.Fstat(fd, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Fstatfs(fd, &fs)
		}
		_ = unix.Close(fd) // an O_PATH descriptor
		if err != nil {
			return fmt.Errorf("check hidden path %s: %w", m, err)
		}
		hidden := false
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			hidden = unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 // /dev/null
		case unix.S_IFDIR:
			hidden = fs.Type == unix.TMPFS_MAGIC
		}
		if !hidden {
			return fmt.Errorf("the hidden path %s is visible in it (its mask went with a change on the host, or the path appeared after it was built)", m)
		}
	}
	return nil
}

// Memory is the resident memory of the prepared sandbox's processes: its
// waiting process and the containerd shim that holds it, in bytes.
func (p *Prepared) Memory() int64 {
	total := rss(int(p.Pid))
	if pp := parentPid(int(p.Pid)); pp > 1 {
		total += rss(pp)
	}
	return total
}

// Start runs before (when not nil) and then starts the server. On error,
// or a panic in before, the sandbox is discarded.
func (p *Prepared) Start(ctx context.Context, before func(ctx context.Context, pid uint32) error) (_ *Instance, retErr error) {
	ctx = p.l.ctx(ctx)
	started := false
	defer func() {
		if !started { // an error, or a bug of the caller's before (a panic)
			_ = p.Discard(ctx) // logged
		}
	}()
	if !p.Alive() {
		return nil, fmt.Errorf("the prepared sandbox %s ended before it was started", p.ID)
	}
	if before != nil {
		if err := before(ctx, p.Pid); err != nil {
			return nil, err
		}
	}
	if err := p.task.Start(ctx); err != nil {
		return nil, fmt.Errorf("start task: %w", explainTaskError(err))
	}
	inst := &Instance{ID: p.ID, Pid: p.Pid, container: p.container, task: p.task, exited: make(chan struct{}), l: p.l, stdio: p.stdio, cgroup: p.cgroup, root: p.root, Masks: p.masks}
	p.ended.Do(func() {}) // the instance owns the container now
	go inst.watch(p.exitCh)
	started = true
	return inst, nil
}

// Discard removes a sandbox that was never started; it does nothing
// after Start succeeded or a first Discard. What it could not remove (it
// says what) stays labelled as mcpcage's, for the next daemon's Reap.
func (p *Prepared) Discard(ctx context.Context) error {
	var err error
	p.ended.Do(func() {
		ctx, cancel := context.WithTimeout(p.l.ctx(context.WithoutCancel(ctx)), 10*time.Second)
		defer cancel()
		task := p.task
		if task == nil {
			// NewTask failed, which containerd may not have: a task it
			// created anyway would keep the container from going.
			if t, e := p.container.Task(ctx, nil); e == nil {
				task = t
			} else if !errdefs.IsNotFound(e) {
				err = fmt.Errorf("look for the task of %s: %w", p.ID, e)
			}
		}
		if task != nil {
			if _, e := task.Delete(ctx, containerd.WithProcessKill); e != nil && !errdefs.IsNotFound(e) {
				err = fmt.Errorf("remove the unstarted task %s: %w", p.ID, e)
			}
		}
		if e := p.container.Delete(ctx, containerd.WithSnapshotCleanup); e != nil && !errdefs.IsNotFound(e) {
			err = errors.Join(err, fmt.Errorf("remove the unstarted container %s: %w", p.ID, e))
		} else {
			err = errors.Join(err, removeRoot(p.root))
		}
		if err != nil {
			p.l.log.Warn("prepared sandbox not fully removed", "container", p.ID, "err", err)
		}
	})
	return err
}

// checkPins makes sure the created container, whose process has not run
// a single instruction of the server yet, shows each pinned object at its
// target: runc mounted a path, and a path can be swapped between the check
// and the mount; an inode cannot.
func checkPins(pid uint32, mounts []BindMount) error {
	var root *os.File
	for _, m := range mounts {
		if m.Pin == nil {
			continue
		}
		if root == nil {
			var err error
			if root, err = os.OpenFile(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY, 0); err != nil {
				return fmt.Errorf("check mounts: %w", err)
			}
			defer func() { _ = root.Close() }()
		}
		fd, err := unix.Openat2(int(root.Fd()), m.Target, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			return fmt.Errorf("check mount %s: %w", m.Target, err)
		}
		var got, want unix.Stat_t
		err = unix.Fstat(fd, &got)
		_ = unix.Close(fd) // an O_PATH descriptor
		if err == nil {
			err = unix.Fstat(int(m.Pin.Fd()), &want)
		}
		if err != nil {
			return fmt.Errorf("check mount %s: %w", m.Target, err)
		}
		if got.Dev != want.Dev || got.Ino != want.Ino {
			return fmt.Errorf("mount source %s changed while the sandbox was set up (a symlink or directory was swapped), so %s would not show what was checked: refused", m.Source, m.Target)
		}
	}
	return nil
}

// explainTaskError adds advice to runc errors users meet.
func explainTaskError(err error) error {
	msg := err.Error()
	switch {
	case containsAny(msg, "executable file not found", "no such file or directory: unknown"):
		return fmt.Errorf("%w (the server's command is not installed, or not visible in the sandbox)", err)
	case containsAny(msg, "permission denied"):
		return fmt.Errorf("%w (the sandbox user cannot execute the server's command)", err)
	}
	return err
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// watch records the exit and closes the daemon's ends of stdout and stderr
// once containerd has copied everything the server wrote.
func (i *Instance) watch(exitCh <-chan containerd.ExitStatus) {
	i.status = <-exitCh
	if err := i.status.Error(); err != nil {
		// The task's exit stream broke: containerd went away (a restart).
		// The server may still run, and nothing would tell its exit or
		// stop it: stop it here, through its cgroup, and say so.
		i.lost = fmt.Errorf("%w (%v)", ErrContainerdLost, err)
		i.l.log.Error("containerd stopped during a session: killing its server through the cgroup", "container", i.ID, "err", err)
		if kerr := killCgroup(i.cgroup); kerr != nil {
			i.l.log.Error("server of a session containerd lost could not be killed", "container", i.ID, "err", kerr)
		}
	}
	i.limits = readLimits(i.cgroup) // before the task's deletion removes the cgroup
	done := make(chan struct{})
	go func() {
		i.task.IO().Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// A process outside the container's init kept the pipes open.
		i.task.IO().Cancel()
	}
	close(i.exited)
	// Only EOF for the daemon's readers: what the server wrote has been
	// copied, and a failed close leaves nothing to recover.
	for _, c := range []io.Closer{i.stdio.Stdout, i.stdio.Stderr} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// Limits reports the cgroup limits the server ran into; valid once Exited
// is closed.
func (i *Instance) Limits() Limits { return i.limits }

// Exited is closed when the server's task has exited and its output has
// been drained.
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// ExitCode returns the exit status; valid once Exited is closed.
func (i *Instance) ExitCode() (uint32, error) { return i.status.ExitCode(), i.status.Error() }

// Stop takes the server down by the MCP stdio ladder: stdin is closed
// (the caller closed the stream it gave; this closes containerd's side),
// then after grace SIGTERM to all processes, then after grace SIGKILL.
func (i *Instance) Stop(ctx context.Context, grace time.Duration) {
	ctx = i.l.ctx(ctx)
	if err := i.task.CloseIO(ctx, containerd.WithStdinCloser); err != nil && !errdefs.IsNotFound(err) {
		i.l.log.Debug("close server stdin", "container", i.ID, "err", err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		select {
		case <-i.exited:
			return
		case <-time.After(grace):
		}
		i.l.log.Debug("signalling server", "container", i.ID, "signal", sig.String())
		if err := i.task.Kill(ctx, sig, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
			i.l.log.Warn("signal server", "container", i.ID, "signal", sig.String(), "err", err)
		}
	}
	select {
	case <-i.exited:
	case <-time.After(10 * time.Second):
		i.l.log.Error("server did not exit after SIGKILL", "container", i.ID)
	}
}

// Kill sends SIGKILL to every process of the sandbox at once.
func (i *Instance) Kill(ctx context.Context) {
	if err := i.task.Kill(i.l.ctx(ctx), syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		i.l.log.Warn("kill server", "container", i.ID, "err", err)
	}
}

// Remove deletes the task and the container. Call after Stop.
func (i *Instance) Remove(ctx context.Context) error {
	var err error
	i.cleanOnce.Do(func() {
		wait := removeWait
		if i.lost != nil {
			wait = lostRemoveWait // until containerd is back
		}
		ctx := i.l.ctx(context.WithoutCancel(ctx))
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		for {
			if err = i.remove(ctx); err == nil || i.lost == nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(removeRetry):
			}
		}
	})
	return err
}

// Bounds of Remove: a normal removal, and one that waits for a lost
// containerd to come back, trying again every removeRetry.
const (
	removeWait     = 15 * time.Second
	lostRemoveWait = 2 * time.Minute
	removeRetry    = time.Second
)

func (i *Instance) remove(ctx context.Context) error {
	var err error
	if _, e := i.task.Delete(ctx, containerd.WithProcessKill); e != nil && !errdefs.IsNotFound(e) {
		err = fmt.Errorf("delete task %s: %w", i.ID, e)
	}
	if e := i.container.Delete(ctx, containerd.WithSnapshotCleanup); e != nil && !errdefs.IsNotFound(e) {
		return errors.Join(err, fmt.Errorf("delete container %s: %w", i.ID, e))
	}
	if e := removeRoot(i.root); e != nil {
		// The container is gone: nothing to try again (the next
		// daemon's Reap removes what is left).
		i.l.log.Warn("sandbox root not removed", "container", i.ID, "err", e)
	}
	return err
}

// Reap removes every container of the namespace that mcpcaged created,
// with its task: what a previous daemon left when it crashed. It returns
// how many containers it removed.
func (l *Launcher) Reap(ctx context.Context) (int, error) {
	ctx = l.ctx(ctx)
	cs, err := l.client.Containers(ctx, fmt.Sprintf(`labels."%s"==true`, LabelManaged))
	if err != nil {
		return 0, fmt.Errorf("list leftover containers: %w", err)
	}
	var errs []error
	n := 0
	kept := map[string]bool{} // containers still there: their roots stay
	for _, c := range cs {
		if t, err := c.Task(ctx, nil); err == nil {
			if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete task %s: %w", c.ID(), err))
				kept[c.ID()] = true
				continue
			}
		} else if !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("load task %s: %w", c.ID(), err))
			kept[c.ID()] = true
			continue
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container %s: %w", c.ID(), err))
			kept[c.ID()] = true
			continue
		}
		l.log.Info("removed leftover container", "container", c.ID())
		n++
	}
	// FIFO directories of dead sessions.
	if ents, err := os.ReadDir(l.fifoDir); err == nil {
		for _, e := range ents {
			if err := os.RemoveAll(l.fifoDir + "/" + e.Name()); err != nil {
				errs = append(errs, fmt.Errorf("remove leftover fifos: %w", err))
			}
		}
	}
	// Roots of dead sandboxes.
	if ents, err := os.ReadDir(l.rootsDir); err == nil {
		for _, e := range ents {
			if !kept[e.Name()] {
				if err := removeRoot(filepath.Join(l.rootsDir, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return n, errors.Join(errs...)
}

// Count returns how many mcpcage containers exist in the namespace.
func (l *Launcher) Count(ctx context.Context) (int, error) {
	cs, err := l.client.Containers(l.ctx(ctx), fmt.Sprintf(`labels."%s"==true`, LabelManaged))
	return len(cs), err
}

// ImageProcess is what an image runs when its server names no command:
// the entrypoint and CMD of its config, and its working directory.
type ImageProcess struct {
	Entrypoint, Cmd []string
	WorkingDir      string
}

// ImageProcess reads ref's process from its config, pulling the image
// when it is absent.
func (l *Launcher) ImageProcess(ctx context.Context, ref string) (ImageProcess, error) {
	ctx = l.ctx(ctx)
	img, release, err := l.image(ctx, ref)
	if err != nil {
		return ImageProcess{}, err
	}
	defer release()
	cfg, err := img.Spec(ctx)
	if err != nil {
		return ImageProcess{}, fmt.Errorf("read the config of image %s: %w", ref, err)
	}
	return ImageProcess{Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd, WorkingDir: cfg.Config.WorkingDir}, nil
}

// Argv is the command line the image runs with args in place of its CMD
// (nil args: its CMD), as `docker run IMAGE ARGS...` does.
func (p ImageProcess) Argv(args []string) []string {
	if args == nil {
		args = p.Cmd
	}
	return append(append([]string(nil), p.Entrypoint...), args...)
}

// mergeImageEnv puts the image's environment (PATH above all) under the
// spec's own variables, which win.
func mergeImageEnv(ctx context.Context, img containerd.Image, s *specs.Spec) error {
	cfg, err := img.Spec(ctx)
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	set := map[string]bool{}
	for _, kv := range s.Process.Env {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	var env []string
	for _, kv := range cfg.Config.Env {
		k, _, _ := strings.Cut(kv, "=")
		if !set[k] || k == "PATH" {
			env = append(env, kv)
			set[k] = true
		}
	}
	for _, kv := range s.Process.Env {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" && len(cfg.Config.Env) > 0 && hasKey(cfg.Config.Env, "PATH") {
			continue // the image knows where its programs are
		}
		env = append(env, kv)
	}
	s.Process.Env = env
	return nil
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}
