//go:build ignore

// Exec and fork stamps: for every task on the host, when it last exec'd,
// when it was forked, its working directory, the head of its argv and the
// environment variables the daemon checks, as they were at that exec
// (exec_stamps), and which process forked it and how many times it has
// exec'd since (fork_stamps). The
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

// The environment variables that load code into a program (LD_PRELOAD,
// NODE_OPTIONS, ...) are read here, at exec, not from /proc/PID/environ
// later: that shows the process's memory, which the process can rewrite
// (hide an LD_PRELOAD once it has done its work) and which Chromium's
// setproctitle, in every Electron client, overwrites with its title. The
// daemon puts the names it checks in env_config (prefixes of "NAME=VALUE"
// strings); the stamp keeps every variable that matches one: whole when
// the pattern's value bit is set (PATH, NODE_OPTIONS: their values are
// read), else only "NAME=" and "x" when the value is not empty (all a
// check of LD_PRELOAD or BASH_FUNC_* needs), so that a shell function's
// body does not take the room.
#define ENV_PATTERNS 64   // names in env_config
#define ENV_PATTERN_LEN 24 // bytes of the first look (a pattern is at most 23: the look ends in a NUL)
#define ENV_KEPT 2048     // bytes of matching variables kept (NUL-separated)
#define ENV_STR_MAX 512   // bytes of one kept variable, NUL included (a longer one is cut, and marked)
#define ENV_KEPT_MAX 64   // variables kept
#define ENV_STEPS 8192    // loop steps: a string, or 255 bytes of a long one
_Static_assert(ENV_PATTERN_LEN <= 32, "env_equals_at's answer is masked with 31");

// exec_stamp.env_state.
enum env_state {
	ENV_UNCHECKED = 0,  // no names configured (an exec while the stamper loaded)
	ENV_CHECKED = 1,    // every variable was looked at; env_kept holds the matches
	ENV_INCOMPLETE = 2, // too many strings, or the matches did not fit (in bytes or in number)
	ENV_FAULT = 3,      // the kernel could not read the environment
};

// Keeps the enum in BTF for bpf2go's -type.
const enum env_state *unused_env_state __attribute__((unused));

// A pattern: a string matches when its first bytes, masked, equal word.
struct env_pattern {
	__u64 word[ENV_PATTERN_LEN / 8];
	__u64 mask[ENV_PATTERN_LEN / 8];
};

struct env_config {
	__u32 n;                 // patterns in use
	__u32 pad;
	__u64 value;             // bit j: pattern j keeps the value (the first match counts)
	__u64 first[4];          // bitmap of the patterns' first bytes
	struct env_pattern p[ENV_PATTERNS];
};

const struct env_config *unused_env_config __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct env_config);
} env_configs SEC(".maps");

struct exec_stamp {
	__u64 exec_ns;   // bpf_ktime_get_boot_ns() at the task's last exec
	__u64 start_ns;  // task->start_boottime: when the task was forked
	__u64 cwd_ino;   // working directory at exec: inode number
	__u64 lost;      // stamp_meta[0] (execs left unstamped) when this stamp was written
	__u32 pending;   // 1 from an exec's point of no return until its stamp is written
	__u32 pad;
	__u32 cwd_dev;   // and the kernel dev_t of its file system
	__u32 argv_len;  // bytes of argv at exec (mm->arg_end - mm->arg_start)
	char argv[STAMP_ARGV]; // the first bytes of argv, NUL-separated
	__u32 env_state;     // enum env_state
	__u32 env_kept_len;  // bytes of env_kept in use
	__u64 env_cut;       // bit i: the i-th kept variable was cut to ENV_STR_MAX - 1 bytes
	char env_kept[ENV_KEPT + ENV_STR_MAX]; // the matching variables, NUL-separated (a copy may run past ENV_KEPT, then is dropped)
};

