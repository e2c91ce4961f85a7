// Shared by mcpcage's eBPF objects (cage.c, lsm.c): the session, deny
// and event maps, and the helpers that find a task's session, budget its
// events and walk the kernel's path of a file. The loader shares the maps
// between the objects.
//
// Sessions are identified by the id of their cgroup at depth
// session_level (the ancestor id), so cgroups a server creates below its
// own stay covered.

#ifndef MCPCAGE_CAGE_H
#define MCPCAGE_CAGE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

// Set by the loader: depth of session cgroups in the cgroup v2 tree.
volatile const __u32 session_level = 2;

// Set by the loaders of cage.c and bind.c: the cookie of the host's
// network namespace (the daemon's, which network = "host" sandboxes
// join). See host_socket.
volatile const __u64 host_netns_cookie = 0;


// Enums shared with Go: bpf2go generates their Go constants (-type, see
// gen.go), which events.go, bind.go and sessions.go name.

// struct session's flags.
enum session_flag {
	SESSION_HOST_NET = 1, // shares the host network namespace: enforce egress
	// A rename or link of the session, or a change over its budget that
	// the daemon had to check, could not be reported (the ring buffer
	// was full), so the daemon could not check its names against
	// deny_paths: every later successful open or change in the session
	// kills its caller until the daemon kills the session.
	SESSION_UNCHECKED = 2,
	// Every writable mount of the session is on a file system the daemon
	// watches with fanotify, which reports its deletions and attribute
	// changes where the kernel acted (see cage.c's changers): over the
	// budget, those (and mkdirs) need no event of their own.
	SESSION_CHANGES_WATCHED = 4,
};

// struct event's kind.
enum event_kind {
	EV_FILE_OPEN = 1,
	EV_EXEC = 2,
	EV_CONNECT = 3,
	EV_NET_DENIED = 4,
	EV_FILE_DENIED = 5,
	EV_UDP_SEND = 6,
	EV_FILE_UNLINK = 7,
	EV_FILE_RMDIR = 8,
	EV_FILE_MKDIR = 9,
	EV_FILE_RENAME = 10,
	EV_FILE_LINK = 11,
	// Changes to a file that stays in place, by name: truncate(2), the
	// chmod, chown and set/removexattr calls (an ACL can give another
	// user the file).
	EV_FILE_TRUNCATE = 12,
	EV_FILE_CHMOD = 13,
	EV_FILE_CHOWN = 14,
	EV_FILE_XATTR = 15,
	// A pathname unix socket reached: a connect(2) to a listening stream
	// or seqpacket socket (recorded, budgeted), or a datagram sent to
	// one (recorded only when it hits deny_paths). See cage.c's
	// cage_unix_peer.
	EV_UNIX_CONNECT = 16,
	EV_UNIX_SEND = 17,
};

// net.connect outcome (struct event's flags).
enum connect_outcome {
	CONNECT_NO_RESULT = 0, // not from connect(2) (io_uring, TCP fast open): the hook's decision only
	CONNECT_SYSCALL = 1,   // result is what connect(2) returned
	CONNECT_HANDSHAKE = 2, // connect(2) said EINPROGRESS; result is the TCP handshake's outcome
	CONNECT_ABANDONED = 3, // the socket closed before the handshake ended
};

// struct event's rule when it names no rule.
enum event_rule {
	UNREGISTERED_RULE = 0xffffffff, // net.denied: the task's session is not registered (fail closed)
	// net.denied: a session without host networking used a socket of the
	// host's network namespace (see host_socket).
	HOST_NETNS_RULE = 0xfffffffe,
	// net.denied: a host-network session connected or sent to an
	// unspecified address (0.0.0.0/8, ::, ::ffff:0.0.0.0/104), which the
	// kernel takes to this host itself (its loopback, or the socket's own
	// bound address): never allowed, whatever the rules.
	UNSPECIFIED_RULE = 0xfffffffd,
};

// Kernel constants vmlinux.h lacks (it has no macros).
#define EINPROGRESS 115
#define SIGKILL 9
#define AT_FDCWD -100
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10

#define MAX_COMPONENTS 16
#define COMPONENT_LEN 48
// PATH_CUT in event.ncomp: the walk stopped short of the root (a path
// deeper than MAX_COMPONENTS, or more mounts stacked at one point than
// MOUNT_HOPS); the components are the path's leaf end.
#define PATH_CUT 0x80
#define HINT_LEN 128

