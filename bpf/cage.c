//go:build ignore

// mcpcage's eBPF programs: per-session egress enforcement on cgroup socket
// hooks, and observation of file opens, directory operations, execs and
// connections of the tasks in mcpcage's session cgroups. Built with
// bpf2go (see gen.go). A task under mcpcage's parent cgroup whose session
// is not registered is denied every connection (fail closed), and a
// session without host networking every use of a socket of the host's
// network namespace (cage.h's host_socket).

#include "cage.h"

// Calibration: the kernel counts cgroup levels from the real root, which
// a daemon inside a cgroup namespace (a container) cannot see. The loader
// attaches cage_calibrate for a moment, calls prctl(calib_option,
// calib_nonce) (an unknown option: EINVAL, no effect) and reads which
// ancestor of its own cgroup sits at which level. The call is recognised
// by its arguments: pids differ inside a pid namespace.
volatile const __u64 calib_option = 0;
volatile const __u64 calib_nonce = 0;

#define CALIB_LEVELS 32
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CALIB_LEVELS);
	__type(key, __u32);
	__type(value, __u64);
} calib SEC(".maps");

// The kernel's tick counter and monotonic clock, read together at each
// calibration call: the loader measures the tick's length from them (see
// session_clock).
struct calib_clocks {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct calib_clocks);
} calib_clock SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_prctl")
int cage_calibrate(struct trace_event_raw_sys_enter *ctx)
{
	if (calib_option == 0 || ctx->args[0] != calib_option || ctx->args[1] != calib_nonce)
		return 0;
	__u32 zero = 0;
	struct calib_clocks *cc = bpf_map_lookup_elem(&calib_clock, &zero);
	if (cc) {
		cc->jiffies = bpf_jiffies64();
		cc->ns = bpf_ktime_get_ns();
	}
	for (__u32 i = 0; i < CALIB_LEVELS; i++) { // a bounded loop (kernel 5.3+)
		__u64 id = bpf_get_current_ancestor_cgroup_id(i);
		__u32 key = i; // keep i in a register: a spilled counter defeats the loop bound
		bpf_map_update_elem(&calib, &key, &id, BPF_ANY);
	}
	return 0;
}

// Egress rules: LPM key = session id (64 bits) + address prefix.
struct lpm4 {
	__u32 prefixlen;
	__u8 cgid[8];
	__u8 addr[4];
};

struct lpm6 {
	__u32 prefixlen;
	__u8 cgid[8];
	__u8 addr[16];
};

#define MAX_PORTS 8
struct ports {
	__u16 port[MAX_PORTS];
	__u8 n;
	__u8 any;
	__u16 rule; // index of the first rule that contributed, for the audit
};

// The egress tries of every session, keyed by cgroup id then address.
// Shared by all users: egressbook.go bounds what one user's sessions hold
// (an eighth each by default); entries are allocated as they are written.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4);
	__type(value, struct ports);
} egress4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm6);
	__type(value, struct ports);
} egress6 SEC(".maps");

// UDP destinations already reported, per session.
struct udp_key {
	__u64 cgid;
	__u8 addr[16];
	__u16 port;
	__u16 family;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct udp_key);
	__type(value, __u8);
} udp_seen SEC(".maps");

// take moves the calling thread's entry of a per-thread hash map into out.
static __always_inline bool take(void *map, void *out, __u32 size)
{
	if (!under_parent())
		return false;
	__u64 id = bpf_get_current_pid_tgid();
	void *v = bpf_map_lookup_elem(map, &id);
	if (!v)
		return false;
	__builtin_memcpy(out, v, size);
	bpf_map_delete_elem(map, &id);
	return true;
}

// take_task moves the calling task's in-flight entry of a task-storage
// map into out: entries start with a __u64 'active', set at syscall entry.
static __always_inline bool take_task(void *map, void *out, __u32 size)
{
	if (!under_parent())
		return false;
	__u64 *active = bpf_task_storage_get(map, bpf_get_current_task_btf(), 0, 0);
	if (!active || !*active)
		return false;
	__builtin_memcpy(out, active, size);
	*active = 0;
	return true;
}

/* ---- network ---- */

// A connect(2) in flight, by thread: marked at syscall entry (for session
// tasks), filled by the cgroup hook, reported at syscall exit with the
// result; when the result is EINPROGRESS for TCP, reported when the
// handshake ends (tp_btf/inet_sock_set_state), by socket cookie.
struct pending_connect {
	__u64 ts;
	__u64 cgid;
	__u64 cookie;
	__u32 pid;
	__u32 tgid;
	__u32 rule;
	__u16 family;
	__u16 port;
	__u8 proto;
	__u8 filled;
	__u8 pad[2];
	__s32 fd;
	__u8 addr[16];
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct pending_connect);
} connects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct pending_connect);
} handshakes SEC(".maps");

// Set by the loader once tp_btf/inet_sock_set_state is attached.
volatile __u8 track_handshakes = 0;

static __always_inline void emit_connect(struct pending_connect *pc, int ret, __u32 outcome)
{
	struct event *e = new_event(pc->cgid, EV_CONNECT, false);
	if (!e)
		return;
	// Possibly not the connecting task's context (a softirq ends the
	// handshake): everything comes from the record.
	e->ts = pc->ts;
	e->pid = pc->pid;
	e->tgid = pc->tgid;
	__builtin_memcpy(e->comm, pc->comm, sizeof(e->comm));
	e->result = ret;
	e->flags = outcome;
	e->family = pc->family;
	e->port = pc->port;
	e->proto = pc->proto;
	e->rule = pc->rule;
	__builtin_memcpy(e->addr, pc->addr, sizeof(e->addr));
	e->comp[0][0] = 0;
	bpf_ringbuf_submit(e, wakeup_flags(0));
}

