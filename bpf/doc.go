// Package bpf loads mcpcage's eBPF programs (cage.c and lsm.c, sharing
// cage.h, compiled by bpf2go; the objects are committed so `go build`
// needs no clang) and manages their maps: the registered sessions, each
// session's egress allow-list and denied path components.
//
// Enforcement: cgroup/connect4, connect6, sendmsg4 and sendmsg6 programs
// attached once to mcpcage's parent cgroup decide every TCP connect and
// unconnected UDP send of a session in the kernel (denied: EPERM). A task
// under the parent whose session is not registered is denied (fail closed).
// A session without host networking is left to its own network namespace,
// but denied every connect, send and bind of a socket of the host's
// (passed in over a unix socket): the hooks compare the socket's
// namespace cookie with the host's, which Load records.
// Binds (bind.c, EnableBind): cgroup/bind4 and bind6 refuse (EPERM) a bind
// of a session's socket to an address and port not in its listen
// allow-list (port 0 passes: outgoing UDP clients bind so); a
// cgroup_skb/ingress program drops packets to a session's listening socket
// whose address is not allowed, which covers listeners that never called
// bind (listen on an unbound socket picks an ephemeral port).
// Files: where the kernel runs BPF LSM programs (EnableLSM), lsm/file_open
// makes an open of a path with a denied component fail with EACCES.
// Everywhere, a successful open of such a path, or a rename, link, unlink
// or mkdir in a denied directory, kills the task at syscall exit
// (bpf_send_signal, SIGKILL) before it returns to user space. So does a
// connect to a pathname unix socket bound in a denied directory, or a
// datagram sent to one: a tp_btf program on sk_data_ready, which the
// kernel calls in the caller's context on the listener it connected to
// (or the datagram's receiver), walks the file that socket was bound at
// (unix_sock.path) before the call returns (Cage.UnixPeers). The deny
// check never depends on an event being recorded. It walks the kernel's
// dentries of the path but reads a component's name (and looks it up)
// only when some denied name of the session has its length (lengths from
// 31 bytes up share one slot); the names of an event that will be
// recorded are read in any case.
//
// Observation: file opens (openat, openat2, open, creat: flags, result and
// the kernel's own path of the new fd; one program at the calls' exit,
// which reads their arguments from the task's saved user registers, so
// an open pays for one tracepoint program, not an entry and an exit), directory operations (unlink,
// rmdir, mkdir, rename, link: the kernel's base directory), execs
// (sched_process_exec: the kernel's file name; the head of argv read at
// execve entry) and connections (with connect(2)'s result, or the TCP
// handshake's for a non-blocking connect; connects to pathname unix
// sockets, with the socket file) arrive through one ring buffer.
// The observation programs are attached only while a session is
// registered, and let every task outside mcpcage's parent cgroup go with a
// constant-time check (the task's cgroup ancestor at the parent's level
// against the parent's id, set at load). Strings read from user memory are hints for the
// audit only. Failed reservations and events beyond a session's rate are
// counted per CPU, never dropped silently.
//
// Agent identity (stamp.c, LoadExecStamps): a raw tracepoint on
// sched_process_exec, attached system-wide for as long as the daemon runs
// and pinned beyond, records in task storage each task's last exec time,
// fork time, working directory and argv head; a tp_btf program on
// sched_process_fork records on each child the process that really forked
// it (its tgid and start time, from current, not real_parent, so
// CLONE_PARENT and re-parenting show). The daemon reads both with a pidfd. It is independent of the cage: it loads where the cgroup hooks
// do not.
//
// What the C programs and this package share (struct event and the map
// keys and values; the enums of event kinds, connect outcomes, listen
// denials, session flags, lost counters and stamp keys) is defined in C
// only: bpf2go generates the Go types and constants (its -type flag, see
// gen.go), and this package gives them their Go names.
package bpf
