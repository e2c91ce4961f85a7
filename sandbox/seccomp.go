package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The default seccomp profile is an allow-list in the style of the
// Docker/containerd default profiles: every system call not listed
// returns EPERM. On top of that:
//
//   - io_uring_setup/enter/register are not allowed: io_uring performs
//     file and network operations without passing the system-call
//     tracepoints, which would blind mcpcage's eBPF layer;
//   - no namespace creation: unshare and setns are denied, clone may not
//     carry CLONE_NEW* flags, and clone3 returns ENOSYS so C libraries fall
//     back to clone (clone3's flags live in memory a filter cannot read);
//   - no second process on one descriptor table: clone with CLONE_FILES
//     but without CLONE_THREAD is refused (EPERM). deny_paths kills the
//     thread group that opens a denied file; a process sharing its file
//     descriptors could read the file first. Threads and fork/vfork/
//     posix_spawn are unaffected;
//   - no hard links: link and linkat are refused (EPERM). A hard link
//     gives a file a second name, possibly outside a denied directory,
//     and the kernel's open check sees only the name used to open it.
//     Tools that fall back to copying (cp -l, git's object store, npm's
//     and pip's caches) copy instead; the rare program that insists on
//     link(2) fails;
//   - no truncate by name: truncate(2) is refused (EPERM); ftruncate on
//     a descriptor is allowed (its open was checked). deny_paths can only
//     check a name after the call, and a truncate through a symlink
//     removed at once, a /proc magic link, a name longer than the
//     kernel's event carries, or a working directory flipped during the
//     call would empty a denied file unseen (fanotify, which checks
//     deletions and attribute changes where the kernel acted, reports a
//     truncate only among every write). Go's os.Truncate and Python's
//     os.truncate(path) fail; opening the file and truncating it works;
//   - no name swaps: renameat2 with RENAME_EXCHANGE is refused (EPERM).
//     An exchange moves the file at its new name to its old one, so a
//     denied file swapped out through a symlink would leave its denied
//     directory by a name whose directory neither the kernel's check
//     (the old name's) nor the daemon's resolution looks at. Renames
//     without the flag are unaffected; `mv --exchange` and the rare
//     program that swaps atomically fail;
//   - sockets of the kinds egress can see only: socket(2) is allowed for
//     AF_UNIX, for AF_NETLINK with NETLINK_ROUTE (addresses and routes:
//     getaddrinfo, getifaddrs), and for AF_INET and AF_INET6 as
//     SOCK_STREAM with TCP or MPTCP and SOCK_DGRAM with UDP (or the
//     type's default protocol); socketpair(2) for AF_UNIX only. ICMP
//     datagram ("ping") sockets pass no cgroup sendmsg hook, so a
//     host-network server could reach any address with them; AF_VSOCK
//     reaches the hypervisor's services from a VM, whatever the network
//     namespace; SCTP (SOCK_SEQPACKET's default), DCCP, AF_PACKET, TIPC
//     and the rest are outside the egress hooks; other netlink families
//     show the host's sockets (sock_diag), devices (uevents) and more.
//     Each is refused (EPERM), and a refused family's module is not
//     loaded on the sandbox's behalf. Cost: `ping` and the rare program
//     that needs another kind of socket fail;
//   - no 32-bit system calls: the filter names the native architecture
//     only (x86_64, aarch64), so a system call made through the 32-bit
//     entry (int $0x80 or sysenter on x86_64, AArch32 code on arm64)
//     fails the filter's architecture check and is answered by its
//     bad-architecture action, which kills the caller. The kernel's
//     syscall tracepoints skip 32-bit calls, so without this an open
//     through that entry would escape deny_paths' kernel check and every
//     file record. Cost: 32-bit programs do not run in the sandbox;
//   - no set-user-ID or set-group-ID files: chmod, fchmod, fchmodat,
//     fchmodat2, mknod and mknodat with S_ISUID or S_ISGID in their mode,
//     and creat, open and openat creating a file (O_CREAT, O_TMPFILE) with
//     either bit, are refused (EPERM, reported). nosuid on the sandbox's
//     mounts holds only inside it: a server could leave a program in a
//     writable mount that runs, for whoever starts it on the host, with
//     the rights of the server's user (root's, for a server run as
//     root). openat2 returns ENOSYS (its mode lies in memory a filter
//     cannot read; C libraries and runtimes fall back to openat);
//   - the calls in [DeniedAndReported] are sent to mcpcaged by seccomp's
//     user notification when a listener is configured, so the daemon logs
//     each attempt against its session before answering EPERM.
var allowedSyscalls = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "cachestat",
	"capget", "capset", "chdir", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "dup",
	"dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
	"exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
	"fanotify_mark", "fchdir", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
	"fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
	"geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
	"getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
	"getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
	"getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
	"gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
	"inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
	"io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
	"ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lchown32", "lgetxattr", "listen", "listxattr", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
	"map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat",
	"mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
	"mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
	"mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
	"munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
	"pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
	"pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
	"preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
	"pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
	"recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
	"rename", "renameat", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
	"rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
	"sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
	"sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
	"sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
	"seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
	"sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
	"setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
	"setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
	"setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
	"setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat",
	"shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
	"sigreturn", "socketcall", "splice", "stat", "stat64", "statfs",
	"statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
	"timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill",
	"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
	"utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
	"writev",
}

