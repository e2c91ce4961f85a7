package bpf

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Cage is the loaded and attached program set.
type Cage struct {
	objs     cageObjects
	links    []link.Link
	pinDir   string
	parent   string
	level    uint32
	nsOffset uint32
	// hostNetns: the host's network namespace cookie, which bind.c's
	// loader sets too.
	hostNetns uint64
	onClose   []func() error
	reader    *ringbuf.Reader
	obs       observers
	lsm       *lsmObjects  // BPF-LSM file_open, when enabled
	bind      *bindObjects // bind and listen control, when enabled
	// handshakes: net.connect waits for the TCP handshake's outcome.
	handshakes    bool
	handshakesErr error
	// unixPeers: pathname unix sockets reached are checked
	// (tp_btf/sk_data_ready attached).
	unixPeers    bool
	unixPeersErr error
	noUnixPeers  bool // Options.noUnixPeers
	drain        drainState
	// slots: the sessions' call epochs; mmapErr says why they are moved
	// by syscall rather than by a store into mapped memory.
	slots   *callSlots
	mmapErr error
	// directErr says why the programs read kernel structures by
	// bpf_probe_read_kernel rather than by direct loads (nil: direct).
	directErr error
	// tick: the kernel's tick, which times the sessions' windows
	// (sessionclock.go); tickErr says why they are timed by the
	// monotonic clock instead.
	tick    time.Duration
	tickErr error
	// book: the egress entries written, per session and per owner.
	book egressBook
}

// Options configure Load.
type Options struct {
	// CgroupParent is mcpcage's parent cgroup in the cgroup v2 tree
	// (e.g. /sys/fs/cgroup/unified/mcpcage); it is created if missing.
	CgroupParent string
	// PinDir, when set, is a bpffs directory where the cgroup links are
	// pinned, so enforcement outlives a crashed daemon until its restart
	// reaps the sandboxes.
	PinDir string
	// ObserverLinger is how long the observation programs stay attached
	// once no session needs them: after Load (which attaches them to
	// find out whether the kernel takes them) and after the last session
	// is unregistered. Detaching them waits for one RCU grace period of
	// the kernel per syscall tracepoint, one after the other (the kernel
	// holds its event_mutex across each): about 2 s here. A session that
	// starts while they linger finds them attached, and the session that
	// ended did not wait. 0 detaches them at once, synchronously.
	ObserverLinger time.Duration
	// OnDetachError is told when a lingering detach failed (some
	// observer may still be attached): a synchronous detach returns its
	// error instead.
	OnDetachError func(error)
	// noMmap makes the call epochs go by syscall, as on a kernel without
	// mmapable BPF arrays: the tests take that path too.
	noMmap bool
	// noDirectReads makes the programs read kernel structures by helper
	// calls, as on a kernel without bpf_rdonly_cast: the tests take that
	// path too.
	noDirectReads bool
	// refuseDirect makes the direct build fail to load, as a kernel
	// that has the kfunc but refuses it would: the tests take the
	// fallback too.
	refuseDirect bool
	// noUnixPeers leaves tp_btf/sk_data_ready unattached, as on a
	// kernel without it: the tests take the check at connect's exit too.
	noUnixPeers bool
	// noTicks times the fold window by the monotonic clock, as where the
	// tick could not be measured: the tests take that path too.
	noTicks bool
}

// errTurnedOff is why the call epochs go by syscall under Options.noMmap,
// and why kernel structures are read by helper calls under
// Options.noDirectReads.
var errTurnedOff = errors.New("turned off by the caller")

// errRefusedForTest is the direct build's load error under
// Options.refuseDirect.
var errRefusedForTest = errors.New("refused by the test")