// The socket behind the task's fd.
static __always_inline struct sock *connect_sock(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = 0;
	if (fd < 0 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : 0;
}

/* ---- pathname unix sockets ---- */

#define SOCK_DGRAM 2
#define S_IFMT 00170000
#define S_IFSOCK 0140000

// A pathname unix socket reached by a session's task, checked against
// deny_paths on the kernel's own record of the socket file. connect(2)
// to a unix socket is no open: the kernel resolves the name to the
// socket's inode itself, and a socket file in a denied directory made
// after the launch (an ssh ControlMaster socket under ~/.ssh, gpg-agent's
// under ~/.gnupg) was not masked. The kernel tells the socket that was
// reached when it wakes it, in the caller's context: unix_stream_connect
// (stream and seqpacket) calls the listener's sk_data_ready once the
// connection is made, before connect returns; unix_dgram_sendmsg calls
// the receiver's on each datagram, connected or not (sendto, sendmsg,
// sendmmsg; io_uring's calls reach the same functions). The listener's
// or receiver's unix_sock.path is the file the socket was bound at
// (dentry and mount, the binder's view, so for a host socket the host's
// path): the same walk as an open's decides. A hit kills the caller
// before the call returns, as for an open: the connection is made (or
// the datagram queued) by then, so a sibling thread that writes to the
// socket at once can get bytes to the peer before the kill lands. Not
// seen: a connection passed in ready made (SCM_RIGHTS), and a name
// hard-linked into a denied directory to a socket bound elsewhere (the
// check reads where it was bound). Abstract and unbound sockets have no
// path (Landlock's scopes cover abstract ones). Runs on every socket's
// data-ready on the host while sessions run: a socket that is not
// AF_UNIX, data on an established stream, and tasks outside mcpcage's
// cgroup leave after a load or two.
// unix_check decides on session s's task reaching the pathname unix
// socket bound at p (type: the socket's SOCK_*): a connect (send unset)
// is recorded within the session's budget, a datagram only on a hit; a
// socket file under deny_paths kills the task.
static __always_inline void unix_check(struct session *s, __u64 cgid, __u16 type, bool send, struct path *p)
{
	if (unchecked(s, true))
		return;
	__u32 kind = send ? EV_UNIX_SEND : EV_UNIX_CONNECT;
	bool admitted = !send && in_budget(s);
	struct event *e = admitted ? new_event(cgid, kind, false) : 0;
	__u32 denied = walk_path(e, cgid, s->deny_lens, p->dentry, p->mnt);
	if (denied) {
		bpf_send_signal(SIGKILL);
		if (!e && (e = new_event(cgid, kind, true)))
			walk_path(e, cgid, s->deny_lens, p->dentry, p->mnt);
	}
	if (!e) {
		if (!send && !admitted)
			throttled(s);
		return;
	}
	e->family = AF_UNIX;
	e->proto = (__u8)type;
	if (denied) {
		e->killed = 1;
		e->rule = denied - 1;
	}
	bpf_ringbuf_submit(e, wakeup_flags(denied));
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(cage_unix_peer, const struct sock *sk)
{
	if (sk->__sk_common.skc_family != AF_UNIX)
		return 0;
	__u16 type = sk->sk_type;
	bool send = type == SOCK_DGRAM;
	// A stream's data after its connect: the connect was checked.
	if (!send && sk->__sk_common.skc_state != TCP_LISTEN)
		return 0;
	__u64 cgid;
	struct session *s = watched_session(&cgid);
	if (!s)
		return 0;
	struct path p = {};
	bpf_core_read(&p, sizeof(p), &((struct unix_sock *)sk)->path);
	if (!p.dentry)
		return 0; // abstract or not bound: no file
	unix_check(s, cgid, type, send, &p);
	return 0;
}

// unix_connect_exit is cage_unix_peer's fallback at the exit of a
// successful connect(2) (cage_exit_connect_unix): a unix stream or seqpacket socket at fd is connected to the
// listener's new socket, whose path is the file the listener was bound
// at. Weaker: it reads the descriptor after the call, which a sibling
// thread can close or swap in between, and datagrams are not seen.
static __always_inline void unix_connect_exit(int fd)
{
	__u64 cgid;
	struct session *s = current_session(&cgid);
	if (!s)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = 0;
	if (fd < 0 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return; // swapped for another file since the call
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = sock ? BPF_CORE_READ(sock, sk) : 0;
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_UNIX)
		return;
	__u16 type = BPF_CORE_READ(sk, sk_type);
	if (type == SOCK_DGRAM)
		return; // a datagram socket's connect sends nothing
	struct sock *peer = BPF_CORE_READ((struct unix_sock *)sk, peer);
	if (!peer)
		return;
	struct path p = {};
	bpf_core_read(&p, sizeof(p), &((struct unix_sock *)peer)->path);
	if (p.dentry)
		unix_check(s, cgid, type, false, &p);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int cage_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 cgid;
	if (!watched_session(&cgid))
		return 0;
	struct pending_connect pc = {.fd = (__s32)ctx->args[0]};
	__u64 id = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&connects, &id, &pc, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int cage_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct pending_connect pc;
	// Not filled: denied (already reported) or not an inet socket.
	if (!take(&connects, &pc, sizeof(pc)) || !pc.filled)
		return 0;
	int ret = (int)ctx->ret;
	if (ret != -EINPROGRESS || pc.proto != IPPROTO_TCP || !track_handshakes) {
		emit_connect(&pc, ret, CONNECT_SYSCALL);
		return 0;
	}
	// The handshake may already be over (loopback completes it inside
	// connect(2)). Whoever deletes the entry reports it: this program if
	// the socket has left SYN_SENT, cage_tcp_state otherwise.
	bpf_map_update_elem(&handshakes, &pc.cookie, &pc, BPF_ANY);
	struct sock *sk = connect_sock(pc.fd);
	if (!sk)
		return 0;
	int state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_SYN_SENT || bpf_map_delete_elem(&handshakes, &pc.cookie))
		return 0;
	if (state == TCP_CLOSE) {
		int err = BPF_CORE_READ(sk, sk_err);
		emit_connect(&pc, -err, err ? CONNECT_HANDSHAKE : CONNECT_ABANDONED);
	} else {
		emit_connect(&pc, 0, CONNECT_HANDSHAKE); // connected (and maybe closing already)
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(cage_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_SENT || (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE))
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct pending_connect *p = bpf_map_lookup_elem(&handshakes, &cookie);
	if (!p)
		return 0;
	struct pending_connect pc = *p;
	if (bpf_map_delete_elem(&handshakes, &cookie))
		return 0; // cage_exit_connect reported it
	if (newstate == TCP_ESTABLISHED) {
		emit_connect(&pc, 0, CONNECT_HANDSHAKE);
		return 0;
	}
	int err = sk->sk_err;
	emit_connect(&pc, -err, err ? CONNECT_HANDSHAKE : CONNECT_ABANDONED);
	return 0;
}

// An allowed connect: held for connect(2)'s result when the task is in
// that syscall, reported now otherwise.
static __always_inline void hold_connect(struct bpf_sock_addr *ctx, __u64 cgid, struct session *s, __u16 family,
					 __u8 *addr, int alen, __u16 port, __u8 proto, __u32 rule)
{
	if (!admit_event(s))
		return;
	__u64 id = bpf_get_current_pid_tgid();
	struct pending_connect *p = bpf_map_lookup_elem(&connects, &id);
	struct pending_connect local = {};
	struct pending_connect *pc = p ? p : &local;
	pc->ts = bpf_ktime_get_ns();
	pc->cgid = cgid;
	pc->cookie = bpf_get_socket_cookie(ctx);
	pc->pid = (__u32)id;
	pc->tgid = id >> 32;
	pc->rule = rule;
	pc->family = family;
	pc->port = port;
	pc->proto = proto;
	pc->filled = 1;
	__builtin_memset(pc->addr, 0, sizeof(pc->addr));
	if (alen == 4)
		__builtin_memcpy(pc->addr, addr, 4);
	else
		__builtin_memcpy(pc->addr, addr, 16);
	bpf_get_current_comm(pc->comm, sizeof(pc->comm));
	if (!p)
		emit_connect(pc, 0, CONNECT_NO_RESULT);
}

static __always_inline int ports_allow(struct ports *p, __u16 port)
{
	if (p->any)
		return 1;
#pragma unroll
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i < p->n && p->port[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline void emit_net(__u64 cgid, struct session *s, int allowed, __u16 family, __u8 *addr, int alen,
				     __u16 port, __u8 proto, __u32 rule, __u32 kind)
{
	if (allowed && !admit_event(s))
		return;
	struct event *e = new_event(cgid, allowed ? kind : EV_NET_DENIED, false);
	if (!e)
		return;
	e->result = allowed;
	e->family = family;
	e->port = port;
	e->proto = proto;
	e->rule = rule;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (alen == 4)
		__builtin_memcpy(e->addr, addr, 4);
	else
		__builtin_memcpy(e->addr, addr, 16);
	e->comp[0][0] = 0;
	bpf_ringbuf_submit(e, wakeup_flags(!allowed));
}

static __always_inline int check4(struct bpf_sock_addr *ctx, __u32 kind)
{
	__u64 cgid;
	struct session *s = current_session(&cgid);
	__u32 ip = ctx->user_ip4;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	if (!s) {
		struct session none = {};
		(void)none;
		struct event *e = new_event(cgid, EV_NET_DENIED, false);
		if (e) {
			e->family = AF_INET;
			e->port = port;
			e->rule = UNREGISTERED_RULE;
			__builtin_memset(e->addr, 0, sizeof(e->addr));
			__builtin_memcpy(e->addr, &ip, 4);
			e->comp[0][0] = 0;
			bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
		}
		return 0;
	}
	if (!(s->flags & SESSION_HOST_NET)) {
		// Own network namespace (loopback only): the kernel isolates it.
		// A socket of the host's (passed in) is refused, whatever the
		// address: the session may reach nothing of the host.
		if (host_socket(ctx)) {
			emit_net(cgid, s, 0, AF_INET, (__u8 *)&ip, 4, port, proto, HOST_NETNS_RULE, kind);
			return 0;
		}
		if (kind == EV_CONNECT)
			hold_connect(ctx, cgid, s, AF_INET, (__u8 *)&ip, 4, port, proto, 0);
		return 1;
	}
	if ((bpf_ntohl(ip) >> 24) == 0) {
		// 0.0.0.0 (and the rest of 0/8) is this host to the kernel: a
		// rule that holds it (a hosts file's blocking line, a wide
		// range) must not open the host's loopback.
		emit_net(cgid, s, 0, AF_INET, (__u8 *)&ip, 4, port, proto, UNSPECIFIED_RULE, kind);
		return 0;
	}
	struct lpm4 key = {.prefixlen = 64 + 32};
	__builtin_memcpy(key.cgid, &cgid, 8);
	__builtin_memcpy(key.addr, &ip, 4);
	struct ports *p = bpf_map_lookup_elem(&egress4, &key);
	int allowed = p && ports_allow(p, port);
	if (kind == EV_UDP_SEND && allowed) {
		struct udp_key uk = {.cgid = cgid, .port = port, .family = AF_INET};
		__builtin_memcpy(uk.addr, &ip, 4);
		if (bpf_map_lookup_elem(&udp_seen, &uk))
			return 1;
		__u8 one = 1;
		bpf_map_update_elem(&udp_seen, &uk, &one, BPF_ANY);
	}
	if (allowed && kind == EV_CONNECT)
		hold_connect(ctx, cgid, s, AF_INET, (__u8 *)&ip, 4, port, proto, p->rule);
	else
		emit_net(cgid, s, allowed, AF_INET, (__u8 *)&ip, 4, port, proto, p ? p->rule : 0, kind);
	return allowed;
}

static __always_inline int check6(struct bpf_sock_addr *ctx, __u32 kind)
{
	__u64 cgid;
	struct session *s = current_session(&cgid);
	__u32 ip6[4];
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	if (!s) {
		struct event *e = new_event(cgid, EV_NET_DENIED, false);
		if (e) {
			e->family = AF_INET6;
			e->port = port;
			e->rule = UNREGISTERED_RULE;
			__builtin_memcpy(e->addr, ip6, 16);
			e->comp[0][0] = 0;
			bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
		}
		return 0;
	}
	if (!(s->flags & SESSION_HOST_NET)) {
		if (host_socket(ctx)) { // as in check4
			emit_net(cgid, s, 0, AF_INET6, (__u8 *)ip6, 16, port, proto, HOST_NETNS_RULE, kind);
			return 0;
		}
		if (kind == EV_CONNECT)
			hold_connect(ctx, cgid, s, AF_INET6, (__u8 *)ip6, 16, port, proto, 0);
		return 1;
	}
	int allowed = 0;
	struct ports *p = 0;
	if (ip6[0] == 0 && ip6[1] == 0 && (ip6[2] == 0 || ip6[2] == bpf_htonl(0xffff)) &&
	    (ip6[2] == 0 ? ip6[3] == 0 : (bpf_ntohl(ip6[3]) >> 24) == 0)) {
		// :: is ::1 to the kernel, and ::ffff:0.0.0.0 is 0.0.0.0 (as in
		// check4).
		emit_net(cgid, s, 0, AF_INET6, (__u8 *)ip6, 16, port, proto, UNSPECIFIED_RULE, kind);
		return 0;
	}
	// IPv4-mapped addresses (::ffff:a.b.c.d) follow the IPv4 rules.
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff)) {
		struct lpm4 key = {.prefixlen = 64 + 32};
		__builtin_memcpy(key.cgid, &cgid, 8);
		__builtin_memcpy(key.addr, &ip6[3], 4);
		p = bpf_map_lookup_elem(&egress4, &key);
	} else {
		struct lpm6 key = {.prefixlen = 64 + 128};
		__builtin_memcpy(key.cgid, &cgid, 8);
		__builtin_memcpy(key.addr, ip6, 16);
		p = bpf_map_lookup_elem(&egress6, &key);
	}
	allowed = p && ports_allow(p, port);
	if (kind == EV_UDP_SEND && allowed) {
		struct udp_key uk = {.cgid = cgid, .port = port, .family = AF_INET6};
		__builtin_memcpy(uk.addr, ip6, 16);
		if (bpf_map_lookup_elem(&udp_seen, &uk))
			return 1;
		__u8 one = 1;
		bpf_map_update_elem(&udp_seen, &uk, &one, BPF_ANY);
	}
	if (allowed && kind == EV_CONNECT)
		hold_connect(ctx, cgid, s, AF_INET6, (__u8 *)ip6, 16, port, proto, p->rule);
	else
		emit_net(cgid, s, allowed, AF_INET6, (__u8 *)ip6, 16, port, proto, p ? p->rule : 0, kind);
	return allowed;
}

SEC("cgroup/connect4")
int cage_connect4(struct bpf_sock_addr *ctx) { return check4(ctx, EV_CONNECT); }

SEC("cgroup/connect6")
int cage_connect6(struct bpf_sock_addr *ctx) { return check6(ctx, EV_CONNECT); }

SEC("cgroup/sendmsg4")
int cage_sendmsg4(struct bpf_sock_addr *ctx) { return check4(ctx, EV_UDP_SEND); }

SEC("cgroup/sendmsg6")
int cage_sendmsg6(struct bpf_sock_addr *ctx) { return check6(ctx, EV_UDP_SEND); }

/* ---- files ---- */

// The open system calls' arguments are read at their exit, from the
// registers the task entered the kernel with (its saved user registers,
// which nothing changes before the call returns): there is no entry
// program, so an open pays for one tracepoint program, not two. They are
// read only when an event is made: the deny check and the folding of
// repeats use the kernel's path, flags and mode of the file opened.
//
// The open calls' numbers (the exit record's id).
#if defined(__TARGET_ARCH_arm64)
#define NR_OPENAT 56
#define NR_OPENAT2 437
#else
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPENAT2 437
#endif

#if defined(__TARGET_ARCH_arm64)
// arm64's saved registers (struct pt_regs begins with x0..x30; x0 is
// overwritten by the return value, orig_x0 keeps the first argument).
struct pt_regs___mcpcage_arm64 {
	__u64 regs[31];
	__u64 orig_x0;
} __attribute__((preserve_access_index));

static __always_inline __u64 syscall_arg(struct pt_regs *r, int n)
{
	struct pt_regs___mcpcage_arm64 *a = (void *)r;
	switch (n) {
	case 0:
		return a->orig_x0;
	case 1:
		return a->regs[1];
	default:
		return a->regs[2];
	}
}
#else
static __always_inline __u64 syscall_arg(struct pt_regs *r, int n)
{
	switch (n) {
	case 0:
		return r->di;
	case 1:
		return r->si;
	default:
		return r->dx;
	}
}
#endif

// open_args reads a finished open call's name pointer and its caller's
// flags. (The call is told by the exit record's syscall number, read
// here: a value carried from the program's start would multiply the
// paths the verifier walks.)
static __always_inline void open_args(struct trace_event_raw_sys_exit *ctx, const char **name, __u32 *flags)
{
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	// A syscall exit tracepoint's record has a 4-byte number where the
	// raw_syscalls struct declares a long: the upper half is not the
	// kernel's to promise (stack padding), so only the lower is read.
	switch ((int)ctx->id) {
	case NR_OPENAT:
		*name = (const char *)syscall_arg(r, 1);
		*flags = (__u32)syscall_arg(r, 2);
		break;
	case NR_OPENAT2: {
		struct open_how how = {};
		*name = (const char *)syscall_arg(r, 1);
		bpf_probe_read_user(&how, sizeof(how), (void *)syscall_arg(r, 2));
		*flags = (__u32)how.flags;
		break;
	}
#ifdef NR_OPEN
	case NR_OPEN:
		*name = (const char *)syscall_arg(r, 0);
		*flags = (__u32)syscall_arg(r, 1);
		break;
	case NR_CREAT:
		*name = (const char *)syscall_arg(r, 0);
		*flags = 0x241; // O_CREAT|O_WRONLY|O_TRUNC
		break;
#endif
	default: // not an open call: nothing to report
		*name = 0;
		*flags = 0;
	}
}

// O_TRUNC, the same on x86 and arm64 (asm-generic's fcntl.h).
#define O_TRUNC 01000

// truncates says whether a finished open call asked to truncate the file
// (O_TRUNC, or creat); also when its flags cannot be read (openat2's
// struct in the caller's memory, gone since), so that such an open is
// recorded rather than folded.
static __always_inline bool truncates(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	switch ((int)ctx->id) {
	case NR_OPENAT:
		return syscall_arg(r, 2) & O_TRUNC;
	case NR_OPENAT2: {
		__u64 flags = 0;
		if (bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(r, 2)))
			return true;
		return flags & O_TRUNC;
	}
#ifdef NR_OPEN
	case NR_OPEN:
		return syscall_arg(r, 1) & O_TRUNC;
	case NR_CREAT:
		return true;
#endif
	}
	return true;
}

// Opens recently recorded, by session, process and file (the dentry on its
// mount, which is one path: hard links and bind mounts are other dentries
// or mounts) and the open file's flags and mode as the kernel set them.
// Another successful open of the same file the same way by the same
// process within FOLD_NS of the recorded one (by session_clock), while
// no tool call started or ended (call_slots), is folded: counted here and
// in the session's opens_folded, not made an event. The file's next
// record carries the count (repeats). The deny check runs on every open, folded or not, and a
// denied open is always an event. An entry the LRU evicts loses its
// pending count, never a denial; the session's total stays exact. The
// key's inode number and generation tell a freed and reused dentry apart
// from the file it was (a file system that hands a freed inode number out
// again at once, as ext4 and XFS do, gives the new file another
// generation: a random one on ext4, XFS and tmpfs). An open that
// truncates (O_TRUNC, creat) is never folded: the kernel clears O_TRUNC
// from the open file's flags, so the key alone would take it for a
// repeat of a plain open, and the truncation would go unrecorded.
#define FOLD_NS 1000000000ULL

// FOLD_NS in session_clock's units.
volatile const __u64 fold_span = FOLD_NS;

struct recent_key {
	__u64 cgid;
	__u64 dentry;
	__u64 mnt;
	__u64 ino;    // a dentry freed and reused for another file differs here
	__u32 tgid;   // each process's opens are its own
	__u32 flags;  // the open file's f_flags (the kernel's, not the caller's)
	__u32 fmode;  // and its f_mode (read, write, created...)
	__u32 gen;    // the inode's i_generation
};

struct recent_val {
	__u64 ts;       // when the file's last record was made (session_clock)
	__u64 folded;   // opens folded since the entry was made
	__u64 reported; // of which the records so far carried
	__u64 call;     // the session's call epoch at the last record
};

// The session's call epoch: the daemon moves it on each tools/call it
// forwards and at the call's end, so a file a new call opens is recorded
// for that call, never folded into an earlier call's record. One slot per
// registered session (struct session's call_slot, handed out by the
// daemon), in an array the daemon maps into its memory: moving the epoch
// is a store, not a syscall. A slot names its owner: a program that found
// a session just unregistered, whose slot already went to another
// session, sees another owner and folds nothing.
struct call_slot {
	__u64 epoch;  // written by the daemon with one atomic 64-bit store
	__u64 cgid;   // the owning session; 0: free
	__u64 urgent; // the session's urgent events put in the ring (new_urgent_event)
	__u64 read;   // of those, how many the daemon has read (it adds as it reads)
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SESSIONS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct call_slot);
} call_slots SEC(".maps");

