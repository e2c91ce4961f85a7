package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/mcpcage/mcpcage/internal/contain"
	"golang.org/x/sys/unix"
)

// Kind of a kernel event: cage.h's enum event_kind.
type Kind uint32

// The kinds, generated from cage.h by bpf2go (-type event_kind).
const (
	KindFileOpen   = Kind(cageEventKindEV_FILE_OPEN)
	KindExec       = Kind(cageEventKindEV_EXEC)
	KindConnect    = Kind(cageEventKindEV_CONNECT)
	KindNetDenied  = Kind(cageEventKindEV_NET_DENIED)
	KindFileDenied = Kind(cageEventKindEV_FILE_DENIED)
	KindUDPSend    = Kind(cageEventKindEV_UDP_SEND)
	KindUnlink     = Kind(cageEventKindEV_FILE_UNLINK)
	KindRmdir      = Kind(cageEventKindEV_FILE_RMDIR)
	KindMkdir      = Kind(cageEventKindEV_FILE_MKDIR)
	KindRename     = Kind(cageEventKindEV_FILE_RENAME)
	KindLink       = Kind(cageEventKindEV_FILE_LINK)
	KindTruncate   = Kind(cageEventKindEV_FILE_TRUNCATE)
	KindChmod      = Kind(cageEventKindEV_FILE_CHMOD)
	KindChown      = Kind(cageEventKindEV_FILE_CHOWN)
	KindXattr      = Kind(cageEventKindEV_FILE_XATTR)
	// A pathname unix socket reached: a stream or seqpacket connect
	// (KindUnixConnect), a datagram sent (KindUnixSend, reported only
	// when it hits deny_paths).
	KindUnixConnect = Kind(cageEventKindEV_UNIX_CONNECT)
	KindUnixSend    = Kind(cageEventKindEV_UNIX_SEND)
)

// AtSymlinkNofollow is the AT_* flag of a change that does not follow a
// symlink in its last name (lchown, lsetxattr, AT_SYMLINK_NOFOLLOW).
const AtSymlinkNofollow = unix.AT_SYMLINK_NOFOLLOW

// Changes reports whether k changes a file by name (unlink, rmdir,
// mkdir, rename, link, truncate, chmod, chown, xattr): an event with a
// base directory (Dir) and the caller's names.
func (k Kind) Changes() bool {
	switch k {
	case KindUnlink, KindRmdir, KindMkdir, KindRename, KindLink, KindTruncate, KindChmod, KindChown, KindXattr:
		return true
	}
	return false
}

// FollowsLastName reports whether a change of kind k with AT_* flags
// atFlags acts on what a symlink in its last name leads to.
func (k Kind) FollowsLastName(atFlags uint32) bool {
	switch k {
	case KindTruncate, KindChmod, KindChown, KindXattr:
		return atFlags&AtSymlinkNofollow == 0
	}
	return false
}

// ConnectOutcome says where a net.connect's Result comes from: cage.h's
// enum connect_outcome.
type ConnectOutcome uint32

// The outcomes, generated from cage.h by bpf2go (-type connect_outcome).
const (
	// ConnectNoResult: not a connect(2) call (io_uring, TCP fast open);
	// the event records the hook's decision only.
	ConnectNoResult = ConnectOutcome(cageConnectOutcomeCONNECT_NO_RESULT)
	// ConnectSyscall: Result is connect(2)'s return value.
	ConnectSyscall = ConnectOutcome(cageConnectOutcomeCONNECT_SYSCALL)
	// ConnectHandshake: connect(2) said EINPROGRESS and Result is the
	// TCP handshake's outcome (0 or -errno).
	ConnectHandshake = ConnectOutcome(cageConnectOutcomeCONNECT_HANDSHAKE)
	// ConnectAbandoned: the socket closed before the handshake ended.
	ConnectAbandoned = ConnectOutcome(cageConnectOutcomeCONNECT_ABANDONED)
)

func (o ConnectOutcome) String() string {
	switch o {
	case ConnectSyscall:
		return "connect"
	case ConnectHandshake:
		return "handshake"
	case ConnectAbandoned:
		return "abandoned"
	}
	return "no_result"
}