// Load loads the programs, attaches the cgroup hooks to the parent and the
// observation tracepoints, and returns the cage.
func Load(o Options) (_ *Cage, retErr error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := os.MkdirAll(o.CgroupParent, 0o755); err != nil {
		return nil, fmt.Errorf("create parent cgroup: %w", err)
	}
	viewLevel, err := cgroupLevel(o.CgroupParent)
	if err != nil {
		return nil, err
	}
	calib, err := loadCage()
	if err != nil {
		return nil, fmt.Errorf("load eBPF object: %w", err)
	}
	cal, err := calibrate(calib, filepath.Dir(filepath.Clean(o.CgroupParent)))
	if err != nil {
		return nil, err
	}
	offset := cal.offset
	level := viewLevel + offset
	// The syscall tracepoints' cheap test of "under the parent cgroup".
	parentID, err := CgroupID(o.CgroupParent)
	if err != nil {
		return nil, fmt.Errorf("parent cgroup id: %w", err)
	}
	hostNetns, err := hostNetnsCookie()
	if err != nil {
		return nil, err
	}
	c := &Cage{parent: o.CgroupParent, level: level + 1, pinDir: o.PinDir, nsOffset: offset, hostNetns: hostNetns, noUnixPeers: o.noUnixPeers,
		tick: cal.tick, tickErr: cal.tickErr}
	if o.noTicks {
		c.tick, c.tickErr = 0, errTurnedOff // the caller's choice, whatever the measurement said
	}
	c.obs.linger, c.obs.onDetachError = o.ObserverLinger, o.OnDetachError
	if c.mmapErr = mmapCallSlots(); c.mmapErr == nil && o.noMmap {
		c.mmapErr = errTurnedOff
	}
	vars := loadSettings{sessionLevel: level + 1, parentLevel: level, parentCgid: parentID, hostNetns: hostNetns, mmapSlots: c.mmapErr == nil,
		tick: c.tick}
	if c.directErr = directReadsSupported(); c.directErr == nil && o.noDirectReads {
		c.directErr = errTurnedOff
	}
	if c.directErr == nil {
		load := loadCageDirect
		if o.refuseDirect {
			load = func() (*ebpf.CollectionSpec, error) { return nil, errRefusedForTest }
		}
		if err = c.loadObjects(load, vars); err != nil {
			// A kernel that has the kfunc but refuses it to these
			// programs: the object without it reads the same by helpers.
			c.directErr = fmt.Errorf("the kernel refused them: %w", err)
		}
	}
	if c.directErr != nil {
		err = c.loadObjects(loadCage, vars)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("eBPF verifier rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = c.Close() // the error that made Load fail is the one to report
		}
	}()
	if c.slots, err = newCallSlots(c.objs.CallSlots, c.mmapErr == nil); err != nil {
		return nil, err
	}
	if err := setParentCgroup(c.objs.ParentCgroup, o.CgroupParent); err != nil {
		return nil, err
	}
	if o.PinDir != "" {
		if err := ensureBPFFS(o.PinDir); err != nil {
			return nil, err
		}
		if err := removeStalePins(o.PinDir); err != nil {
			return nil, err
		}
	}
	for _, h := range []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{"connect4", ebpf.AttachCGroupInet4Connect, c.objs.CageConnect4},
		{"connect6", ebpf.AttachCGroupInet6Connect, c.objs.CageConnect6},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, c.objs.CageSendmsg4},
		{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, c.objs.CageSendmsg6},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: o.CgroupParent, Attach: h.attach, Program: h.prog})
		if err != nil {
			return nil, fmt.Errorf("attach %s to %s: %w", h.name, o.CgroupParent, err)
		}
		c.links = append(c.links, l)
		if o.PinDir != "" {
			if err := l.Pin(filepath.Join(o.PinDir, h.name)); err != nil {
				return nil, fmt.Errorf("pin %s: %w", h.name, err)
			}
		}
	}
	// Attach the observers once to find out now, not at the first
	// session, whether this kernel takes them (and tp_btf); they linger
	// like after a session.
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	if err := c.attachObservers(); err != nil {
		return nil, err
	}
	if err := c.idleObservers(); err != nil {
		return nil, err
	}
	return c, nil
}