// call_epoch's answer for a slot the session no longer owns: no record
// carries it, so no open is folded.
#define NO_EPOCH (~0ULL)

// call_epoch reads session s's epoch: the epoch first, then the owner.
// The daemon frees a slot by clearing its owner, then its epoch, and
// hands it out again only after, so an owner still s's own after the
// epoch was read vouches for the epoch (loads stay in order on x86; on
// arm64 a reordering could only misfold an open of a session being torn
// down, whose events the daemon drops; the deny check never reads it).
static __always_inline __u64 call_epoch(struct session *s, __u64 cgid)
{
	__u32 slot = s->call_slot;
	struct call_slot *c = bpf_map_lookup_elem(&call_slots, &slot);
	if (!c)
		return NO_EPOCH;
	__u64 epoch = *(volatile __u64 *)&c->epoch;
	if (*(volatile __u64 *)&c->cgid != cgid)
		return NO_EPOCH;
	return epoch;
}

// Set by the loader when the daemon maps call_slots into its memory and
// so counts the urgent events it reads (call_slot.read).
volatile const __u8 fair_share = 0;

// URGENT_SHARE is how many urgent events of one session may wait in the
// ring unread once the reserve runs low (more than URGENT_CONTESTED
// bytes unread): a session that renames faster than the daemon reads is
// refused room beyond it then (its renamer killed, the session marked,
// as for a full ring) rather than take the rest of the reserve that
// every session's renames need. While the ring has room, a burst of one
// session (an unpacker, a daemon starved of CPU) takes what it needs.
#define URGENT_SHARE 1024
#define URGENT_CONTESTED (EVENTS_BYTES - EVENTS_RESERVE / 2)