func (k Kind) String() string {
	switch k {
	case KindFileOpen:
		return "file.open"
	case KindExec:
		return "process.exec"
	case KindConnect:
		return "net.connect"
	case KindNetDenied:
		return "net.denied"
	case KindFileDenied:
		return "file.denied"
	case KindUDPSend:
		return "net.udp_send"
	case KindUnlink:
		return "file.unlink"
	case KindRmdir:
		return "file.rmdir"
	case KindMkdir:
		return "file.mkdir"
	case KindRename:
		return "file.rename"
	case KindLink:
		return "file.link"
	case KindTruncate:
		return "file.truncate"
	case KindChmod:
		return "file.chmod"
	case KindChown:
		return "file.chown"
	case KindXattr:
		return "file.xattr"
	case KindUnixConnect:
		return "net.unix_connect"
	case KindUnixSend:
		return "net.unix_send"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// UnregisteredRule marks a net.denied for a task whose session is not
// registered (fail closed): cage.h's UNREGISTERED_RULE.
const UnregisteredRule = uint32(cageEventRuleUNREGISTERED_RULE)

// HostNetnsRule marks a net.denied (a connect, send or bind) of a session
// without host networking on a socket of the host's network namespace,
// passed in from outside its own: cage.h's HOST_NETNS_RULE.
const HostNetnsRule = uint32(cageEventRuleHOST_NETNS_RULE)

// UnspecifiedRule marks a net.denied of a host-network session that
// connected or sent to an unspecified address (0.0.0.0/8, ::,
// ::ffff:0.0.0.0/104), which the kernel takes to the host itself:
// cage.h's UNSPECIFIED_RULE.
const UnspecifiedRule = uint32(cageEventRuleUNSPECIFIED_RULE)

// Event is a decoded kernel event.
// HintMax is the longest Hint (and NewHint) an event carries: the
// kernel's buffer less its NUL. A Hint this long may have been cut short.
const HintMax = len(cageEvent{}.Hint) - 1

type Event struct {
	Time   time.Time
	Cgroup uint64 // session cgroup id
	Pid    uint32 // thread id
	Tgid   uint32 // process id
	Comm   string
	Kind   Kind
	// Files: the kernel's path of the opened file (audit grade), the
	// user's string (hint), flags and result (fd or -errno; for connects
	// 0 or -errno, see Outcome).
	Path   string
	Hint   string
	Flags  uint32
	Result int32
	// Repeats: opens of the same file folded since its last event (see
	// recent_opens in cage.c).
	Repeats uint32
	// Changes by name (Kind.Changes): Dir is the kernel's path of the
	// directory of Dirfd (audit grade), the base of a relative Hint, set
	// when Hint or NewHint is relative; Path is Hint, joined to Dir when
	// relative. NewHint is a rename's new name. AtFlags are the call's AT_*
	// flags (AtSymlinkNofollow). OverBudget: the change came over the
	// session's event budget and is reported only for the daemon to check
	// its names; it is recorded only if they hit deny_paths.
	Dir        string
	NewHint    string
	AtFlags    uint32
	OverBudget bool
	// Dirfd and NewDirfd are the call's directory descriptors for Hint
	// and NewHint (unix.AT_FDCWD: the working directory). The kernel's path
	// names Dirfd's directory only; a rename's or link's new name is
	// relative to NewDirfd.
	Dirfd    int32
	NewDirfd int32
	// DirCut: Dir is not the directory's whole path, so it does not
	// resolve as written: it starts with "…" (a deeper path, or more
	// mounts stacked at one point than the kernel crosses), or a
	// component is ComponentCut bytes long (it may have been longer).
	DirCut bool
	// Killed: the kernel killed the task (a deny_paths rule).
	Killed bool
	// Outcome of a net.connect.
	Outcome ConnectOutcome
	// Net.
	Addr    netip.AddrPort
	Proto   uint8
	Allowed bool
	// Rule is the index of the egress or deny_paths rule involved.
	Rule uint32
	// Exec: argv of the new image (NUL-separated in the kernel), its
	// first arguments, each cut at ArgvCut bytes.
	Argv []string
}

// ArgvCut is how many bytes of an argument Event.Argv keeps: one of that
// length may have been longer.
const ArgvCut = len(cageArgvHead{}.Slot[0]) - 1

// bootTime converts the kernel's monotonic clock to wall time.
var bootTime = func() time.Time {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return time.Now().Add(-time.Duration(ts.Nano()))
}()

// Decode turns a ring-buffer record into an Event.
func Decode(raw []byte) (Event, error) {
	if len(raw) < int(unsafe.Sizeof(cageEvent{})) {
		return Event{}, fmt.Errorf("short event: %d bytes", len(raw))
	}
	// The record has the C layout of struct event (bpf2go's HostLayout
	// type); ring-buffer samples are 8-byte aligned. No copy, no reflection.
	e := (*cageEvent)(unsafe.Pointer(&raw[0]))
	ev := Event{
		Time:   bootTime.Add(time.Duration(e.Ts)),
		Cgroup: e.Cgid, Pid: e.Pid, Tgid: e.Tgid, Kind: Kind(e.Kind),
		Comm: cstr(e.Comm[:]), Flags: e.Flags, Result: e.Result, Rule: e.Rule, Proto: e.Proto, Killed: e.Killed != 0,
	}
	switch ev.Kind {
	case KindFileOpen, KindFileDenied:
		ev.Hint, ev.Repeats = cstr(e.Hint[:]), e.Repeats
		if e.Result >= 0 {
			ev.Path = kernelPath(e)
		}
	case KindUnlink, KindRmdir, KindMkdir, KindRename, KindLink, KindTruncate, KindChmod, KindChown, KindXattr: // Changes()
		ev.Hint, ev.NewHint = cstr(e.Hint[:]), cstr(e.Hint2[:])
		ev.AtFlags, ev.OverBudget = e.AtFlags, e.OverBudget != 0
		ev.Dirfd, ev.NewDirfd = e.Dirfd, e.Newdirfd
		// The kernel walks the directory of Dirfd whether the name is
		// relative or not (a rename's new name may be relative to it);
		// built only for a relative name (renames come by the thousand).
		relative := !strings.HasPrefix(ev.Hint, "/")
		ev.Path = ev.Hint
		if relative || (ev.NewHint != "" && !strings.HasPrefix(ev.NewHint, "/")) {
			ev.Dir, ev.DirCut = kernelPath(e), pathMayBeCut(e)
		}
		if relative {
			ev.Path = path.Join(ev.Dir, ev.Hint)
		}
	case KindExec:
		// The file that ran, and the name the caller gave for it.
		ev.Path, ev.Hint = kernelPath(e), cstr(e.Hint2[:])
		if ev.Hint == ev.Path {
			ev.Hint = ""
		}
		// The head of argv[0..3], in cage.c's struct argv_head.
		hint := toBytes(e.Hint[:])
		const slots, slot = len(cageArgvHead{}.Slot), len(cageArgvHead{}.Slot[0])
		for i := 0; i < slots; i++ {
			a := cstr8(hint[i*slot : (i+1)*slot])
			if a == "" {
				break
			}
			ev.Argv = append(ev.Argv, a)
		}
	case KindUnixConnect, KindUnixSend:
		// The socket file as its binder named it (a host socket's path
		// is the host's).
		ev.Path, ev.Allowed = kernelPath(e), true
	case KindConnect, KindNetDenied, KindUDPSend:
		ev.Allowed = e.Result == 1
		if ev.Kind == KindConnect {
			ev.Allowed, ev.Outcome, ev.Flags = true, ConnectOutcome(e.Flags), 0
		}
		var addr netip.Addr
		if e.Family == unix.AF_INET {
			addr = netip.AddrFrom4([4]byte(e.Addr[:4]))
		} else {
			addr = netip.AddrFrom16(e.Addr).Unmap()
		}
		ev.Addr = netip.AddrPortFrom(addr, e.Port)
	}
	return ev, nil
}

// pathCut is cage.h's PATH_CUT: set in an event's ncomp when the
// kernel's walk stopped short of the root.
const pathCut = 0x80

// ComponentCut is how many bytes of a path component an event keeps: one
// of that length may have been longer.
const ComponentCut = len(cageEvent{}.Comp[0]) - 1

// pathMayBeCut reports whether e's path (kernelPath) may not be whole: the
// walk stopped short of the root, or a component is ComponentCut long.
func pathMayBeCut(e *cageEvent) bool {
	if e.Ncomp&pathCut != 0 {
		return true
	}
	n := min(int(e.Ncomp), len(e.Comp))
	for i := 0; i < n; i++ {
		// (the bytes after a shorter component's NUL are not cleared)
		if slices.Index(e.Comp[i][:], 0) == ComponentCut {
			return true
		}
	}
	return false
}

// kernelPath joins the components the kernel walked (leaf first); a walk
// that stopped short of the root (a deeper path, or more mounts stacked
// at one point than it crosses) starts with "…".
func kernelPath(e *cageEvent) string {
	n := min(int(e.Ncomp&^pathCut), len(e.Comp))
	parts := make([]string, 0, n)
	for i := n - 1; i >= 0; i-- {
		parts = append(parts, cstr(e.Comp[i][:]))
	}
	p := "/" + strings.Join(parts, "/")
	if e.Ncomp&pathCut != 0 {
		p = "…" + p
	}
	return p
}

func toBytes(s []int8) []byte {
	b := make([]byte, len(s))
	for i, c := range s {
		b[i] = byte(c)
	}
	return b
}

func cstr(s []int8) string { return cstr8(toBytes(s)) }

func cstr8(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// pollInterval bounds how long an event submitted without a wakeup
// (cage.h's wakeup_flags) waits in the ring buffer for the reader.
const pollInterval = 100 * time.Millisecond

// Events reads the ring buffer until Close and calls fn for each event,
// on one goroutine. Decoding errors are reported through bad.
func (c *Cage) Events(fn func(Event), bad func(error)) error {
	rd, err := ringbuf.NewReader(c.objs.Events)
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	c.reader = rd
	c.drain.cond = sync.NewCond(&c.drain.mu)
	c.onClose = append(c.onClose, rd.Close)
	go func() {
		var rec ringbuf.Record
		for {
			// Events submitted without a wakeup are collected by this poll.
			rd.SetDeadline(time.Now().Add(pollInterval))
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					c.drained(true)
					return
				}
				if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
					c.drained(false) // the ring was empty when this was returned
					continue
				}
				bad(err)
				continue
			}
			// A bug of mcpcaged's (a panic) on one record loses that
			// record, told to bad, not every later one.
			contain.Run(func() { c.deliver(rec.RawSample, fn, bad) }, func(p contain.Panic) {
				bad(fmt.Errorf("%w: %s\n%s", ErrEventBug, p.Value, p.Stack))
			})
		}
	}()
	return nil
}