// attachObservers attaches the observation programs: the syscall
// tracepoints (which put every thread on the host on the syscall slow
// path while attached), the exec raw tracepoint and the TCP state
// tracepoint. They are attached only while a session is registered.
func (c *Cage) attachObservers() (retErr error) {
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.detachObservers())
		}
	}()
	for _, tp := range c.objs.syscallObservers() {
		l, err := attachSettled(func() (link.Link, error) { return link.Tracepoint("syscalls", tp.name, tp.prog, nil) })
		if err != nil {
			call := strings.TrimPrefix(strings.TrimPrefix(tp.name, "sys_enter_"), "sys_exit_")
			if (legacySyscall[call] || newerSyscall[call]) && errors.Is(err, os.ErrNotExist) {
				continue // architectures without the old calls (arm64), kernels without the new ones
			}
			return fmt.Errorf("attach tracepoint %s: %w", tp.name, err)
		}
		c.obs.links = append(c.obs.links, l)
		c.obs.names = append(c.obs.names, tp.name)
	}
	// The outcome of a non-blocking TCP connect: where tp_btf is refused,
	// net.connect reports connect(2)'s EINPROGRESS instead.
	l, err := link.AttachTracing(link.TracingOptions{Program: c.objs.CageTcpState})
	c.handshakes, c.handshakesErr = err == nil, err
	if err == nil {
		c.obs.links = append(c.obs.links, l)
		c.obs.names = append(c.obs.names, "inet_sock_set_state")
	}
	if err := c.objs.TrackHandshakes.Set(c.handshakes); err != nil {
		return fmt.Errorf("set handshake tracking: %w", err)
	}
	// The pathname unix sockets a session reaches (connect, datagrams),
	// checked against deny_paths: where tp_btf is refused, they are not.
	// Without it, a connect is checked at connect(2)'s exit instead.
	if c.noUnixPeers {
		l, err = nil, errTurnedOff
	} else {
		l, err = link.AttachTracing(link.TracingOptions{Program: c.objs.CageUnixPeer})
	}
	c.unixPeers, c.unixPeersErr = err == nil, err
	if err == nil {
		c.obs.links = append(c.obs.links, l)
		c.obs.names = append(c.obs.names, "sk_data_ready")
	}
	if !c.unixPeers {
		l, err := attachSettled(func() (link.Link, error) {
			return link.Tracepoint("syscalls", "sys_exit_connect", c.objs.CageExitConnectUnix, nil)
		})
		if err != nil {
			return fmt.Errorf("attach tracepoint sys_exit_connect (unix sockets): %w", err)
		}
		c.obs.links = append(c.obs.links, l)
		c.obs.names = append(c.obs.names, "sys_exit_connect_unix")
	}
	l, err = attachSettled(func() (link.Link, error) {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: c.objs.CageExec})
	})
	if err != nil {
		return fmt.Errorf("attach raw tracepoint sched_process_exec: %w", err)
	}
	c.obs.links = append(c.obs.links, l)
	c.obs.names = append(c.obs.names, "sched_process_exec")
	if c.lsm != nil {
		l, err := link.AttachLSM(link.LSMOptions{Program: c.lsm.CageFileOpen})
		if err != nil {
			return fmt.Errorf("attach lsm/file_open: %w", err)
		}
		c.obs.links = append(c.obs.links, l)
		c.obs.names = append(c.obs.names, "file_open")
	}
	return nil // pinned by observe, for the sessions
}

// syscallObserver is a syscall tracepoint (tracefs group "syscalls") the
// observation programs are attached to, and its program.
type syscallObserver struct {
	name string
	prog *ebpf.Program
}