// new_urgent_event reserves an event the daemon must see (the change is
// unchecked without it), from the ring's reserve if need be, within
// session s's share of the ring.
static __always_inline struct event *new_urgent_event(struct session *s, __u64 cgid, __u32 kind)
{
	struct call_slot *c = 0;
	if (fair_share) {
		__u32 slot = s->call_slot;
		c = bpf_map_lookup_elem(&call_slots, &slot);
		if (c && *(volatile __u64 *)&c->cgid != cgid)
			c = 0; // not the session's slot (any more): no share to count in
		__u64 put = c ? *(volatile __u64 *)&c->urgent : 0, read = c ? *(volatile __u64 *)&c->read : 0;
		if (put > read && put - read >= URGENT_SHARE &&
		    bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > URGENT_CONTESTED) {
			count_lost(LOST_RINGBUF);
			return 0;
		}
	}
	struct event *e = new_event(cgid, kind, true);
	if (e && c) {
		__sync_fetch_and_add(&c->urgent, 1);
		e->counted = 1;
	}
	return e;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct recent_key);
	__type(value, struct recent_val);
} recent_opens SEC(".maps");

// open_file finds the file a successful open installed at fd: its path,
// and its flags and mode into k (what the kernel opened, whatever the
// caller's memory said).
static __always_inline bool open_file(int fd, struct path *p, struct recent_key *k)
{
	struct file **fds = bpf_get_current_task_btf()->files->fdt->fd;
	struct file *f = 0;
	if (fd < 0 || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return false;
	if (use_direct_reads()) {
		struct file *kf = kcast(f, struct file);
		p->dentry = kf->f_path.dentry;
		p->mnt = kf->f_path.mnt;
		k->flags = kf->f_flags;
		k->fmode = kf->f_mode;
		return p->dentry != 0;
	}
	bpf_core_read(p, sizeof(*p), &f->f_path);
	k->flags = BPF_CORE_READ(f, f_flags);
	k->fmode = BPF_CORE_READ(f, f_mode);
	return p->dentry != 0;
}

static __always_inline int open_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 cgid;
	struct session *s = watched_session(&cgid);
	if (!s)
		return 0;
	int ret = (int)ctx->ret;
	if (unchecked(s, ret >= 0))
		return 0;
	__u32 lens = s->deny_lens;
	struct path p = {};
	struct recent_key rk = {.cgid = cgid, .tgid = bpf_get_current_pid_tgid() >> 32};
	struct recent_val *rv = 0;
	__u64 now = session_clock();
	__u32 denied = 0;
	bool walked = false;
	__u64 epoch = NO_EPOCH;
	if (ret >= 0 && open_file(ret, &p, &rk)) {
		rk.dentry = (__u64)p.dentry;
		rk.mnt = (__u64)p.mnt;
		if (use_direct_reads()) {
			struct inode *in = kcast(p.dentry, struct dentry)->d_inode;
			rk.ino = in->i_ino;
			rk.gen = in->i_generation;
		} else {
			rk.ino = BPF_CORE_READ(p.dentry, d_inode, i_ino);
			rk.gen = BPF_CORE_READ(p.dentry, d_inode, i_generation);
		}
		epoch = call_epoch(s, cgid);
		rv = bpf_map_lookup_elem(&recent_opens, &rk);
		if (rv && now - rv->ts < fold_span && epoch != NO_EPOCH && rv->call == epoch && !truncates(ctx)) {
			// A repeat: the deny check alone, no path copied.
			denied = walk_path(0, cgid, lens, p.dentry, p.mnt);
			walked = true;
			if (!denied) {
				__sync_fetch_and_add(&rv->folded, 1);
				__sync_fetch_and_add(&s->opens_folded, 1);
				return 0;
			}
		}
	}
	bool admitted = in_budget(s);
	struct event *e = admitted ? new_event(cgid, EV_FILE_OPEN, false) : 0;
	if (ret >= 0 && p.dentry) {
		// The decision of the first walk stands (a second one could see
		// a rename in between); this one copies the path for the event.
		__u32 again = walk_path(e, cgid, lens, p.dentry, p.mnt);
		if (!walked)
			denied = again;
	}
	if (e && p.dentry && !denied) {
		if (rv) {
			__u64 folded = rv->folded;
			e->repeats = (__u32)(folded - rv->reported);
			rv->reported = folded;
			rv->ts = now;
			rv->call = epoch;
		} else {
			struct recent_val nv = {.ts = now, .call = epoch};
			bpf_map_update_elem(&recent_opens, &rk, &nv, BPF_ANY);
		}
	}
	if (denied) {
		// The open succeeded on a denied path: kill the process before
		// this call returns to user space. The descriptor is installed
		// already: another thread of the process can read through it
		// until the kill lands (only BPF LSM refuses the open itself).
		// Reported even over the session's budget.
		bpf_send_signal(SIGKILL);
		if (!e && (e = new_event(cgid, EV_FILE_OPEN, true)))
			walk_path(e, cgid, lens, p.dentry, p.mnt);
	}
	if (!e) {
		if (!admitted)
			throttled(s);
		return 0;
	}
	const char *name = 0;
	__u32 flags = 0;
	open_args(ctx, &name, &flags);
	e->result = ret;
	e->flags = flags;
	bpf_probe_read_user_str(e->hint, sizeof(e->hint), name);
	if (denied) {
		e->kind = EV_FILE_DENIED;
		e->killed = 1;
		e->rule = denied - 1;
	}
	bpf_ringbuf_submit(e, wakeup_flags(denied));
	return 0;
}