struct session {
	__u32 flags;
	__u32 deny_lens; // bit min(n, 31): a denied component is n bytes long
	__u64 window_start; // rate limit window (session_clock)
	__u64 window_events;
	__u64 opens_folded; // opens folded into a recorded one (see recent_opens)
	__u32 call_slot;    // the session's entry in cage.c's call_slots
	__u32 pad;
	__u64 throttled;    // events the session's budget refused (admit_event): not recorded
};

// Sessions registered at once, at most: the sessions map's size, and the
// number of call epoch slots (cage.c's call_slots).
#define MAX_SESSIONS 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SESSIONS);
	__type(key, __u64);
	__type(value, struct session);
} sessions SEC(".maps");

// Denied path components per session (deny_paths = ["**/.ssh/**"]).
struct deny_key {
	__u64 cgid;
	char name[COMPONENT_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct deny_key);
	__type(value, __u32); // rule index
} deny_components SEC(".maps");

struct event {
	__u64 ts;
	__u64 cgid;
	__u32 pid;
	__u32 tgid;
	__u32 kind;
	__s32 result; // fd or error for opens; 1 allowed / 0 denied for net
	__u32 flags;  // open flags
	__u32 rule;   // deny rule index, egress rule index
	__u16 family;
	__u16 port;
	__u8 proto;
	__u8 ncomp;
	__u8 killed; // the kernel killed the task for this event (deny_paths)
	// A change over the session's budget whose name the daemon checks:
	// recorded only when it hits deny_paths.
	__u8 over_budget;
	__u32 repeats; // file.open: opens of the file folded since its last record
	__u32 at_flags; // changes: the call's AT_* flags (AT_SYMLINK_NOFOLLOW: the last name is not followed)
	__u8 counted;   // counted in the session's share of the ring (call_slot.urgent): the reader counts it read
	__u8 pad[3];
	// Changes by name: the call's directory descriptors (AT_FDCWD: the
	// working directory), which the daemon looks up when the kernel's
	// path of the base directory was cut, and for a rename's or link's
	// new name, relative to a directory the kernel's path does not name.
	__s32 dirfd;
	__s32 newdirfd;
	__u8 addr[16];
	char comm[16];
	char hint[HINT_LEN];                       // user-memory string (audit hint only)
	char hint2[HINT_LEN];                      // rename: the new name (hint)
	char comp[MAX_COMPONENTS][COMPONENT_LEN]; // kernel path, leaf first
};

// Keep struct event and the shared enums in BTF for bpf2go's -type.
const struct event *unused_event __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum connect_outcome *unused_connect_outcome __attribute__((unused));
const enum event_rule *unused_event_rule __attribute__((unused));
const enum session_flag *unused_session_flag __attribute__((unused));

// The ring buffer's size (8 MiB), and how much it holds before an event
// that is not urgent wakes the reader (256 KiB, see wakeup_flags).
#define EVENTS_BYTES (1 << 23)
#define EVENTS_WAKEUP_BYTES (1 << 18)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
} events SEC(".maps");

// The lost map's counters.
enum lost_counter {
	LOST_RINGBUF = 0,   // failed ring buffer reservations
	LOST_THROTTLED = 1, // events over a session's budget
	LOST_COUNTERS,
};

// Failed ring buffer reservations and throttled events, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

// Keeps the enum in BTF for bpf2go's -type.
const enum lost_counter *unused_lost_counter __attribute__((unused));

// Events a session may emit per 100 ms before the rest are counted as
// throttled: one flooding server cannot crowd out the others.
#define WINDOW_NS 100000000ULL
#define WINDOW_EVENTS 2000

// The sessions' clock, which times the event budget's window (WINDOW_NS)
// and cage.c's fold window: the kernel's tick counter (jiffies, a load)
// where the loader measured the tick's length, else the monotonic clock
// in ns (bpf_ktime_get_ns reads the clock source: about 100 ns on a
// virtual machine whose clock reads are slow). window_span is WINDOW_NS
// in its units. In ticks a budget window ends once the counter has moved
// window_span times: 96 to 100 ms at HZ=250, never longer than WINDOW_NS
// (a longer one would straddle the next 100 ms of a session that keeps
// within its budget, and throttle it); the fold window is a second give
// or take a tick. Every
// loader of a program that shares the sessions map sets the same (the Go
// side's setSessionClock): a window one clock started would be misread by
// the other.
volatile const __u8 clock_in_ticks = 0;
volatile const __u64 window_span = WINDOW_NS;