// syscallObservers lists the syscall tracepoints and o's programs for
// them (nil programs for a zero o).
func (o *cageObjects) syscallObservers() []syscallObserver {
	return []syscallObserver{
		// Opens have no entry program: their exit reads the arguments.
		{"sys_exit_openat", o.CageExitOpen}, {"sys_exit_openat2", o.CageExitOpen},
		{"sys_exit_open", o.CageExitOpen}, {"sys_exit_creat", o.CageExitOpen},
		{"sys_enter_execve", o.CageEnterExecve}, {"sys_enter_execveat", o.CageEnterExecveat},
		{"sys_enter_connect", o.CageEnterConnect}, {"sys_exit_connect", o.CageExitConnect},
		{"sys_enter_unlinkat", o.CageEnterUnlinkat}, {"sys_exit_unlinkat", o.CageExitFsop},
		{"sys_enter_mkdirat", o.CageEnterMkdirat}, {"sys_exit_mkdirat", o.CageExitFsop},
		{"sys_enter_renameat2", o.CageEnterRenameat2}, {"sys_exit_renameat2", o.CageExitFsop},
		{"sys_enter_renameat", o.CageEnterRenameat}, {"sys_exit_renameat", o.CageExitFsop},
		{"sys_enter_unlink", o.CageEnterUnlink}, {"sys_exit_unlink", o.CageExitFsop},
		{"sys_enter_rmdir", o.CageEnterRmdir}, {"sys_exit_rmdir", o.CageExitFsop},
		{"sys_enter_mkdir", o.CageEnterMkdir}, {"sys_exit_mkdir", o.CageExitFsop},
		{"sys_enter_rename", o.CageEnterRename}, {"sys_exit_rename", o.CageExitFsop},
		{"sys_enter_linkat", o.CageEnterLinkat}, {"sys_exit_linkat", o.CageExitFsop},
		{"sys_enter_link", o.CageEnterLink}, {"sys_exit_link", o.CageExitFsop},
		{"sys_enter_truncate", o.CageEnterTruncate}, {"sys_exit_truncate", o.CageExitFsop},
		{"sys_enter_chmod", o.CageEnterChmod}, {"sys_exit_chmod", o.CageExitFsop},
		{"sys_enter_fchmodat", o.CageEnterFchmodat}, {"sys_exit_fchmodat", o.CageExitFsop},
		{"sys_enter_fchmodat2", o.CageEnterFchmodat2}, {"sys_exit_fchmodat2", o.CageExitFsop},
		{"sys_enter_chown", o.CageEnterChown}, {"sys_exit_chown", o.CageExitFsop},
		{"sys_enter_lchown", o.CageEnterLchown}, {"sys_exit_lchown", o.CageExitFsop},
		{"sys_enter_fchownat", o.CageEnterFchownat}, {"sys_exit_fchownat", o.CageExitFsop},
		{"sys_enter_setxattr", o.CageEnterSetxattr}, {"sys_exit_setxattr", o.CageExitFsop},
		{"sys_enter_lsetxattr", o.CageEnterLsetxattr}, {"sys_exit_lsetxattr", o.CageExitFsop},
		{"sys_enter_removexattr", o.CageEnterRemovexattr}, {"sys_exit_removexattr", o.CageExitFsop},
		{"sys_enter_lremovexattr", o.CageEnterLremovexattr}, {"sys_exit_lremovexattr", o.CageExitFsop},
		{"sys_enter_setxattrat", o.CageEnterSetxattrat}, {"sys_exit_setxattrat", o.CageExitFsop},
		{"sys_enter_removexattrat", o.CageEnterRemovexattrat}, {"sys_exit_removexattrat", o.CageExitFsop},
		{"sys_enter_utimensat", o.CageEnterTimes}, {"sys_enter_utimes", o.CageEnterTimes},
		{"sys_enter_utime", o.CageEnterTimes}, {"sys_enter_futimesat", o.CageEnterTimes},
	}
}

// ObservedSyscallTracepoints names the tracepoints of tracefs's group
// "syscalls" that the observation programs are attached to while a
// session runs (and for the linger after it).
func ObservedSyscallTracepoints() []string {
	var names []string
	for _, tp := range (&cageObjects{}).syscallObservers() {
		if !slices.Contains(names, tp.name) {
			names = append(names, tp.name)
		}
	}
	return names
}