// One program for the four exits (openat, openat2, open, creat).
SEC("tracepoint/syscalls/sys_exit_openat")
int cage_exit_open(struct trace_event_raw_sys_exit *ctx) { return open_exit(ctx); }

// cage_unix_peer's fallback, attached to connect(2)'s exit beside
// cage_exit_connect only where cage_unix_peer is not (a kernel without
// the sk_data_ready tracepoint, Linux before 6.3, or without tp_btf):
// the call's descriptor is read from the task's saved registers.
SEC("tracepoint/syscalls/sys_exit_connect")
int cage_exit_connect_unix(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret != 0 || !under_parent())
		return 0;
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	unix_connect_exit((int)syscall_arg(r, 0));
	return 0;
}

/* ---- unlink, rmdir, mkdir, rename ---- */

// A directory operation in flight, by thread.
struct fsop_args {
	__u64 active; // set at entry, cleared at exit
	__u64 cgid;
	__u64 name;    // user pointer
	__u64 newname; // rename: user pointer
	__s32 dirfd;
	__s32 newdirfd; // rename, link: the new name's directory
	__u32 kind;
	__u32 flags;    // the call's flags or mode, for the record
	__u32 at_flags; // AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH: how the kernel took the name
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fsop_args);
} fsops SEC(".maps");

