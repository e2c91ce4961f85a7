//go:build ignore

// Exec and fork stamps: for every task on the host, when it last exec'd,
// when it was forked, its working directory and the head of its argv at
// that exec (exec_stamps), and which process forked it (fork_stamps). The
// daemon reads a task's stamps with a pidfd (task storage: no eviction,
// freed with the task) to bind an agent to the image that actually forked
// the shim (see stamp.go). Attached system-wide and always: exec and fork
// are rare next to what they cost, and the programs do a few loads and
// one copy.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define STAMP_ARGV 512

struct exec_stamp {
	__u64 exec_ns;   // bpf_ktime_get_boot_ns() at the task's last exec
	__u64 start_ns;  // task->start_boottime: when the task was forked
	__u64 cwd_ino;   // working directory at exec: inode number
	__u64 lost;      // stamp_meta[0] (execs left unstamped) when this stamp was written
	__u32 cwd_dev;   // and the kernel dev_t of its file system
	__u32 argv_len;  // bytes of argv at exec (mm->arg_end - mm->arg_start)
	char argv[STAMP_ARGV]; // the first bytes of argv, NUL-separated
};

// Who forked a task: the process (thread group) of the task that called
// fork/clone, which is not always the child's parent (CLONE_PARENT, a
// re-parented orphan). Written once, at fork, and never by exec.
struct fork_stamp {
	__u64 forker_start; // the forking process's start_boottime (its group leader's)
	__u32 forker_tgid;  // the forking process's pid, in the initial pid namespace
	__u32 pad;
};

// Keep the structs in BTF for bpf2go's -type.
const struct exec_stamp *unused_exec_stamp __attribute__((unused));
const struct fork_stamp *unused_fork_stamp __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct exec_stamp);
} exec_stamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fork_stamp);
} fork_stamps SEC(".maps");

// stamp_meta's keys; bpf2go generates the Go constants (-type, see gen.go).
enum stamp_meta_key {
	META_EXEC_LOST = 0, // execs left unstamped (storage busy or allocation failed)
	META_SINCE = 1,     // when stamping began (boot ns, set by the loader)
	META_FORK_LOST = 2, // forks left unstamped
	META_KEYS,
};

// Keeps the enum in BTF for bpf2go's -type.
const enum stamp_meta_key *unused_stamp_meta_key __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, META_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} stamp_meta SEC(".maps");

static __always_inline void count_lost(__u32 k)
{
	__u64 *n = bpf_map_lookup_elem(&stamp_meta, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("raw_tracepoint/sched_process_exec")
int stamp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct exec_stamp *s = bpf_task_storage_get(&exec_stamps, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		// The task may keep an older stamp: the daemon compares 'lost'
		// with the counter and trusts no stamp written before a loss.
		count_lost(META_EXEC_LOST);
		return 0;
	}
	// The exec time first: a reader racing this update sees the new
	// exec at once, and refuses rather than trusts a half-written stamp.
	s->exec_ns = bpf_ktime_get_boot_ns();
	__u32 k = META_EXEC_LOST;
	__u64 *lost = bpf_map_lookup_elem(&stamp_meta, &k);
	s->lost = lost ? *lost : 0; // 0: any loss at all distrusts it
	s->start_ns = BPF_CORE_READ(task, start_boottime);
	s->cwd_ino = BPF_CORE_READ(task, fs, pwd.dentry, d_inode, i_ino);
	s->cwd_dev = BPF_CORE_READ(task, fs, pwd.dentry, d_sb, s_dev);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u64 start = BPF_CORE_READ(mm, arg_start);
	__u64 end = BPF_CORE_READ(mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	s->argv_len = len;
	__u32 n = len < STAMP_ARGV ? len : STAMP_ARGV;
	if (n > 0 && n <= STAMP_ARGV)
		bpf_probe_read_user(s->argv, n, (const void *)start);
	if (n < STAMP_ARGV)
		s->argv[n & (STAMP_ARGV - 1)] = 0;
	return 0;
}

// Runs in the forking task (current), after the child is set up and
// before it first runs: the child can neither exec nor connect before its
// record exists. The tracepoint's parent argument is current too, but
// current is read here so no kernel version can make it the child's
// real_parent.
SEC("tp_btf/sched_process_fork")
int BPF_PROG(stamp_fork, struct task_struct *parent, struct task_struct *child)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fork_stamp f = {};
	if (child->tgid == task->tgid) {
		// A new thread: it inherits the process's record, so that an
		// exec from this thread (which makes it the group leader) keeps
		// the process's forker.
		struct fork_stamp *own = bpf_task_storage_get(&fork_stamps, task, 0, 0);
		if (!own)
			return 0;
		f = *own;
	} else {
		f.forker_tgid = task->tgid;
		f.forker_start = BPF_CORE_READ(task, group_leader, start_boottime);
	}
	struct fork_stamp *s = bpf_task_storage_get(&fork_stamps, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		count_lost(META_FORK_LOST);
		return 0;
	}
	*s = f;
	return 0;
}
