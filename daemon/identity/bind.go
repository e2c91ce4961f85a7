package identity

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Stamps is the kernel's record of execs and forks (the eBPF stamper):
// for a process, found by pidfd, its last exec, its fork and the process
// that forked it, on the CLOCK_BOOTTIME clock in nanoseconds.
type Stamps interface {
	// Lookup returns the stamps of the process behind pidfd; ok is false
	// when it has not exec'd since Since (Forker may be set all the same).
	Lookup(pidfd int) (st Stamp, ok bool, err error)
	// Since is when the record began.
	Since() uint64
	// Lost counts the execs and forks the kernel failed to record.
	Lost() Lost
}

// Lost counts the stamps the kernel failed to write.
type Lost struct{ Execs, Forks uint64 }

// Stamp is one process's record.
type Stamp struct {
	Exec    uint64 // last exec
	Start   uint64 // fork
	CwdDev  uint64 // working directory at exec (st_dev, st_ino)
	CwdIno  uint64
	ArgvLen int    // bytes of argv at exec
	Argv    []byte // the head of argv at exec, NUL-separated
	// Env holds the variables of EnvNames at exec ("NAME=VALUE",
	// NUL-separated), all of them unless EnvUnchecked says why not, but
	// those over 510 bytes, which the kernel cut: EnvCut names them.
	Env          []byte
	EnvCut       []string
	EnvUnchecked string
	// Lost is Lost.Execs when this exec stamp was written: a larger
	// count now means a later exec of the process may have gone
	// unstamped, leaving this stamp in place.
	Lost uint64
	// Forker is the process that called fork/clone to create this one
	// (pid in the initial pid namespace) and its start time; 0 when the
	// kernel has no fork record.
	Forker      uint32
	ForkerStart uint64
	// Execs is how many times the process exec'd since its fork (with
	// Forker set).
	Execs int
	// FirstDev and FirstIno name the file its first exec ran.
	FirstDev, FirstIno uint64
	// Pending: an exec is under way (past its point of no return, its
	// image not loaded yet): /proc may show the new program while the
	// rest of the stamp is the exec before's.
	Pending bool
}

// ErrBorrowed is returned when the shim's parent exec'd another program
// after it forked the shim: the program it runs now did not start the
// shim, and must not lend the session its identity.
var ErrBorrowed = errors.New("the process that started mcpcage run exec'd another program after starting it")

// ErrNotParent is returned when the shim's parent did not fork it: another
// process did, and made the parent its parent (clone(CLONE_PARENT)), or
// the shim's forker died and the parent, a subreaper, inherited it.
var ErrNotParent = errors.New("mcpcage run was not started by its parent process")

// Refused reports whether err says the session must not run as the
// shim's parent (ErrBorrowed, ErrNotParent, ErrDisguised, ErrNotShim,
// ErrNotDirect), as opposed to
// a failure to look.
func Refused(err error) bool {
	return errors.Is(err, ErrBorrowed) || errors.Is(err, ErrNotParent) || errors.Is(err, ErrDisguised) ||
		errors.Is(err, ErrNotShim) || errors.Is(err, ErrNotDirect)
}

// Binding says how the agent was bound to the image that forked the shim.
const (
	BoundKernel = "kernel" // the kernel's exec record shows the image predates the shim
)

// initialPIDNS is the inode of the initial pid namespace
// (PROC_PID_INIT_INO), the one the kernel's record names pids in.
const initialPIDNS = 0xEFFFFFFC

// inNestedPIDNS reports whether this process runs in a pid namespace
// other than the initial one.
func inNestedPIDNS() bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return false
	}
	return st.Ino != initialPIDNS
}

// ticks is the length of a clock tick of /proc/PID/stat (USER_HZ 100 on
// every Linux architecture mcpcage builds for).
const tick = uint64(10 * time.Millisecond)

// binding is what bind weighs.
type binding struct {
	parent, shim     Stamp
	parentOK, shimOK bool // the processes have exec stamps
	parentPID        int  // the shim's parent, as /proc names it
	// nestedPIDNS: mcpcaged runs in a pid namespace other than the
	// initial one (a container, systemd-nspawn), so /proc's pids are not
	// the record's: the forker is then matched by its start time alone.
	nestedPIDNS bool
	parentTicks uint64 // and its start time (/proc/PID/stat, clock ticks)
	since       uint64 // when the record began
	lost        Lost   // stamps the kernel failed to write, now
}

// bind checks that the shim's parent forked it, and that the parent's
// current image was exec'd before it did. It returns how the check went:
// BoundKernel, or "unverified: why" when the record cannot tell (both
// processes are older than the record, or a stamp went missing).
func bind(b binding) (string, error) {
	parent, shim := b.parent, b.shim
	// Who forked the shim. A shim with an exec stamp from after the
	// record began was forked after the fork hook was attached.
	forkedSince := b.shimOK && shim.Start >= b.since
	switch {
	case shim.Forker == 0 && forkedSince:
		return "", fmt.Errorf("%w: the kernel has no record of the process that forked it (%d forks went unrecorded)", ErrNotParent, b.lost.Forks)
	case shim.Forker != 0 && !b.nestedPIDNS && int(shim.Forker) != b.parentPID:
		return "", fmt.Errorf("%w: process %d forked it, not its parent, process %d", ErrNotParent, shim.Forker, b.parentPID)
	case shim.Forker != 0 && b.parentOK && shim.ForkerStart != parent.Start,
		shim.Forker != 0 && !b.parentOK && shim.ForkerStart/tick != b.parentTicks:
		if b.nestedPIDNS {
			return "", fmt.Errorf("%w: the process that forked it started at another time than its parent, process %d", ErrNotParent, b.parentPID)
		}
		return "", fmt.Errorf("%w: an earlier process with pid %d forked it", ErrNotParent, shim.Forker)
	}
	switch {
	case b.parentOK && b.shimOK && parent.Exec >= shim.Start:
		return "", fmt.Errorf("%w (%s later)", ErrBorrowed, time.Duration(parent.Exec-shim.Start).Round(time.Microsecond))
	case b.parentOK && !b.shimOK:
		// The shim exec'd (so was forked) before the record began; the
		// parent exec'd after.
		return "", ErrBorrowed
	case b.parentOK && b.lost.Execs > parent.Lost:
		// An exec left unstamped keeps the task's older stamp: the
		// parent may have exec'd since its stamp was written.
		return fmt.Sprintf("unverified: the kernel failed to record %d execs since the agent's last recorded exec", b.lost.Execs-parent.Lost), nil
	case b.parentOK:
		return BoundKernel, nil
	case !forkedSince:
		return "unverified: the agent and mcpcage run started before mcpcaged began recording execs (restart the MCP client)", nil
	case b.lost.Execs > 0:
		return fmt.Sprintf("unverified: the kernel failed to record %d execs since mcpcaged started", b.lost.Execs), nil
	}
	return BoundKernel, nil
}