static __always_inline __u64 session_clock(void)
{
	return clock_in_ticks ? bpf_jiffies64() : bpf_ktime_get_ns();
}

// mcpcage's parent cgroup (index 0), set by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} parent_cgroup SEC(".maps");

// in_cage reports whether the current task is under mcpcage's parent
// cgroup: a constant-time ancestor check, the cheapest way for the
// tracepoints to let the rest of the host go.
static __always_inline bool in_cage(void)
{
	return bpf_current_task_under_cgroup(&parent_cgroup, 0) == 1;
}

static __always_inline void count_lost(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&lost, &which);
	if (n)
		(*n)++;
}

// Denials wake the reader at once; other events only when the ring holds
// a good batch (the reader also polls every 100 ms), which spares a wakeup
// per event.
static __always_inline __u64 wakeup_flags(int urgent)
{
	if (urgent || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > EVENTS_WAKEUP_BYTES)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline struct session *current_session(__u64 *cgid)
{
	*cgid = bpf_get_current_ancestor_cgroup_id(session_level);
	return bpf_map_lookup_elem(&sessions, cgid);
}

// host_socket reports whether the socket of a connect, sendmsg or bind
// hook lives in the host's network namespace. The hooks find the session
// by the calling task, but a socket can change hands: one made in a
// host-network session and passed over a unix socket (SCM_RIGHTS) to a
// process of an isolated session is still the host's, and that session's
// "own network namespace, the kernel isolates it" does not hold for it.
// An unset cookie (0: no namespace has it) counts as the host's: fail
// closed.
static __always_inline bool host_socket(struct bpf_sock_addr *ctx)
{
	return host_netns_cookie == 0 || bpf_get_netns_cookie(ctx) == host_netns_cookie;
}

// Set by the loader of cage.c: mcpcage's parent cgroup, its level and id.
volatile const __u32 parent_level = 0;
volatile const __u64 parent_cgid = 0;

// under_parent is in_cage for the syscall tracepoints, which every task
// on the host passes: a task outside the parent cgroup is let go after
// one ancestor id read (cheaper than in_cage's cgroup array look-up and
// descendant test). Only for cage.c, whose loader sets the two constants.
static __always_inline bool under_parent(void)
{
	return bpf_get_current_ancestor_cgroup_id(parent_level) == parent_cgid;
}

// watched_session is current_session for the syscall tracepoints.
static __always_inline struct session *watched_session(__u64 *cgid)
{
	if (!under_parent())
		return 0;
	return current_session(cgid);
}

// unchecked kills the caller of a successful open or change (done) in a
// session marked SESSION_UNCHECKED and says so; the daemon kills the
// session once it sees the mark.
static __always_inline bool unchecked(struct session *s, bool done)
{
	if (!(s->flags & SESSION_UNCHECKED))
		return false;
	if (done)
		bpf_send_signal(SIGKILL);
	return true;
}

// in_budget takes one event from the session's budget for this window.
static __always_inline bool in_budget(struct session *s)
{
	__u64 now = session_clock();
	if (now - s->window_start >= window_span) {
		s->window_start = now;
		s->window_events = 0;
	}
	return __sync_fetch_and_add(&s->window_events, 1) < WINDOW_EVENTS;
}

// throttled counts an event the session's budget refused, for the host
// and for the session (its end says how many).
static __always_inline void throttled(struct session *s)
{
	count_lost(LOST_THROTTLED);
	__sync_fetch_and_add(&s->throttled, 1);
}

// admit_event is in_budget, counting the events it refuses.
static __always_inline bool admit_event(struct session *s)
{
	if (in_budget(s))
		return true;
	throttled(s);
	return false;
}

// EVENTS_RESERVE is the room in the ring kept for urgent events: the
// changes the daemon must check (a rename or link, a change whose name
// may hit), which fail closed when they cannot be reported, and
// deny_paths kills. The other events (opens, execs, connections, net
// denials, checked changes) are dropped, counted as lost, once the ring
// holds more than the rest: one session's flood of them, faster than the
// daemon reads, cannot get another session's rename killed as
// unreportable.
#define EVENTS_RESERVE (1 << 22)

// new_event reserves an event in the ring; one that is not urgent only
// while the ring has more than EVENTS_RESERVE free.
static __always_inline struct event *new_event(__u64 cgid, __u32 kind, bool urgent)
{
	if (!urgent && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > EVENTS_BYTES - EVENTS_RESERVE) {
		count_lost(LOST_RINGBUF);
		return 0;
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RINGBUF);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts = bpf_ktime_get_ns();
	e->cgid = cgid;
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->kind = kind;
	e->counted = 0;
	e->result = 0;
	e->flags = 0;
	e->rule = 0;
	e->family = 0;
	e->port = 0;
	e->proto = 0;
	e->ncomp = 0;
	e->killed = 0;
	e->over_budget = 0;
	e->repeats = 0;
	e->at_flags = 0;
	e->dirfd = 0;
	e->newdirfd = 0;
	e->hint[0] = 0;
	e->hint2[0] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

// deny_len_bit is a component's bit in struct session's deny_lens: its
// length, with every length from 31 up sharing bit 31.
static __always_inline __u32 deny_len_bit(__u32 len)
{
	return 1U << (len < 31 ? len : 31);
}

// A dentry's parent and name, in one read where the kernel keeps them
// side by side (as every kernel we know does), else in two.
struct dentry_up {
	struct dentry *parent;
	struct qstr name;
};

// Direct reads of kernel structures. bpf_rdonly_cast (Linux 6.2+) turns
// a kernel address into a typed, read-only, untrusted pointer: its fields
// are then plain loads that the JIT guards against faults, where
// bpf_probe_read_kernel is a helper call per field (about 100 ns less per
// open on the fold path). cage.c is built twice (gen.go): with
// DIRECT_READS, which the loader takes where the kernel accepts the
// kfunc, and without, which references no kfunc at all (older kernels,
// and lsm.c and bind.c, which include this file).
#ifdef DIRECT_READS
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define use_direct_reads() true
// kcast is ptr as a read-only pointer to a kernel type.
#define kcast(ptr, type) ((type *)bpf_rdonly_cast((void *)(ptr), bpf_core_type_id_kernel(type)))
#else
#define use_direct_reads() false
#define kcast(ptr, type) ((type *)(ptr)) // never run: use_direct_reads() is false
#endif

static __always_inline void read_up(struct dentry *d, struct dentry_up *u)
{
	__u32 parent = bpf_core_field_offset(struct dentry, d_parent);
	if (bpf_core_field_offset(struct dentry, d_name) == parent + sizeof(u->parent)) {
		bpf_probe_read_kernel(u, sizeof(*u), (void *)d + parent);
		return;
	}
	u->parent = BPF_CORE_READ(d, d_parent);
	bpf_core_read(&u->name, sizeof(u->name), &d->d_name);
}

// take_component copies component n's name into e (when set) and, when
// check is set, looks it up among session's denied names (dk holds the
// session's cgroup id): the matching rule + 1 goes to *denied.
static __always_inline void take_component(struct event *e, struct deny_key *dk, int n, bool check, const unsigned char *name, __u32 *denied)
{
	__builtin_memset(dk->name, 0, sizeof(dk->name));
	bpf_probe_read_kernel_str(dk->name, sizeof(dk->name), name);
	if (e)
		__builtin_memcpy(e->comp[n & (MAX_COMPONENTS - 1)], dk->name, COMPONENT_LEN);
	if (check) {
		__u32 *rule = bpf_map_lookup_elem(&deny_components, dk);
		if (rule)
			*denied = *rule + 1;
	}
}

// DEEP_STEPS is how many steps up (a component, or a mount crossed) the
// deny check goes on above walk_path's (an event carries the first
// MAX_COMPONENTS components only). 280: as far as the walk of 24 steps
// before it and 256 steps here reached, where the walk now stops at the
// first point with more than MOUNT_HOPS mounts stacked.
#define DEEP_STEPS 280

// deny_deep goes on with a deny check that walk_path cut short (at
// MAX_COMPONENTS, or at more than MOUNT_HOPS mounts stacked at one point
// of the path): from dentry d on
// mount m up to the root of the namespace, at most DEEP_STEPS steps,
// looking up each name whose length a denied name has. Returns the
// matching rule + 1, or 0. Only paths that deep take it. A global
// function: the verifier checks it once, on its own, not in each inlined
// copy of walk_path, and its arguments are plain numbers.
#ifdef DIRECT_READS
// deep_walk is deny_deep's walk between its steps.
struct deep_walk {
	struct deny_key dk;
	struct dentry *d;
	struct mount *m;
	struct dentry *mnt_root;
	__u32 lens;
	__u32 denied; // the matching rule + 1, once found
};

// deep_step is one step of deny_deep's walk with direct reads: a
// component, or a mount crossed. A bpf_loop callback (1 ends the walk):
// the verifier checks it once or twice, where it checks a bounded loop
// step by step (about 45,000 instructions in each program that walks a
// path). bpf_loop (Linux 5.17) is there wherever bpf_rdonly_cast (6.2)
// is; the build without direct reads keeps the bounded loop.
static long deep_step(__u32 i, void *data)
{
	struct deep_walk *w = data;
	struct dentry *d = w->d;
	struct dentry *parent = d->d_parent;
	if (d == w->mnt_root || d == parent) {
		struct mount *m = w->m;
		struct mount *mp = m->mnt_parent;
		if (m == mp)
			return 1; // the root of the namespace
		w->d = m->mnt_mountpoint;
		w->m = mp;
		w->mnt_root = mp->mnt.mnt_root;
		return 0;
	}
	if (w->lens & deny_len_bit(d->d_name.len)) {
		__u32 denied = 0;
		take_component(0, &w->dk, 0, true, d->d_name.name, &denied);
		if (denied) {
			w->denied = denied;
			return 1;
		}
	}
	w->d = parent;
	return 0;
}
#endif

__noinline __u32 deny_deep(__u64 cgid, __u32 lens, __u64 dentry, __u64 mount)
{
#ifdef DIRECT_READS
	struct deep_walk w = {.dk = {.cgid = cgid}, .lens = lens};
	w.d = kcast(dentry, struct dentry);
	w.m = kcast(mount, struct mount);
	w.mnt_root = w.m->mnt.mnt_root;
	bpf_loop(DEEP_STEPS, deep_step, &w, 0);
	return w.denied;
#else
	struct deny_key dk = {.cgid = cgid};
	struct dentry *d = (struct dentry *)dentry;
	struct mount *m = (struct mount *)mount;
	struct dentry *mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
#pragma clang loop unroll(disable)
	for (int i = 0; i < DEEP_STEPS; i++) {
		struct dentry_up u = {};
		read_up(d, &u);
		if (d == mnt_root || d == u.parent) {
			struct mount *mp = BPF_CORE_READ(m, mnt_parent);
			if (m == mp)
				return 0; // the root of the namespace
			d = BPF_CORE_READ(m, mnt_mountpoint);
			m = mp;
			mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
			continue;
		}
		if (lens & deny_len_bit(u.name.len)) {
			__u32 denied = 0;
			take_component(0, &dk, 0, true, u.name.name, &denied);
			if (denied)
				return denied;
		}
		d = u.parent;
	}
	return 0;
#endif
}

// as_number is p as a plain number, for deny_deep's arguments (a direct
// read's pointer is not a number to the verifier; its bytes are).
static __always_inline __u64 as_number(const void *p)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), &p);
	return v;
}