// DeniedAndReported are denied calls that signal an escape attempt rather
// than an ordinary missing feature; mcpcaged logs each one.
var DeniedAndReported = []string{
	"mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
	"fsconfig", "fsmount", "fspick", "mount_setattr",
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
	"bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key",
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"unshare", "setns",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"open_by_handle_at", "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
	"clock_settime64", "syslog", "iopl", "ioperm", "quotactl", "lookup_dcookie", "vhangup",
}

// namespaceFlags are the CLONE_NEW* flags clone may not carry.
const namespaceFlags = 0x7E020000

// Other clone flags the profile looks at.
const (
	cloneFiles  = 0x00000400 // CLONE_FILES
	cloneThread = 0x00010000 // CLONE_THREAD
)

// renameExchange is renameat2's RENAME_EXCHANGE flag.
const renameExchange = 0x2

// The set-ID bits of a file mode (S_ISUID, S_ISGID), and the open flags
// with which open uses its mode (O_CREAT, __O_TMPFILE): Linux's values on
// every architecture.
const (
	setIDBits   = 0o6000
	createFlags = 0o100 | 0o20000000
)

// modeCall is a system call that sets a file's mode: mode is the index of
// its mode argument, flags that of its open flags (-1: none, the mode
// always applies).
type modeCall struct {
	name        string
	mode, flags int
}

var modeCalls = []modeCall{
	{"chmod", 1, -1}, {"fchmod", 1, -1}, {"fchmodat", 2, -1}, {"fchmodat2", 2, -1},
	{"creat", 1, -1}, {"mknod", 1, -1}, {"mknodat", 2, -1},
	{"open", 2, 1}, {"openat", 3, 2},
}

// setIDRules allow the calls of modeCalls without S_ISUID or S_ISGID in
// the mode they set, and report (action reported) those with either.
func setIDRules(reported specs.LinuxSeccompAction, errno *uint) []specs.LinuxSyscall {
	masked := func(i int, mask, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: uint(i), Value: mask, ValueTwo: v, Op: specs.OpMaskedEqual}
	}
	var rules []specs.LinuxSyscall
	for _, c := range modeCalls {
		names := []string{c.name}
		rules = append(rules, specs.LinuxSyscall{Names: names, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{masked(c.mode, setIDBits, 0)}})
		setID := []uint64{0o4000, 0o2000, 0o6000}
		if c.flags < 0 {
			for _, v := range setID {
				rules = append(rules, specs.LinuxSyscall{Names: names, Action: reported, ErrnoRet: errno, Args: []specs.LinuxSeccompArg{masked(c.mode, setIDBits, v)}})
			}
			continue
		}
		// Without a creating flag the mode is not used (and may be
		// whatever the caller's register held).
		rules = append(rules, specs.LinuxSyscall{Names: names, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{masked(c.flags, createFlags, 0)}})
		for _, f := range []uint64{0o100, 0o20000000, createFlags} {
			for _, v := range setID {
				rules = append(rules, specs.LinuxSyscall{Names: names, Action: reported, ErrnoRet: errno,
					Args: []specs.LinuxSeccompArg{masked(c.flags, createFlags, f), masked(c.mode, setIDBits, v)}})
			}
		}
	}
	return rules
}

// Socket kinds the profile allows (see the package comment); the values
// are Linux's on every architecture.
const (
	afUnix    = 1
	afInet    = 2
	afInet6   = 10
	afNetlink = 16

	sockStream = 1
	sockDgram  = 2
	// sockTypeMask keeps the type of socket(2)'s type argument, without
	// SOCK_NONBLOCK and SOCK_CLOEXEC (and whatever lies above).
	sockTypeMask = 0xf

	ipprotoDefault = 0
	ipprotoTCP     = 6
	ipprotoUDP     = 17
	ipprotoMPTCP   = 262
	netlinkRoute   = 0
)