// attachSettled is attach, tried again for a while when the kernel says
// the program is attached there already (EEXIST): the same program's
// previous link, just closed, is released only once every copy of its
// descriptor is, and a process forked meanwhile holds one until it execs
// (seen once under load: a session registered as the observers lingered
// out failed with "file exists").
func attachSettled(attach func() (link.Link, error)) (link.Link, error) {
	wait := time.Millisecond
	deadline := time.Now().Add(attachSettleTime)
	for {
		l, err := attach()
		if !errors.Is(err, unix.EEXIST) || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// attachSettleTime bounds attachSettled's tries.
const attachSettleTime = 2 * time.Second

// observerPin prefixes the pins of the observation links in the pin
// directory.
const observerPin = "obs-"

// pinObservers pins the observation links (syscall tracepoints as
// perf-event BPF links, the raw tracepoint and tp_btf as tracing links)
// while sessions run, so that deny_paths' kill-on-open outlives the
// daemon: a crashed daemon leaves them attached, with the session and
// deny maps they hold, until its restart has reaped the sandboxes and
// removes the pins. Lingering observers are not pinned (idleObservers):
// with no session to enforce, a crashed daemon's go with it. Pinning a
// pinned link again does nothing.
func (c *Cage) pinObservers() error {
	if c.pinDir == "" {
		return nil
	}
	for i, l := range c.obs.links {
		if err := l.Pin(filepath.Join(c.pinDir, observerPin+c.obs.names[i])); err != nil {
			return fmt.Errorf("pin the %s link: %w", c.obs.names[i], err)
		}
	}
	return nil
}

// PinsObservers reports whether the observation links are pinned while
// sessions run, and where.
func (c *Cage) PinsObservers() (bool, string) {
	return c.pinDir != "", filepath.Join(c.pinDir, observerPin+"*")
}

// observers tracks the registered sessions: the observation programs are
// attached while there is at least one.
type observers struct {
	mu       sync.Mutex
	sessions map[uint64]bool
	links    []link.Link
	names    []string // of links, for their pins
	// linger: how long the links stay attached with no session
	// (Options.ObserverLinger); idle is the pending detach, idleGen
	// tells a detach that was called off from the one due.
	linger        time.Duration
	onDetachError func(error)
	idle          *time.Timer
	idleGen       uint64
	closed        bool
}

// observe counts a registered session, attaching the observers for the
// first one unless they linger from before.
func (c *Cage) observe(cgid uint64) error {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	if c.obs.idle != nil {
		c.obs.idle.Stop()
		c.obs.idle = nil
		c.obs.idleGen++
	}
	if len(c.obs.links) == 0 {
		if err := c.attachObservers(); err != nil {
			return err
		}
	}
	if err := c.pinObservers(); err != nil {
		if len(c.obs.sessions) == 0 {
			err = errors.Join(err, c.idleObservers())
		}
		return err
	}
	if c.obs.sessions == nil {
		c.obs.sessions = map[uint64]bool{}
	}
	c.obs.sessions[cgid] = true
	return nil
}

// unobserve forgets a session, detaching the observers after the last.
func (c *Cage) unobserve(cgid uint64) error {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	if !c.obs.sessions[cgid] {
		return nil
	}
	delete(c.obs.sessions, cgid)
	if len(c.obs.sessions) == 0 {
		return c.idleObservers()
	}
	return nil
}

// idleObservers detaches the observers, which no session needs, at once
// or after the linger (unpinned meanwhile). Called with obs.mu held.
func (c *Cage) idleObservers() error {
	if c.obs.linger <= 0 {
		return c.detachObservers()
	}
	// Unpinned while they linger: a daemon that dies now takes them
	// with it (no session is left for them to enforce).
	var errs []error
	for _, l := range c.obs.links {
		if err := l.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	c.lingerFor(c.obs.linger)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unpin the lingering observers: %w", err)
	}
	return nil
}

// lingerOver detaches the observers when the linger that ended is still
// the one due (no session came, Close did not detach them first).
func (c *Cage) lingerOver(gen uint64) {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	if gen != c.obs.idleGen || c.obs.closed || len(c.obs.sessions) > 0 {
		return
	}
	c.obs.idle = nil
	if err := c.detachObservers(); err != nil && c.obs.onDetachError != nil {
		c.obs.onDetachError(err)
	}
}

// Observing reports whether the observation programs are attached (while
// any session is registered, and for Options.ObserverLinger after:
// processes outside sessions pay the syscall tracepoints' cost only
// then).
func (c *Cage) Observing() bool {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	return len(c.obs.links) > 0
}

// ObserverLinger is how long the observers stay attached once no session
// needs them (Options.ObserverLinger, or the last SetObserverLinger).
func (c *Cage) ObserverLinger() time.Duration {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	return c.obs.linger
}

// SetObserverLinger changes the linger (a reload of observer_linger). A
// linger in progress starts over with the new length: 0 or less detaches
// the observers now (an error means one may still be attached).
func (c *Cage) SetObserverLinger(d time.Duration) error {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	c.obs.linger = d
	if c.obs.idle == nil || c.obs.closed {
		return nil
	}
	c.obs.idle.Stop()
	c.obs.idle = nil
	if d <= 0 {
		c.obs.idleGen++ // a detach already due does nothing
		return c.detachObservers()
	}
	c.lingerFor(d)
	return nil
}

// lingerFor schedules the observers' detach d from now, calling off any
// detach that was due before (obs.mu held).
func (c *Cage) lingerFor(d time.Duration) {
	c.obs.idleGen++
	gen := c.obs.idleGen
	c.obs.idle = time.AfterFunc(d, func() { c.lingerOver(gen) })
}

// detachObservers detaches and unpins the observation programs; an error
// means one may still be attached (the host keeps paying for it).
func (c *Cage) detachObservers() error {
	err := closeLinks(c.obs.links, c.pinDir != "")
	c.obs.links, c.obs.names = nil, nil
	if err != nil {
		return fmt.Errorf("detach observers: %w", err)
	}
	return nil
}

// closeLinks unpins (when pinned) and closes links, going on past errors.
// The links are closed all at once: closing a tracepoint's link waits for
// the kernel's RCU grace periods (about 50 ms here), and one at a time the
// 50-odd observers took 4 s, at every start of the daemon and whenever
// the last session ended (which waited for it); together they take about
// 1.6 s. What they cannot share: the last link on a tracepoint makes the
// kernel unregister it and wait for its own grace periods under a global
// mutex (perf_trace_event_unreg), about 28 ms a tracepoint here, one
// after the other, and every attach on the host waits for that mutex.
func closeLinks(links []link.Link, pinned bool) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, l := range links {
		if pinned {
			if err := l.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// legacySyscall names the calls some architectures lack (arm64 has only
// the *at forms).
var legacySyscall = map[string]bool{"open": true, "creat": true, "unlink": true, "rmdir": true, "mkdir": true, "rename": true,
	"renameat": true, "link": true, "chmod": true, "chown": true, "lchown": true, "utime": true, "utimes": true, "futimesat": true}

// newerSyscall names the calls older kernels lack: fchmodat2 (Linux
// 6.6), setxattrat and removexattrat (6.13). A kernel without one cannot
// be asked to make it either.
var newerSyscall = map[string]bool{"fchmodat2": true, "setxattrat": true, "removexattrat": true}

// Handshakes reports whether net.connect carries the TCP handshake's
// outcome (tp_btf/inet_sock_set_state attached), and why not.
func (c *Cage) Handshakes() (bool, error) {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	return c.handshakes, c.handshakesErr
}

// UnixPeers reports whether the pathname unix sockets a session connects
// or sends to are checked against deny_paths as the kernel reaches them
// (tp_btf/sk_data_ready attached), and why not: then only connects are,
// at connect(2)'s exit, on the socket at the call's descriptor.
func (c *Cage) UnixPeers() (bool, error) {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	return c.unixPeers, c.unixPeersErr
}

// DirectReads reports whether the programs read the kernel's files,
// dentries and mounts by direct loads (bpf_rdonly_cast), and why not:
// without it each field is a bpf_probe_read_kernel call.
func (c *Cage) DirectReads() (bool, error) {
	return c.directErr == nil, c.directErr
}

// The ring's sizes (cage.h's EVENTS_BYTES and EVENTS_RESERVE), and the
// space an event takes in it (the record and its 8-byte header).
const (
	eventsBytes     = 8 << 20
	eventsReserve   = 4 << 20
	eventRecordSize = int(unsafe.Sizeof(cageEvent{})) + 8
)

// FairShare reports whether each session's urgent events are held to
// their share of the ring (cage.c's URGENT_SHARE unread, once the
// reserve runs low), so that one
// session's flood of renames cannot leave another's without room: only
// with the call slots mapped (CallEpochsMapped), where the reader counts
// them read with a store.
func (c *Cage) FairShare() bool {
	return c.mmapErr == nil
}

// SessionClock says what times the sessions' windows (a process's
// repeated opens of a file folded into one record for a second, each
// session's event budget per 100 ms): the kernel's tick of the length
// returned, or (err set) the monotonic clock, with why.
func (c *Cage) SessionClock() (time.Duration, error) {
	return c.tick, c.tickErr
}

// CallEpochsMapped reports whether moving a session's call epoch
// (NewCall) is a store into memory the kernel maps into this process,
// and why not: without BPF_F_MMAPABLE it is a map update, a syscall.
func (c *Cage) CallEpochsMapped() (bool, error) {
	return c.mmapErr == nil, c.mmapErr
}

// Level is the cgroup depth of session cgroups.
func (c *Cage) Level() uint32 { return c.level }

// NamespaceOffset is how many cgroup levels lie above this process's
// cgroup namespace root (0 outside containers).
func (c *Cage) NamespaceOffset() uint32 { return c.nsOffset }

// Close detaches everything and unpins the links (a clean shutdown: no
// session is left to enforce).
func (c *Cage) Close() error {
	var errs []error
	if err := closeLinks(c.links, c.pinDir != ""); err != nil {
		errs = append(errs, fmt.Errorf("detach cgroup programs: %w", err))
	}
	c.links = nil
	c.obs.mu.Lock()
	c.obs.closed = true
	if c.obs.idle != nil {
		c.obs.idle.Stop()
		c.obs.idle = nil
	}
	errs = append(errs, c.detachObservers())
	if c.lsm != nil {
		if err := c.lsm.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close BPF-LSM objects: %w", err))
		}
	}
	c.obs.mu.Unlock()
	for _, f := range c.onClose {
		errs = append(errs, f())
	}
	errs = append(errs, c.slots.close())
	if c.pinDir != "" {
		// Every pin is gone: the directory goes too (it stays, harmless,
		// when something still holds a pin in it).
		_ = os.Remove(c.pinDir)
	}
	return errors.Join(append(errs, c.objs.Close())...)
}

// parentCgroupIndex is the parent cgroup's slot in cage.h's
// parent_cgroup array (its only one).
const parentCgroupIndex = uint32(0)

// setParentCgroup puts the parent cgroup in the programs' cgroup array.
func setParentCgroup(m *ebpf.Map, dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open parent cgroup: %w", err)
	}
	defer func() { _ = f.Close() }()
	if err := m.Put(parentCgroupIndex, uint32(f.Fd())); err != nil {
		return fmt.Errorf("set parent cgroup: %w", err)
	}
	return nil
}

// cgroupLevel returns the depth of dir in its cgroup v2 hierarchy (the
// root is 0).
func cgroupLevel(dir string) (uint32, error) {
	level := uint32(0)
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err != nil {
			return 0, fmt.Errorf("statfs %s: %w", d, err)
		}
		if st.Type != unix.CGROUP2_SUPER_MAGIC {
			if d == filepath.Clean(dir) {
				return 0, fmt.Errorf("%s is not in a cgroup v2 hierarchy", dir)
			}
			return level - 1, nil
		}
		level++
		if d == "/" {
			return 0, fmt.Errorf("%s: cgroup v2 mounted at /?", dir)
		}
	}
}

// CgroupID returns the id of the cgroup v2 directory (its inode number).
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on /sys/fs/bpf: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	return nil
}