// MOUNT_HOPS is how many mounts walk_path crosses at one point of a path
// before it takes the next component: mounts stacked on one directory
// (or file), each mounted over the one before. A point with more is
// left to deny_deep, which crosses any number.
#define MOUNT_HOPS 4

// walk_path_direct is walk_path by direct reads: each dentry's parent and
// name length are loads; a name is copied only for the event or the deny
// check, as there.
static __always_inline __u32 walk_path_direct(struct event *e, __u64 cgid, __u32 lens, struct dentry *d0, struct vfsmount *vm0)
{
	struct dentry *d = kcast(d0, struct dentry);
	struct mount *m = kcast(container_of(vm0, struct mount, mnt), struct mount);
	struct dentry *mnt_root = m->mnt.mnt_root;
	__u32 denied = 0;
	struct deny_key dk = {.cgid = cgid};
	__u8 taken = 0;
	bool root = false;
	// Component n is taken in copy n of the unrolled loop: its place in
	// the event is a constant, so the verifier's states at a copy differ
	// in nothing that counts and its work grows with the copies, not
	// with their square (walk_path's loop counted components and mount
	// crossings in one, which cost about 0.3 s of every daemon's start).
#pragma unroll
	for (int n = 0; n <= MAX_COMPONENTS; n++) {
		struct dentry *parent = d->d_parent;
#pragma unroll
		for (int h = 0; h < MOUNT_HOPS; h++) {
			if (d != mnt_root && d != parent)
				break;
			struct mount *mp = m->mnt_parent;
			if (m == mp) {
				root = true; // the root of the namespace
				break;
			}
			d = m->mnt_mountpoint;
			m = mp;
			mnt_root = m->mnt.mnt_root;
			parent = d->d_parent;
		}
		if (!root && (d == mnt_root || d == parent) && m == m->mnt_parent)
			root = true; // the root, on the hop after the last
		// Past the last component, only whether the root is there.
		if (root || n == MAX_COMPONENTS || d == mnt_root || d == parent)
			break;
		bool check = !denied && (lens & deny_len_bit(d->d_name.len));
		if (e || check)
			take_component(e, &dk, n, check, d->d_name.name, &denied);
		taken = n + 1;
		d = parent;
	}
	if (e)
		e->ncomp = taken | (root ? 0 : PATH_CUT);
	if (!root && !denied)
		denied = deny_deep(cgid, lens, as_number(d), as_number(m));
	return denied;
}

