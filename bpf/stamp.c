//go:build ignore

// Exec stamps: for every task on the host, when it last exec'd, when it
// was forked, its working directory and the head of its argv at that
// exec. The daemon reads a task's stamp with a pidfd (task storage: no
// eviction, freed with the task) to bind an agent to the image that
// actually forked the shim (see stamp.go). Attached system-wide and
// always: exec is rare, and the program does a few loads and one copy.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define STAMP_ARGV 512

struct exec_stamp {
	__u64 exec_ns;  // bpf_ktime_get_boot_ns() at the task's last exec
	__u64 start_ns; // task->start_boottime: when the task was forked
	__u64 cwd_ino;  // working directory at exec: inode number
	__u32 cwd_dev;  // and the kernel dev_t of its file system
	__u32 argv_len; // bytes of argv at exec (mm->arg_end - mm->arg_start)
	char argv[STAMP_ARGV]; // the first bytes of argv, NUL-separated
};

// Keeps struct exec_stamp in BTF for bpf2go's -type.
const struct exec_stamp *unused_exec_stamp __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct exec_stamp);
} exec_stamps SEC(".maps");

// [0]: execs left unstamped (storage allocation failed); [1]: when
// stamping began (boot ns, set by the loader).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stamp_meta SEC(".maps");

SEC("raw_tracepoint/sched_process_exec")
int stamp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct exec_stamp *s = bpf_task_storage_get(&exec_stamps, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		__u32 k = 0;
		__u64 *n = bpf_map_lookup_elem(&stamp_meta, &k);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	// The exec time first: a reader racing this update sees the new
	// exec at once, and refuses rather than trusts a half-written stamp.
	s->exec_ns = bpf_ktime_get_boot_ns();
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