// The threads of sessions that changed files by name, and their
// session: the daemon's fanotify reader (daemon/renames) looks up the
// thread of each deletion and attribute change it reads here, and checks
// those of sessions where the kernel acted, whatever the name the call
// was given became (a symlink removed at once, bytes rewritten during the
// call) and whether or not the call's own event was made.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   // thread id
	__type(value, __u64); // session cgroup id
} changers SEC(".maps");

// note_changer puts the calling thread of session cgid in changers.
static __always_inline void note_changer(__u64 cgid)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *known = bpf_map_lookup_elem(&changers, &tid);
	if (!known || *known != cgid)
		bpf_map_update_elem(&changers, &tid, &cgid, BPF_ANY);
}

// The calls that change a file's times (utime, utimes, futimesat,
// utimensat) are not recorded (touch, tar and cp -p make them by the
// thousand); their thread is noted for the fanotify reader, which checks
// the change where the kernel made it (FAN_ATTRIB).
SEC("tracepoint/syscalls/sys_enter_utimensat")
int cage_enter_times(struct trace_event_raw_sys_enter *ctx)
{
	__u64 cgid;
	if (watched_session(&cgid))
		note_changer(cgid);
	return 0;
}

static __always_inline int fsop_enter_move(__u32 kind, int dirfd, const char *name, int newdirfd, const char *newname, __u32 flags, __u32 at_flags)
{
	__u64 cgid;
	if (!watched_session(&cgid))
		return 0;
	note_changer(cgid);
	struct fsop_args *a = bpf_task_storage_get(&fsops, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!a)
		return 0;
	a->cgid = cgid;
	a->name = (__u64)name;
	a->newname = (__u64)newname;
	a->dirfd = dirfd;
	a->newdirfd = newdirfd;
	a->kind = kind;
	a->flags = flags;
	a->at_flags = at_flags;
	a->active = 1;
	return 0;
}

static __always_inline int fsop_enter_at(__u32 kind, int dirfd, const char *name, __u32 flags, __u32 at_flags)
{
	return fsop_enter_move(kind, dirfd, name, dirfd, 0, flags, at_flags);
}

static __always_inline int fsop_enter(__u32 kind, int dirfd, const char *name, __u32 flags)
{
	return fsop_enter_at(kind, dirfd, name, flags, 0);
}