// Walks the kernel's dentries from (d, vm) up to the root of the task's
// mount namespace into e->comp (when e is set), leaf first; checks each
// component against session cgid's denied names. Returns the matching
// rule + 1, or 0. A component whose length no denied name has (lens, the
// session's deny_lens) cannot match: its name is read only for e. The
// check never depends on e: a full ring buffer or a spent event budget
// does not weaken enforcement. The walk takes MAX_COMPONENTS components
// and MOUNT_HOPS mounts at each; deny_deep checks the rest of a path
// that goes on (and e->ncomp says PATH_CUT).
static __always_inline __u32 walk_path(struct event *e, __u64 cgid, __u32 lens, struct dentry *d, struct vfsmount *vm)
{
	if (use_direct_reads())
		return walk_path_direct(e, cgid, lens, d, vm);
	struct mount *m = container_of(vm, struct mount, mnt);
	struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
	__u32 denied = 0;
	struct deny_key dk = {.cgid = cgid};
	__u8 taken = 0;
	bool root = false;
#pragma unroll
	for (int n = 0; n <= MAX_COMPONENTS; n++) {
		struct dentry_up u = {};
		read_up(d, &u);
#pragma unroll
		for (int h = 0; h < MOUNT_HOPS; h++) {
			if (d != mnt_root && d != u.parent)
				break;
			struct mount *mp = BPF_CORE_READ(m, mnt_parent);
			if (m == mp) {
				root = true; // the root of the namespace
				break;
			}
			d = BPF_CORE_READ(m, mnt_mountpoint);
			m = mp;
			mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
			read_up(d, &u);
		}
		if (!root && (d == mnt_root || d == u.parent) && m == BPF_CORE_READ(m, mnt_parent))
			root = true; // the root, on the hop after the last
		if (root || n == MAX_COMPONENTS || d == mnt_root || d == u.parent)
			break;
		bool check = !denied && (lens & deny_len_bit(u.name.len));
		if (e || check)
			take_component(e, &dk, n, check, u.name.name, &denied);
		taken = n + 1;
		d = u.parent;
	}
	if (e)
		e->ncomp = taken | (root ? 0 : PATH_CUT);
	if (!root && !denied)
		denied = deny_deep(cgid, lens, as_number(d), as_number(m));
	return denied;
}

// The kernel's path of the task's open file fd (see walk_path).
static __always_inline __u32 file_path(struct event *e, __u64 cgid, __u32 lens, int fd)
{
	// Loads through the task's BTF pointer: no helper call.
	struct file **fds = bpf_get_current_task_btf()->files->fdt->fd;
	struct file *f = 0;
	struct path p = {};
	if (fd < 0 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f) {
		// Closed (by a sibling thread) since the call took it: no path,
		// which the event must not show as "/".
		if (e)
			e->ncomp = PATH_CUT;
		return 0;
	}
	bpf_core_read(&p, sizeof(p), &f->f_path);
	return walk_path(e, cgid, lens, p.dentry, p.mnt);
}

// The kernel's path of a *at() call's base directory: dirfd, or the
// task's working directory for AT_FDCWD.
static __always_inline __u32 dir_path(struct event *e, __u64 cgid, __u32 lens, int dirfd)
{
	if (dirfd != AT_FDCWD)
		return file_path(e, cgid, lens, dirfd);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return walk_path(e, cgid, lens, BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt));
}

#endif
