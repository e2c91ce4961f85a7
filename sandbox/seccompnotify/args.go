package seccompnotify

import "strconv"

// arg is one integer argument worth reporting: its position, its name,
// and whether it is a flag word (shown in hex) or a number.
type arg struct {
	i    int
	name string
	hex  bool
}

// safeArgs lists, per system call, the arguments that are plain integers
// (flags, requests, pids, descriptors, sizes). Pointers are never listed:
// what they point to is the caller's memory, and the listener reads none.
var safeArgs = map[string][]arg{
	"mount":             {{3, "flags", true}},
	"umount2":           {{1, "flags", true}},
	"unshare":           {{0, "flags", true}},
	"setns":             {{0, "fd", false}, {1, "nstype", true}},
	"ptrace":            {{0, "request", false}, {1, "pid", false}},
	"process_vm_readv":  {{0, "pid", false}, {2, "liovcnt", false}, {4, "riovcnt", false}},
	"process_vm_writev": {{0, "pid", false}, {2, "liovcnt", false}, {4, "riovcnt", false}},
	"pidfd_getfd":       {{0, "pidfd", false}, {1, "targetfd", false}},
	"kcmp":              {{0, "pid1", false}, {1, "pid2", false}, {2, "type", false}},
	"bpf":               {{0, "cmd", false}, {2, "size", false}},
	"perf_event_open":   {{1, "pid", false}, {2, "cpu", false}, {4, "flags", true}},
	"userfaultfd":       {{0, "flags", true}},
	"keyctl":            {{0, "operation", false}},
	"add_key":           {{4, "keyring", false}},
	"request_key":       {{3, "keyring", false}},
	"init_module":       {{1, "len", false}},
	"finit_module":      {{0, "fd", false}, {2, "flags", true}},
	"delete_module":     {{1, "flags", true}},
	"kexec_file_load":   {{0, "kernel_fd", false}, {1, "initrd_fd", false}, {4, "flags", true}},
	"kexec_load":        {{1, "nr_segments", false}, {3, "flags", true}},
	"io_uring_setup":    {{0, "entries", false}},
	"io_uring_enter":    {{0, "fd", false}, {1, "to_submit", false}, {3, "flags", true}},
	"io_uring_register": {{0, "fd", false}, {1, "opcode", false}},
	"open_by_handle_at": {{0, "mount_fd", false}, {2, "flags", true}},
	"open_tree":         {{0, "dfd", false}, {2, "flags", true}},
	"move_mount":        {{0, "from_dfd", false}, {2, "to_dfd", false}, {4, "flags", true}},
	"fsopen":            {{1, "flags", true}},
	"fsconfig":          {{0, "fd", false}, {1, "cmd", false}},
	"fsmount":           {{0, "fd", false}, {1, "flags", true}, {2, "attr_flags", true}},
	"fspick":            {{0, "dfd", false}, {2, "flags", true}},
	"mount_setattr":     {{0, "dfd", false}, {2, "flags", true}},
	"reboot":            {{2, "cmd", true}},
	"swapoff":           {},
	"swapon":            {{1, "flags", true}},
	"clock_settime":     {{0, "clockid", false}},
	"syslog":            {{0, "type", false}},
	"iopl":              {{0, "level", false}},
	"ioperm":            {{0, "from", true}, {1, "num", false}, {2, "turn_on", false}},
	"quotactl":          {{0, "cmd", true}, {3, "id", false}},
}

// SafeArgs summarizes e's arguments for a record: the integer arguments
// of a known system call by name, flags in hex, numbers as the signed
// 32-bit values the kernel reads them as (so AT_FDCWD is -100). Unknown
// calls get none.
func (e Event) SafeArgs() map[string]any {
	spec := safeArgs[e.Syscall]
	if len(spec) == 0 {
		return nil
	}
	out := make(map[string]any, len(spec))
	for _, a := range spec {
		v := e.Args[a.i]
		if a.hex {
			out[a.name] = "0x" + strconv.FormatUint(v, 16)
		} else {
			out[a.name] = int64(int32(v))
		}
	}
	return out
}