// cagePins are the names the cage pins its links at in Options.PinDir:
// the cgroup hooks' (Load, attachBind) and, beginning with observerPin,
// the observers' (pinObservers).
var cagePins = []string{"connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6", "routing_egress", "setsockopt", "listen_ingress"}

// removeStalePins drops links a crashed daemon left pinned; by now the
// sandboxes they protected have been reaped. One left behind would keep
// its programs attached next to the new ones. Only the cage's own names
// go: the directory comes from the configuration
// (daemon.bpf_pin_dir/containerd_namespace), and whatever else is in it
// (another program's pins, if it names theirs) is not the cage's to remove.
func removeStalePins(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list stale pins: %w", err)
	}
	for _, e := range ents {
		if !slices.Contains(cagePins, e.Name()) && !strings.HasPrefix(e.Name(), observerPin) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove stale pin: %w", err)
		}
	}
	return nil
}

// calibration is what calibrate found out.
type calibration struct {
	// offset: how many cgroup levels lie above the root this process
	// can see (0 outside a cgroup namespace).
	offset uint32
	// tick: the kernel's tick (measureTick); tickErr says why it is
	// unknown.
	tick    time.Duration
	tickErr error
}

// calibrate asks the kernel for the ancestors of this process's own
// cgroup and finds its own id among them (the cgroup levels above the
// root this process can see), and measures the kernel's tick.
func calibrate(spec *ebpf.CollectionSpec, v2root string) (calibration, error) {
	var cal calibration
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return cal, err
	}
	var path string
	for _, line := range strings.Split(string(self), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			path = rest
		}
	}
	if path == "" {
		return cal, fmt.Errorf("no cgroup v2 entry in /proc/self/cgroup")
	}
	own, err := CgroupID(filepath.Join(v2root, path))
	if err != nil {
		return cal, fmt.Errorf("calibrate cgroup levels: %w", err)
	}
	viewDepth := uint32(0)
	for _, p := range strings.Split(strings.Trim(path, "/"), "/") {
		if p != "" {
			viewDepth++
		}
	}
	cs := spec.Copy()
	const option = 0x6d637067 // "mcpg": no such prctl option
	var nonceB [8]byte
	crand.Read(nonceB[:])
	nonce := binary.NativeEndian.Uint64(nonceB[:]) >> 1
	if err := cs.Variables["calib_option"].Set(uint64(option)); err != nil {
		return cal, err
	}
	if err := cs.Variables["calib_nonce"].Set(nonce); err != nil {
		return cal, err
	}
	var objs struct {
		Prog  *ebpf.Program `ebpf:"cage_calibrate"`
		Calib *ebpf.Map     `ebpf:"calib"`
		Clock *ebpf.Map     `ebpf:"calib_clock"`
	}
	if err := cs.LoadAndAssign(&objs, nil); err != nil {
		return cal, fmt.Errorf("load the calibration program: %w", err)
	}
	defer func() { _ = objs.Prog.Close() }()
	defer func() { _ = objs.Calib.Close() }()
	defer func() { _ = objs.Clock.Close() }()
	l, err := link.Tracepoint("syscalls", "sys_enter_prctl", objs.Prog, nil)
	if err != nil {
		return cal, fmt.Errorf("attach the calibration program: %w", err)
	}
	call := func() {
		_, _, _ = unix.Syscall6(unix.SYS_PRCTL, option, uintptr(nonce), 0, 0, 0, 0) // EINVAL by design
	}
	call()
	cal.tick, cal.tickErr = measureTick(call, objs.Clock, time.Sleep)
	if err := l.Close(); err != nil {
		return cal, fmt.Errorf("detach the calibration program: %w", err)
	}
	for level := uint32(0); level < objs.Calib.MaxEntries(); level++ { // CALIB_LEVELS
		var id uint64
		if err := objs.Calib.Lookup(level, &id); err != nil {
			return cal, err
		}
		if id == own {
			if level < viewDepth {
				return cal, fmt.Errorf("calibrate cgroup levels: own cgroup at level %d but %d deep in this view", level, viewDepth)
			}
			cal.offset = level - viewDepth
			return cal, nil
		}
	}
	return cal, fmt.Errorf("calibrate cgroup levels: the kernel did not report this process's cgroup %s (id %d) among its ancestors", path, own)
}
