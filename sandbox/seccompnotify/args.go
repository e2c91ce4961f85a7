package seccompnotify

import "strconv"

// arg is one integer argument worth reporting: its position, its name,
// and how it is shown.
type arg struct {
	i      int
	name   string
	format argFormat
}

// argFormat is how an argument is shown.
type argFormat uint8

const (
	argSigned argFormat = iota // a number, as the signed 32-bit value the kernel reads
	argFlags                   // a flag word, in hex
	argMode                    // a file mode, in octal
)

// safeArgs lists, per system call, the arguments that are plain integers
// (flags, requests, pids, descriptors, sizes). Pointers are never listed:
// what they point to is the caller's memory, and the listener reads none.
var safeArgs = map[string][]arg{
	"mount":             {{3, "flags", argFlags}},
	"umount2":           {{1, "flags", argFlags}},
	"unshare":           {{0, "flags", argFlags}},
	"setns":             {{0, "fd", argSigned}, {1, "nstype", argFlags}},
	"ptrace":            {{0, "request", argSigned}, {1, "pid", argSigned}},
	"process_vm_readv":  {{0, "pid", argSigned}, {2, "liovcnt", argSigned}, {4, "riovcnt", argSigned}},
	"process_vm_writev": {{0, "pid", argSigned}, {2, "liovcnt", argSigned}, {4, "riovcnt", argSigned}},
	"pidfd_getfd":       {{0, "pidfd", argSigned}, {1, "targetfd", argSigned}},
	"kcmp":              {{0, "pid1", argSigned}, {1, "pid2", argSigned}, {2, "type", argSigned}},
	"bpf":               {{0, "cmd", argSigned}, {2, "size", argSigned}},
	"perf_event_open":   {{1, "pid", argSigned}, {2, "cpu", argSigned}, {4, "flags", argFlags}},
	"userfaultfd":       {{0, "flags", argFlags}},
	"keyctl":            {{0, "operation", argSigned}},
	"add_key":           {{4, "keyring", argSigned}},
	"request_key":       {{3, "keyring", argSigned}},
	"init_module":       {{1, "len", argSigned}},
	"finit_module":      {{0, "fd", argSigned}, {2, "flags", argFlags}},
	"delete_module":     {{1, "flags", argFlags}},
	"kexec_file_load":   {{0, "kernel_fd", argSigned}, {1, "initrd_fd", argSigned}, {4, "flags", argFlags}},
	"kexec_load":        {{1, "nr_segments", argSigned}, {3, "flags", argFlags}},
	"io_uring_setup":    {{0, "entries", argSigned}},
	"io_uring_enter":    {{0, "fd", argSigned}, {1, "to_submit", argSigned}, {3, "flags", argFlags}},
	"io_uring_register": {{0, "fd", argSigned}, {1, "opcode", argSigned}},
	"open_by_handle_at": {{0, "mount_fd", argSigned}, {2, "flags", argFlags}},
	"open_tree":         {{0, "dfd", argSigned}, {2, "flags", argFlags}},
	"move_mount":        {{0, "from_dfd", argSigned}, {2, "to_dfd", argSigned}, {4, "flags", argFlags}},
	"fsopen":            {{1, "flags", argFlags}},
	"fsconfig":          {{0, "fd", argSigned}, {1, "cmd", argSigned}},
	"fsmount":           {{0, "fd", argSigned}, {1, "flags", argFlags}, {2, "attr_flags", argFlags}},
	"fspick":            {{0, "dfd", argSigned}, {2, "flags", argFlags}},
	"mount_setattr":     {{0, "dfd", argSigned}, {2, "flags", argFlags}},
	"reboot":            {{2, "cmd", argFlags}},
	"swapoff":           {},
	"swapon":            {{1, "flags", argFlags}},
	"clock_settime":     {{0, "clockid", argSigned}},
	"syslog":            {{0, "type", argSigned}},
	"iopl":              {{0, "level", argSigned}},
	"ioperm":            {{0, "from", argFlags}, {1, "num", argSigned}, {2, "turn_on", argSigned}},
	"quotactl":          {{0, "cmd", argFlags}, {3, "id", argSigned}},
	// A file mode with a set-ID bit (see sandbox's setIDRules).
	"chmod":     {{1, "mode", argMode}},
	"fchmod":    {{0, "fd", argSigned}, {1, "mode", argMode}},
	"fchmodat":  {{0, "dfd", argSigned}, {2, "mode", argMode}},
	"fchmodat2": {{0, "dfd", argSigned}, {2, "mode", argMode}, {3, "flags", argFlags}},
	"creat":     {{1, "mode", argMode}},
	"mknod":     {{1, "mode", argMode}},
	"mknodat":   {{0, "dfd", argSigned}, {2, "mode", argMode}},
	"open":      {{1, "flags", argFlags}, {2, "mode", argMode}},
	"openat":    {{0, "dfd", argSigned}, {2, "flags", argFlags}, {3, "mode", argMode}},
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
		switch a.format {
		case argMode:
			out[a.name] = "0" + strconv.FormatUint(v&0o7777777, 8)
		case argFlags:
			out[a.name] = "0x" + strconv.FormatUint(v, 16)
		default:
			out[a.name] = int64(int32(v))
		}
	}
	return out
}