// Who forked a task: the process (thread group) of the task that called
// fork/clone, which is not always the child's parent (CLONE_PARENT, a
// re-parented orphan), written at fork; and how many times the task has
// exec'd since, counted by exec. A shim its agent started has exec'd once
// (mcpcage itself): a second exec means a program ran in the agent's
// child before mcpcage and could have given it other input than the
// agent's (a shell or wrapper from a configuration of someone else's).
//
// The first exec's file is kept too: some runtimes spawn every child
// through a helper of their own that execs the program asked for (Java's
// jspawnhelper), and the daemon accepts that helper when it is the
// agent's.
struct fork_stamp {
	__u64 forker_start; // the forking process's start_boottime (its group leader's)
	__u32 forker_tgid;  // the forking process's pid, in the initial pid namespace
	__u16 execs;        // execs since the fork (saturates at FORK_EXECS_MAX)
	__u16 counted;      // 1 from the prepare hook's count of an exec to its stamp (stamp_exec counts it otherwise)
	__u64 first_ino;    // the file the first exec ran (what became /proc/PID/exe): inode number
	__u32 first_dev;    // and the kernel dev_t of its file system
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

#define FORK_EXECS_MAX 0xffff

// count_exec adds one exec to the current task's fork stamp, when it has
// one (a task forked before the stamper has none: it is older than the
// record, which says so). No allocation: the stamp exists since the fork.
static __always_inline void count_exec(struct task_struct *task, bool prepared, struct file *file)
{
	struct fork_stamp *f = bpf_task_storage_get(&fork_stamps, task, 0, 0);
	if (!f)
		return;
	if (!prepared && f->counted) {
		f->counted = 0; // the prepare hook counted this exec already
		return;
	}
	if (f->execs == 0) {
		f->first_ino = BPF_CORE_READ(file, f_inode, i_ino);
		f->first_dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	}
	if (f->execs < FORK_EXECS_MAX)
		f->execs++;
	f->counted = prepared;
}

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

struct env_scan {
	struct exec_stamp *st;
	struct env_config *cfg;
	__u64 pos, end; // the next string (or the rest of a long one), the end
	__u32 kept;     // bytes of st->env_kept in use
	__u32 count;    // variables kept
	__u64 cut;      // exec_stamp.env_cut
	__u32 state;    // enum env_state, once the scan ends
	__u32 skipping; // pos is inside a string that does not match
};

// pass_head moves past a string whose first look read n bytes: to the
// next string, or into this one's rest, skipped.
static __always_inline void pass_head(struct env_scan *c, long n)
{
	if (n < ENV_PATTERN_LEN) {
		c->pos += n;
	} else {
		c->skipping = 1;
		c->pos += ENV_PATTERN_LEN - 1;
	}
}

// env_match's answers.
#define ENV_NO_MATCH (-1)
#define ENV_MATCH_NAME 0  // the first pattern that matches keeps the name only
#define ENV_MATCH_VALUE 1 // the first pattern that matches keeps the value too

// env_match says which kind of pattern of cfg, if any, a string whose
// first bytes are w0..w2 (zero-filled) matches first. A global function:
// the verifier checks it once, on its own, where the loop over the 64
// patterns inside env_step was checked on each of the callback's passes
// and paths (about 330,000 instructions, 0.4-0.5 s of every start).
__attribute__((noinline)) int env_match(const struct env_config *cfg, __u64 w0, __u64 w1, __u64 w2)
{
	if (!cfg)
		return ENV_NO_MATCH;
	for (int j = 0; j < ENV_PATTERNS; j++) {
		if (j >= cfg->n)
			break;
		const struct env_pattern *p = &cfg->p[j];
		if ((w0 & p->mask[0]) == p->word[0] && (w1 & p->mask[1]) == p->word[1] && (w2 & p->mask[2]) == p->word[2])
			return (cfg->value >> j) & 1 ? ENV_MATCH_VALUE : ENV_MATCH_NAME;
	}
	return ENV_NO_MATCH;
}

// env_equals_at is where the first '=' is among bytes 1 to 21 of a
// string whose first bytes are w0..w2, or 0. Global, as env_match is:
// checked once, its answer a range for the caller.
__attribute__((noinline)) __u32 env_equals_at(__u64 w0, __u64 w1, __u64 w2)
{
	__u64 w[ENV_PATTERN_LEN / 8] = {w0, w1, w2};
	const char *h = (const char *)w;
	for (__u32 k = 1; k < ENV_PATTERN_LEN - 2; k++) {
		if (h[k] == '=')
			return k;
	}
	return 0;
}

// env_step looks at one string of the environment, or skips 255 more
// bytes of a long one. A bpf_loop callback: 1 ends the loop.
static long env_step(__u32 i, void *data)
{
	struct env_scan *c = data;
	struct exec_stamp *st = c->st;
	struct env_config *cfg = c->cfg;
	if (!st || !cfg)
		return 1;
	if (c->pos >= c->end) {
		c->state = ENV_CHECKED;
		return 1;
	}
	if (c->skipping) {
		char buf[256];
		long n = bpf_probe_read_user_str(buf, sizeof(buf), (const void *)c->pos);
		if (n <= 0) {
			c->state = ENV_FAULT;
			return 1;
		}
		if (n < (long)sizeof(buf)) {
			c->skipping = 0;
			c->pos += n;
		} else {
			c->pos += sizeof(buf) - 1;
		}
		return 0;
	}
	__u64 head[ENV_PATTERN_LEN / 8] = {}; // what the copy leaves is zero
	long n = bpf_probe_read_user_str(head, sizeof(head), (const void *)c->pos);
	if (n <= 0) {
		c->state = ENV_FAULT;
		return 1;
	}
	__u8 first = head[0] & 0xff;
	int match = ENV_NO_MATCH;
	if ((cfg->first[(first >> 6) & 3] >> (first & 63)) & 1)
		match = env_match(cfg, head[0], head[1], head[2]);
	if (match == ENV_NO_MATCH) {
		pass_head(c, n);
		return 0;
	}
	bool value = match == ENV_MATCH_VALUE;
	__u32 off = c->kept;
	if (off >= ENV_KEPT || c->count >= ENV_KEPT_MAX) {
		c->state = ENV_INCOMPLETE;
		return 1;
	}
	if (!value) {
		// The name and whether there is a value, when the '=' and the
		// value's first byte lie in the first look (23 bytes and a NUL):
		// a name of 21 bytes at most. A longer one is kept whole, as a
		// value is.
		const char *h = (const char *)head;
		__u32 eq = env_equals_at(head[0], head[1], head[2]) & 31; // as is, bounded for the verifier
		if (eq > 0 && eq < ENV_PATTERN_LEN - 2) {
			__u32 len = eq + 1; // "NAME="
			if (len < sizeof(head) && h[len] != 0)
				len++; // and "x"
			if (len > sizeof(head) || off + len + 1 > ENV_KEPT) {
				c->state = ENV_INCOMPLETE;
				return 1;
			}
			bpf_probe_read_kernel(&st->env_kept[off & (ENV_KEPT - 1)], len, h);
			if (len > eq + 1)
				st->env_kept[(off + eq + 1) & (ENV_KEPT - 1)] = 'x';
			st->env_kept[(off + len) & (ENV_KEPT - 1)] = 0;
			c->kept = off + len + 1;
			c->count++;
			pass_head(c, n);
			return 0;
		}
	}
	long m = bpf_probe_read_user_str(&st->env_kept[off & (ENV_KEPT - 1)], ENV_STR_MAX, (const void *)c->pos);
	if (m <= 0) {
		c->state = ENV_FAULT;
		return 1;
	}
	if (off + m > ENV_KEPT) {
		c->state = ENV_INCOMPLETE;
		return 1;
	}
	if (m >= ENV_STR_MAX) {
		// Longer (or exactly as long): kept cut, marked, and the rest
		// skipped.
		c->cut |= 1ULL << (c->count & (ENV_KEPT_MAX - 1));
		c->skipping = 1;
		c->pos += ENV_STR_MAX - 1;
	} else {
		c->pos += m;
	}
	c->kept = off + m;
	c->count++;
	return 0;
}

// scan_env fills the stamp's environment fields from the new image's
// environment (written by exec just before this tracepoint).
static __always_inline void scan_env(struct exec_stamp *st, struct mm_struct *mm)
{
	__u32 zero = 0;
	struct env_config *cfg = bpf_map_lookup_elem(&env_configs, &zero);
	st->env_kept_len = 0;
	st->env_cut = 0;
	if (!cfg || cfg->n == 0) {
		st->env_state = ENV_UNCHECKED;
		return;
	}
	struct env_scan c = {
		.st = st,
		.cfg = cfg,
		.pos = BPF_CORE_READ(mm, env_start),
		.end = BPF_CORE_READ(mm, env_end),
		.state = ENV_INCOMPLETE, // unless the scan reaches the end
	};
	bpf_loop(ENV_STEPS, env_step, &c, 0);
	st->env_kept_len = c.kept;
	st->env_cut = c.cut;
	st->env_state = c.state;
}

SEC("raw_tracepoint/sched_process_exec")
int stamp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	count_exec(task, false, BPF_CORE_READ(task, mm, exe_file));
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
	scan_env(s, mm);
	s->pending = 0; // last: the stamp is this exec's now
	return 0;
}

// Runs as an exec passes its point of no return, before the task's image
// changes (begin_new_exec: /proc/PID/exe, the memory map). The stamp
// above is written only once the new image is loaded (load_elf_binary),
// which a page fault can hold for as long as the binary's file system
// wants (a FUSE mount the user made): meanwhile /proc showed the new
// program under the old stamp, and a shim forked before the exec was
// bound to the program exec'd after it (found by a red-team helper).
// Now the exec's time and "pending" are in the stamp first.
SEC("tp_btf/sched_prepare_exec")
int BPF_PROG(stamp_prepare, struct task_struct *task, struct linux_binprm *bprm)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	// Counted here, before /proc shows the new program: a process that
	// connected as a shim and then exec'd mcpcage is seen to have exec'd
	// twice by the time mcpcage is what /proc shows.
	count_exec(cur, true, bprm->file);
	struct exec_stamp *s = bpf_task_storage_get(&exec_stamps, cur, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		count_lost(META_EXEC_LOST);
		return 0;
	}
	s->pending = 1;
	s->exec_ns = bpf_ktime_get_boot_ns();
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
