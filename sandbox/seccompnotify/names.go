package seccompnotify

import "strconv"

// SyscallName names a system call number of this architecture, for the
// calls mcpcage reports.
func SyscallName(nr int) string {
	if n, ok := names[nr]; ok {
		return n
	}
	return "syscall " + strconv.Itoa(nr)
}