// socketRules allow socket(2) and socketpair(2) for the kinds of socket
// egress sees. Arguments are int: they are compared in their low 32 bits
// (masked), so a caller's garbage above them cannot turn a refused value
// into an allowed one.
func socketRules() []specs.LinuxSyscall {
	masked := func(i uint, mask, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: i, Value: mask, ValueTwo: v, Op: specs.OpMaskedEqual}
	}
	low := func(i uint, v uint64) specs.LinuxSeccompArg { return masked(i, 0xffffffff, v) }
	rule := func(name string, args ...specs.LinuxSeccompArg) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow, Args: args}
	}
	rules := []specs.LinuxSyscall{
		rule("socket", low(0, afUnix)),
		rule("socket", low(0, afNetlink), low(2, netlinkRoute)),
		rule("socketpair", low(0, afUnix)),
	}
	kinds := []struct {
		typ    uint64
		protos []uint64
	}{
		{sockStream, []uint64{ipprotoDefault, ipprotoTCP, ipprotoMPTCP}},
		{sockDgram, []uint64{ipprotoDefault, ipprotoUDP}},
	}
	for _, family := range []uint64{afInet, afInet6} {
		for _, k := range kinds {
			for _, proto := range k.protos {
				rules = append(rules, rule("socket", low(0, family), masked(1, sockTypeMask, k.typ), low(2, proto)))
			}
		}
	}
	return rules
}

// SeccompOptions select the profile.
type SeccompOptions struct {
	// Mode is "default", "unconfined" or a path to an OCI profile (JSON).
	Mode string
	// ListenerPath, when set, receives the user notifications of
	// DeniedAndReported calls (SCMP_ACT_NOTIFY); empty: plain EPERM.
	ListenerPath string
	// Metadata is passed to the listener with each container's fd.
	Metadata string
}

// Seccomp returns the spec's seccomp section, or nil for "unconfined".
func Seccomp(o SeccompOptions) (*specs.LinuxSeccomp, error) {
	switch o.Mode {
	case "unconfined":
		return nil, nil
	case "", "default":
		return defaultProfile(o), nil
	}
	b, err := os.ReadFile(o.Mode)
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile: %w", err)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("seccomp profile %s is not an OCI seccomp section (JSON): %w", o.Mode, err)
	}
	if p.DefaultAction == "" {
		return nil, fmt.Errorf("seccomp profile %s has no defaultAction", o.Mode)
	}
	// Whatever architectures the profile lists (Docker's add the 32-bit
	// ones), 32-bit system calls stay refused: see allowedSyscalls.
	p.Architectures = architectures()
	return &p, nil
}

func defaultProfile(o SeccompOptions) *specs.LinuxSeccomp {
	eperm := uint(1)
	enosys := uint(38)
	reported := specs.ActErrno
	if o.ListenerPath != "" {
		reported = specs.ActNotify
	}
	p := &specs.LinuxSeccomp{
		DefaultAction:    specs.ActErrno,
		DefaultErrnoRet:  &eperm,
		Architectures:    architectures(),
		ListenerPath:     o.ListenerPath,
		ListenerMetadata: o.Metadata,
		Syscalls: []specs.LinuxSyscall{
			{Names: append([]string(nil), allowedSyscalls...), Action: specs.ActAllow},
			// clone: no CLONE_NEW*, and CLONE_FILES only with CLONE_THREAD.
			// (Rules for one call are alternatives; one argument per rule.)
			{Names: []string{"clone"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: namespaceFlags | cloneFiles, ValueTwo: 0, Op: specs.OpMaskedEqual}}},
			{Names: []string{"clone"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: namespaceFlags | cloneFiles | cloneThread, ValueTwo: cloneFiles | cloneThread, Op: specs.OpMaskedEqual}}},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
			// openat2: its mode lies in memory (see setIDRules).
			{Names: []string{"openat2"}, Action: specs.ActErrno, ErrnoRet: &enosys},
			// renameat2: not RENAME_EXCHANGE (see the package comment).
			{Names: []string{"renameat2"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 4, Value: renameExchange, ValueTwo: 0, Op: specs.OpMaskedEqual}}},
			{Names: []string{"personality"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0x0, Op: specs.OpEqualTo}}},
			{Names: []string{"personality"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0x8, Op: specs.OpEqualTo}}},
			{Names: []string{"personality"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo}}},
			{Names: append([]string(nil), DeniedAndReported...), Action: reported, ErrnoRet: errnoFor(reported, &eperm)},
		},
	}
	p.Syscalls = append(p.Syscalls, socketRules()...)
	p.Syscalls = append(p.Syscalls, setIDRules(reported, errnoFor(reported, &eperm))...)
	return p
}

func errnoFor(a specs.LinuxSeccompAction, eperm *uint) *uint {
	if a == specs.ActErrno {
		return eperm
	}
	return nil
}

// architectures is the one architecture a sandbox's system calls may
// use: the native one. The 32-bit entries (i386 and x32 on x86_64, arm
// on arm64) are left out, so their calls fail the filter (see
// allowedSyscalls).
func architectures() []specs.Arch {
	switch runtime.GOARCH {
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64}
	default:
		return []specs.Arch{specs.ArchX86_64}
	}
}