// ErrEventBug is told to Events' bad for a record whose decoding hit a
// bug of mcpcaged's (a panic): that record is lost, the reader goes on.
var ErrEventBug = errors.New("internal error dealing with a kernel event, which is lost (please report this)")

// deliver decodes one record and hands it to fn.
func (c *Cage) deliver(raw []byte, fn func(Event), bad func(error)) {
	ev, err := Decode(raw)
	if err != nil {
		bad(err)
		return
	}
	if (*cageEvent)(unsafe.Pointer(&raw[0])).Counted != 0 {
		c.slots.read(ev.Cgroup) // its share of the ring, given back
	}
	fn(ev)
}

// drainState counts the reader's passes that ended on an empty ring.
type drainState struct {
	mu     sync.Mutex
	cond   *sync.Cond
	passes uint64
	closed bool
}

func (c *Cage) drained(closed bool) {
	c.drain.mu.Lock()
	c.drain.passes++
	c.drain.closed = c.drain.closed || closed
	c.drain.mu.Unlock()
	c.drain.cond.Broadcast()
}

// Sync returns once every event submitted before the call has been handed
// to the Events callback (or after timeout). Call it when a session's
// tasks have exited and before forgetting the session, so its last events
// (submitted without a wakeup) are attributed, not dropped.
func (c *Cage) Sync(timeout time.Duration) error {
	if c.reader == nil {
		return nil
	}
	c.drain.mu.Lock()
	defer c.drain.mu.Unlock()
	// The pass that ends first may have checked the ring before this call;
	// the one after it started after this call.
	want := c.drain.passes + 2
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		// Take the lock so the broadcast cannot fall between a waiter's
		// check and its Wait.
		c.drain.mu.Lock()
		//lint:ignore SA2001 an empty section on purpose: it synchronises with the waiter before Broadcast
		c.drain.mu.Unlock()
		c.drain.cond.Broadcast()
	})
	defer timer.Stop()
	for c.drain.passes < want && !c.drain.closed {
		if time.Now().After(deadline) {
			return fmt.Errorf("kernel events not drained within %s", timeout)
		}
		_ = c.reader.Flush() // end the reader's wait now rather than at its poll deadline
		c.drain.cond.Wait()
	}
	return nil
}
