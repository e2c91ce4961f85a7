// Package bpf loads mcpcage's eBPF programs (cage.c, compiled by bpf2go;
// the objects are committed so `go build` needs no clang) and manages
// their maps: the registered sessions, each session's egress allow-list
// and denied path components.
//
// Enforcement: cgroup/connect4, connect6, sendmsg4 and sendmsg6 programs
// attached once to mcpcage's parent cgroup decide every TCP connect and
// unconnected UDP send of a session in the kernel (denied: EPERM). A task
// under the parent whose session is not registered is denied (fail closed).
// Files: a successful open whose kernel path has a denied component kills
// the process at syscall exit (bpf_send_signal, SIGKILL) before it returns
// to user space.
//
// Observation: file opens (openat, openat2, open, creat: flags, result and
// the kernel's own path of the new fd), execs (sched_process_exec: the
// kernel's file name; the head of argv read at execve entry) and
// connections arrive
// through one ring buffer. Strings read from user memory at syscall entry
// are hints for the audit only. Failed reservations and events beyond a
// session's rate are counted per CPU, never dropped silently.
package bpf
