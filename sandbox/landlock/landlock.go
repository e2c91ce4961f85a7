// Package landlock applies Linux Landlock rules to the calling process:
// the file-system paths it may write beneath and the TCP ports it may
// connect to. mcpcage-init uses it inside each sandbox, as defence in depth
// behind the mounts (which are read-only already) and the eBPF egress
// filter; mcpcaged uses [ABI] to report whether the kernel has Landlock.
//
// Rules restrict only writing (and, from ABI 4, TCP connect when ports
// are given): reading stays governed by the sandbox's view of the host.
// From ABI 6 they can also scope the process (Scope): it may then connect
// only to abstract unix sockets created inside its own Landlock domain,
// and signal only processes inside it. A server sharing the host's network
// namespace otherwise reaches every abstract socket of the host (X11's
// @/tmp/.X11-unix/X0, D-Bus, systemd, ...). Rights and scopes the running
// kernel does not know are left out, so the same rules work from ABI 1 to
// the newest; ScopeABI tells whether the scopes were applied.
package landlock

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ABI returns the kernel's Landlock ABI version, or 0 when Landlock is
// unavailable (not built in, or disabled at boot).
func ABI() int {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// Rules are what a sandboxed process may do.
type Rules struct {
	// Writable paths: everything beneath may be written, created and
	// removed. Paths that do not exist are skipped.
	Writable []string `json:"writable"`
	// Devices: device files that may be opened for writing (/dev/null...).
	Devices []string `json:"devices,omitempty"`
	// ConnectPorts restricts TCP connect to these ports (ABI >= 4) when
	// RestrictConnect is set; empty then means no TCP connect at all.
	RestrictConnect bool     `json:"restrict_connect,omitempty"`
	ConnectPorts    []uint16 `json:"connect_ports,omitempty"`
	// Scope confines abstract unix socket connections and signals to the
	// process's own Landlock domain (ABI >= ScopeABI; ignored before).
	Scope bool `json:"scope,omitempty"`
}

// ScopeABI is the first Landlock ABI with scopes
// (LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL).
const ScopeABI = 6

// Scoped reports whether rules with Scope set confine abstract unix
// sockets and signals on a kernel with Landlock ABI abi.
func Scoped(abi int) bool { return abi >= ScopeABI }

// ErrUnsupported is returned when the kernel has no Landlock.
var ErrUnsupported = errors.New("landlock: not supported by this kernel")

const writeRights = unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
	unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
	unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO |
	unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_MAKE_SYM

// handled returns the write-type rights the ABI knows.
func handled(abi int) uint64 {
	h := uint64(writeRights)
	if abi >= 2 {
		h |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		h |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		h |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	return h
}

type rulesetAttr struct {
	fs     uint64
	net    uint64
	scoped uint64 // ABI 6
}

type pathBeneath struct {
	allowed uint64
	fd      int32
}

type netPort struct {
	allowed uint64
	port    uint64
}

// Restrict applies r to the calling thread's process (all threads are
// covered when called before other threads exist, as in mcpcage-init, or
// by the kernel's TSYNC on ABI 8+; Go callers should lock the OS thread
// and exec right after). It returns the ABI used.
func Restrict(r Rules) (int, error) {
	abi := ABI()
	if abi == 0 {
		return 0, ErrUnsupported
	}
	runtime.LockOSThread()
	attr := rulesetAttr{fs: handled(abi)}
	size := unsafe.Sizeof(attr.fs)
	if abi >= 4 && r.RestrictConnect {
		attr.net = unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		size = unsafe.Offsetof(attr.scoped)
	}
	if Scoped(abi) && r.Scope {
		attr.scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
		size = unsafe.Sizeof(attr)
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return abi, fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	defer func() { _ = unix.Close(int(fd)) }()
	add := func(path string, rights uint64) error {
		pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		defer func() { _ = unix.Close(pfd) }()
		var st unix.Stat_t
		if err := unix.Fstat(pfd, &st); err != nil {
			return fmt.Errorf("stat %s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			// Only file rights apply to files.
			rights &= unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
		}
		pb := pathBeneath{allowed: rights, fd: int32(pfd)}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&pb)), 0, 0, 0); errno != 0 {
			return fmt.Errorf("landlock rule for %s: %w", path, errno)
		}
		return nil
	}
	for _, p := range r.Writable {
		if err := add(p, attr.fs); err != nil {
			return abi, err
		}
	}
	devRights := attr.fs & (unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV)
	for _, p := range r.Devices {
		if err := add(p, devRights); err != nil {
			return abi, err
		}
	}
	if attr.net != 0 {
		for _, port := range r.ConnectPorts {
			np := netPort{allowed: unix.LANDLOCK_ACCESS_NET_CONNECT_TCP, port: uint64(port)}
			if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, ruleNetPort, uintptr(unsafe.Pointer(&np)), 0, 0, 0); errno != 0 {
				return abi, fmt.Errorf("landlock rule for port %d: %w", port, errno)
			}
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return abi, fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return abi, fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return abi, nil
}

// ruleNetPort is LANDLOCK_RULE_NET_PORT (ABI 4).
const ruleNetPort = 2
