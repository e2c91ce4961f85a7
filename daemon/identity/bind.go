package identity

import (
	"errors"
	"fmt"
	"time"
)

// Stamps is the kernel's record of execs (the eBPF exec stamper): for a
// process, found by pidfd, its last exec and its fork, on the
// CLOCK_BOOTTIME clock in nanoseconds.
type Stamps interface {
	// Lookup returns the stamp of the process behind pidfd; ok is false
	// when it has not exec'd since Since.
	Lookup(pidfd int) (st Stamp, ok bool, err error)
	// Since is when the record began.
	Since() uint64
	// Unstamped counts execs the kernel failed to record.
	Unstamped() uint64
}

// Stamp is one process's exec record.
type Stamp struct {
	Exec    uint64 // last exec
	Start   uint64 // fork
	CwdDev  uint64 // working directory at exec (st_dev, st_ino)
	CwdIno  uint64
	ArgvLen int    // bytes of argv at exec
	Argv    []byte // the head of argv at exec, NUL-separated
}

// ErrBorrowed is returned when the shim's parent exec'd another program
// after it forked the shim: the program it runs now did not start the
// shim, and must not lend the session its identity.
var ErrBorrowed = errors.New("the process that started mcpcage run exec'd another program after starting it")

// Binding says how the agent was bound to the image that forked the shim.
const (
	BoundKernel = "kernel" // the kernel's exec record shows the image predates the shim
)

// bind checks that the parent's current image was exec'd before the
// shim was forked. It returns how the check went: BoundKernel, or
// "unverified: why" when the record cannot tell (both processes are older
// than the record, or an exec went unstamped).
func bind(parent Stamp, parentOK bool, shim Stamp, shimOK bool, since, unstamped uint64) (string, error) {
	switch {
	case parentOK && shimOK && parent.Exec >= shim.Start:
		return "", fmt.Errorf("%w (%s later)", ErrBorrowed, time.Duration(parent.Exec-shim.Start).Round(time.Microsecond))
	case parentOK && !shimOK:
		// The shim exec'd (so was forked) before the record began; the
		// parent exec'd after.
		return "", ErrBorrowed
	case parentOK:
		return BoundKernel, nil
	case !shimOK || shim.Start < since:
		return "unverified: the agent and mcpcage run started before mcpcaged began recording execs (restart the MCP client)", nil
	case unstamped > 0:
		return fmt.Sprintf("unverified: the kernel failed to record %d execs since mcpcaged started", unstamped), nil
	}
	return BoundKernel, nil
}