#define AT_REMOVEDIR 0x200

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int cage_enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = (__u32)ctx->args[2];
	return fsop_enter(flags & AT_REMOVEDIR ? EV_FILE_RMDIR : EV_FILE_UNLINK, (int)ctx->args[0], (const char *)ctx->args[1], flags);
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int cage_enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_UNLINK, AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_rmdir")
int cage_enter_rmdir(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_RMDIR, AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_mkdirat")
int cage_enter_mkdirat(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_MKDIR, (int)ctx->args[0], (const char *)ctx->args[1], (__u32)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int cage_enter_mkdir(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_MKDIR, AT_FDCWD, (const char *)ctx->args[0], (__u32)ctx->args[1]);
}

// renameat(2) and renameat2(2): (olddirfd, old, newdirfd, new[, flags]).
// The new name is relative to newdirfd; the event carries the base
// directory of the old name, and so does the daemon's check.
SEC("tracepoint/syscalls/sys_enter_renameat2")
int cage_enter_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_move(EV_FILE_RENAME, (int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2], (const char *)ctx->args[3], (__u32)ctx->args[4], 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int cage_enter_renameat(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_move(EV_FILE_RENAME, (int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2], (const char *)ctx->args[3], 0, 0);
}

// linkat(2): (olddirfd, old, newdirfd, new, flags); link(2): (old, new).
// A hard link gives a denied file a second name the deny check would not
// see: checked like rename.
SEC("tracepoint/syscalls/sys_enter_linkat")
int cage_enter_linkat(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_move(EV_FILE_LINK, (int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2], (const char *)ctx->args[3], (__u32)ctx->args[4], 0);
}

SEC("tracepoint/syscalls/sys_enter_link")
int cage_enter_link(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_move(EV_FILE_LINK, AT_FDCWD, (const char *)ctx->args[0], AT_FDCWD, (const char *)ctx->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_rename")
int cage_enter_rename(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_move(EV_FILE_RENAME, AT_FDCWD, (const char *)ctx->args[0], AT_FDCWD, (const char *)ctx->args[1], 0, 0);
}

// Changes to a file by name that leave it in place. They follow a
// symlink in the last name (truncate, chmod, chown, setxattr, removexattr)
// unless the call says not to (lchown, lsetxattr, lremovexattr,
// AT_SYMLINK_NOFOLLOW). AT_EMPTY_PATH with an empty name acts on dirfd,
// which the exit checks as the base directory.
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_EMPTY_PATH 0x1000

SEC("tracepoint/syscalls/sys_enter_truncate")
int cage_enter_truncate(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_TRUNCATE, AT_FDCWD, (const char *)ctx->args[0], 0);
}

// chmod(path, mode), fchmodat(dirfd, path, mode), fchmodat2(dirfd, path,
// mode, flags): the record's flags are the mode.
SEC("tracepoint/syscalls/sys_enter_chmod")
int cage_enter_chmod(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_CHMOD, AT_FDCWD, (const char *)ctx->args[0], (__u32)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_fchmodat")
int cage_enter_fchmodat(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_CHMOD, (int)ctx->args[0], (const char *)ctx->args[1], (__u32)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_fchmodat2")
int cage_enter_fchmodat2(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_at(EV_FILE_CHMOD, (int)ctx->args[0], (const char *)ctx->args[1], (__u32)ctx->args[2], (__u32)ctx->args[3]);
}

// chown(path, uid, gid), lchown, fchownat(dirfd, path, uid, gid, flags).
SEC("tracepoint/syscalls/sys_enter_chown")
int cage_enter_chown(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_CHOWN, AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_lchown")
int cage_enter_lchown(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_at(EV_FILE_CHOWN, AT_FDCWD, (const char *)ctx->args[0], 0, AT_SYMLINK_NOFOLLOW);
}

SEC("tracepoint/syscalls/sys_enter_fchownat")
int cage_enter_fchownat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = (__u32)ctx->args[4];
	return fsop_enter_at(EV_FILE_CHOWN, (int)ctx->args[0], (const char *)ctx->args[1], flags, flags);
}

// setxattr(path, ...), lsetxattr, removexattr(path, name), lremovexattr,
// and setxattrat/removexattrat(dirfd, path, at_flags, ...) (Linux 6.13).
SEC("tracepoint/syscalls/sys_enter_setxattr")
int cage_enter_setxattr(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_XATTR, AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_lsetxattr")
int cage_enter_lsetxattr(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_at(EV_FILE_XATTR, AT_FDCWD, (const char *)ctx->args[0], 0, AT_SYMLINK_NOFOLLOW);
}

SEC("tracepoint/syscalls/sys_enter_removexattr")
int cage_enter_removexattr(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter(EV_FILE_XATTR, AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_lremovexattr")
int cage_enter_lremovexattr(struct trace_event_raw_sys_enter *ctx)
{
	return fsop_enter_at(EV_FILE_XATTR, AT_FDCWD, (const char *)ctx->args[0], 0, AT_SYMLINK_NOFOLLOW);
}

SEC("tracepoint/syscalls/sys_enter_setxattrat")
int cage_enter_setxattrat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = (__u32)ctx->args[2];
	return fsop_enter_at(EV_FILE_XATTR, (int)ctx->args[0], (const char *)ctx->args[1], flags, flags);
}

SEC("tracepoint/syscalls/sys_enter_removexattrat")
int cage_enter_removexattrat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = (__u32)ctx->args[2];
	return fsop_enter_at(EV_FILE_XATTR, (int)ctx->args[0], (const char *)ctx->args[1], flags, flags);
}

// The name of a change over the session's budget, read to decide whether
// the daemon must check it (name_may_hit).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[HINT_LEN]);
} name_scratch SEC(".maps");

// name_may_hit says whether a successful change's name (read now from
// the caller's memory) could lead into a denied directory beyond what
// the kernel checked (the base directory): anything but one component
// that no denied component is as long as, for a call that does not
// follow a symlink in it. Over the session's budget, such a change is
// still reported for the daemon to check (see cage_exit_fsop). The name
// the kernel used may differ from the one read here (a sibling thread
// rewrites it during the call): the daemon's check has that race too.
static __noinline bool name_may_hit(__u64 name, __u32 kind, __u32 at_flags, __u32 lens)
{
	__u32 k = 0;
	char *buf = bpf_map_lookup_elem(&name_scratch, &k);
	if (!buf)
		return true;
	long n = bpf_probe_read_user_str(buf, HINT_LEN, (const char *)name);
	if (n < 0)
		return true;
	if (n <= 1)
		return false; // "": AT_EMPTY_PATH, the base directory itself
	if (n >= HINT_LEN)
		return true; // maybe cut short
	switch (kind) {
	case EV_FILE_TRUNCATE:
	case EV_FILE_CHMOD:
	case EV_FILE_CHOWN:
	case EV_FILE_XATTR:
		if (!(at_flags & AT_SYMLINK_NOFOLLOW))
			return true; // the last name may be a symlink
	}
	if (buf[0] == '.' && (n == 2 || (n == 3 && buf[1] == '.')))
		return true; // "." or ".."
	for (int i = 0; i < HINT_LEN - 1; i++) {
		if (i >= n - 1)
			break;
		if (buf[i] == '/')
			return true;
	}
	return (lens & deny_len_bit(n - 1)) != 0;
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int cage_exit_fsop(struct trace_event_raw_sys_exit *ctx)
{
	struct fsop_args args;
	if (!take_task(&fsops, &args, sizeof(args)))
		return 0;
	struct session *s = bpf_map_lookup_elem(&sessions, &args.cgid);
	if (!s)
		return 0;
	int ret = (int)ctx->ret;
	__u32 lens = s->deny_lens;
	// The base directory comes from the kernel; the names are hints. A
	// denied component in the base directory of a successful call kills
	// the task, as for opens, whatever the event budget. It is checked
	// whether the name is relative or not: the name is read from the
	// caller's memory at return, and a sibling thread may have changed it
	// since the kernel copied it (a '/' in front made the kernel's own
	// relative name look absolute and skip this check). A call with an
	// absolute name from a working directory (or dirfd) in a denied
	// directory is killed too.
	// A successful rename or link is checked by the daemon, which resolves
	// its names: its event is made whatever the session's budget, and
	// one that cannot be made (the ring buffer is full) fails closed.
	// Over the session's budget, a successful change whose name could
	// lead into a denied directory is reported all the same, marked
	// over_budget: the daemon checks it and records it only if it hits.
	// (Before, it was dropped unseen: a burst of failed opens let the
	// next unlink through a '/' or a symlink go unchecked.)
	// In a session whose writable mounts fanotify watches, the daemon
	// sees deletions and attribute changes where the kernel acted without
	// this event, and a mkdir makes an empty directory: only a truncate
	// (refused by the default seccomp profile) needs it then.
	bool daemon_checks = ret == 0 && (args.kind == EV_FILE_RENAME || args.kind == EV_FILE_LINK);
	bool covered = (s->flags & SESSION_CHANGES_WATCHED) && args.kind != EV_FILE_TRUNCATE;
	if (unchecked(s, ret == 0))
		return 0;
	struct event *e = 0;
	bool budget = in_budget(s);
	if (daemon_checks)
		e = new_urgent_event(s, args.cgid, args.kind);
	else if (budget)
		e = new_event(args.cgid, args.kind, false);
	else
		throttled(s); // (a denial below is reported all the same)
	// Not reported (over the budget, or the ring is full but for its
	// reserve): a successful change whose name the daemon had to check is
	// reported from the reserve (marked when over the budget), and fails
	// closed when the ring cannot take it.
	bool over = false;
	__u32 unreported = !e;
	asm volatile("" : "+r"(unreported)); // no (e | ret) == 0: the verifier refuses arithmetic on pointers
	if (unreported && ret == 0 && !daemon_checks && !covered && name_may_hit(args.name, args.kind, args.at_flags, lens)) {
		daemon_checks = true;
		over = !budget;
		e = new_urgent_event(s, args.cgid, args.kind);
	}
	if (!e && daemon_checks) {
		// Unreported: the caller dies now, and every later opener or
		// changer in the session, until the daemon sees the flag and
		// kills the session (see SESSION_UNCHECKED).
		s->flags |= SESSION_UNCHECKED; // racing writers all set this bit
		bpf_send_signal(SIGKILL);
		return 0;
	}
	__u32 denied = 0;
	if (e || ret == 0)
		denied = dir_path(e, args.cgid, lens, args.dirfd);
	if (ret != 0)
		denied = 0;
	if (denied) {
		bpf_send_signal(SIGKILL);
		if (!e && (e = new_event(args.cgid, args.kind, true)))
			dir_path(e, args.cgid, lens, args.dirfd);
	}
	if (!e)
		return 0;
	e->result = ret;
	e->flags = args.flags;
	e->at_flags = args.at_flags;
	e->dirfd = args.dirfd;
	e->newdirfd = args.newdirfd;
	e->over_budget = over;
	bpf_probe_read_user_str(e->hint, sizeof(e->hint), (const char *)args.name);
	if (args.newname)
		bpf_probe_read_user_str(e->hint2, sizeof(e->hint2), (const char *)args.newname);
	if (denied) {
		e->killed = 1;
		e->rule = denied - 1;
	}
	// A rename or link gives a file a new name: the daemon resolves the
	// caller's names as the kernel does (through symlinks) at once, so
	// these wake it like denials.
	bpf_ringbuf_submit(e, wakeup_flags(denied || args.kind == EV_FILE_RENAME || args.kind == EV_FILE_LINK));
	return 0;
}

/* ---- exec ---- */

#define ARGV_SLOTS 4
#define ARGV_SLOT_LEN (HINT_LEN / ARGV_SLOTS)

struct argv_head {
	char slot[ARGV_SLOTS][ARGV_SLOT_LEN];
};

// argv heads read at execve entry, by tgid (stable across de_thread).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); // a failed execve leaves its entry
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct argv_head);
} execs SEC(".maps");

static __always_inline int exec_enter(const char *const *argv)
{
	__u64 cgid;
	if (!watched_session(&cgid))
		return 0;
	struct argv_head h = {};
#pragma unroll
	for (int i = 0; i < ARGV_SLOTS; i++) {
		const char *arg = 0;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		bpf_probe_read_user_str(h.slot[i], ARGV_SLOT_LEN, arg);
	}
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_map_update_elem(&execs, &tgid, &h, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int cage_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return exec_enter((const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int cage_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return exec_enter((const char *const *)ctx->args[2]);
}

// The file mapped where the new image starts: an ELF's interpreter
// (PT_INTERP, ld.so), which the kernel opens and maps itself and which
// runs first, or the executable itself. Found by bpf_find_vma at the
// task's first instruction; 0 when it cannot be (no mapping there, or the
// mm busy).
struct first_file {
	__u64 file;
};

static long first_file_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	((struct first_file *)data)->file = (__u64)BPF_CORE_READ(vma, vm_file);
	return 0;
}

#if defined(__TARGET_ARCH_arm64)
struct user_pt_regs___mcpcage_arm64 {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
} __attribute__((preserve_access_index));
#endif

static __always_inline struct file *start_file(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(task);
#if defined(__TARGET_ARCH_arm64)
	__u64 ip = BPF_CORE_READ((struct user_pt_regs___mcpcage_arm64 *)r, pc);
#else
	__u64 ip = BPF_CORE_READ(r, ip);
#endif
	struct first_file ff = {};
	bpf_find_vma(task, ip, first_file_cb, &ff, 0);
	return (struct file *)ff.file;
}

// have_find_vma: the kernel has bpf_find_vma (5.17); on 5.15 and 5.16 the
// interpreter is not checked, and the call (dead code there) is removed
// by the verifier, so the programs still load.
#define have_find_vma() bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_find_vma)

SEC("raw_tracepoint/sched_process_exec")
int cage_exec(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 cgid;
	struct session *s = watched_session(&cgid);
	if (!s || unchecked(s, true)) // an exec opens a file too
		return 0;
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct file *f = BPF_CORE_READ(bprm, file);
	struct path p = {};
	if (f)
		bpf_core_read(&p, sizeof(p), &f->f_path);
	// The kernel opened the file that runs itself (no open(2) the open
	// hook sees), and its image is the process's memory from now on: an
	// executable under deny_paths would be read by running it (an
	// LD_PRELOAD library dumps the image). Checked like an open, before
	// the new image runs an instruction: a hit kills the task here, on
	// the budget or over it (found by a red-team helper).
	__u32 lens = s->deny_lens;
	__u32 denied = 0;
	if (p.dentry && lens)
		denied = walk_path(0, cgid, lens, p.dentry, p.mnt);
	// The interpreter an ELF names (PT_INTERP) is opened and mapped by the
	// kernel as well, and runs first: a copy of ld.so under deny_paths
	// ran (found by a review helper). The file at the first instruction is
	// checked the same way.
	struct file *sf = 0;
	if (!denied && lens && have_find_vma() && (sf = start_file()) && sf != f) {
		struct path ip = {};
		bpf_core_read(&ip, sizeof(ip), &sf->f_path);
		if (ip.dentry) {
			denied = walk_path(0, cgid, lens, ip.dentry, ip.mnt);
			if (denied)
				p = ip; // the event names the file that hit
		}
	}
	if (denied)
		bpf_send_signal(SIGKILL);
	else if (!admit_event(s))
		return 0;
	struct event *e = new_event(cgid, EV_EXEC, denied != 0);
	if (!e)
		return 0;
	if (denied) {
		e->killed = 1;
		e->rule = denied - 1;
	}
	// The file that runs, as the kernel opened it: its path walked from
	// its dentry, like an open's (audit grade). The name the caller gave
	// (a symlink, a relative name, /dev/fd/N) is only a hint: a server
	// chose it (found by a red-team helper: a symlink named
	// /tmp/innocent-tool ran /usr/bin/id, and the record said the former).
	const char *filename = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(e->hint2, sizeof(e->hint2), filename);
	if (p.dentry)
		walk_path(e, cgid, 0, p.dentry, p.mnt);
	// argv (read from the caller's memory at execve entry) is a hint.
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct argv_head *h = bpf_map_lookup_elem(&execs, &tgid);
	if (h) {
		__builtin_memcpy(e->hint, h, HINT_LEN);
		bpf_map_delete_elem(&execs, &tgid);
	}
	bpf_ringbuf_submit(e, wakeup_flags(denied));
	return 0;
}
