//go:build ignore

// mcpcage's listen control: a session with network = "host" may bind and
// accept on the host's addresses only where its server's `listen` list
// allows. Built with bpf2go (see gen.go); the loader (bind.go) shares
// cage.c's maps with it.
//
// - cgroup/bind4 and bind6 refuse (EPERM) a bind to a port that is not
//   allowed. Port 0 (the kernel picks an ephemeral port: UDP clients, a
//   TCP client choosing its source address) passes: it names no port a
//   host client could have been told about.
// - A TCP socket can still listen on an ephemeral port (bind to port 0,
//   or listen(2) on an unbound socket, which binds without the hook), and
//   the host can find it. cgroup_skb/ingress therefore drops every packet
//   that reaches a session's listening socket whose address is not
//   allowed: no host client completes a handshake with it. UDP needs no
//   such rule: every datagram a session sends is checked by the egress
//   hooks (sendmsg4/6, connect4/6), so a UDP socket can receive but never
//   answer outside the egress list.
// - cgroup/setsockopt refuses IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT
//   and IPV6_TRANSPARENT in every session: with them a socket binds to an
//   address that is not the host's (port 0 passes the bind hooks) and
//   sends from it, a spoofed source the egress hooks, which check only
//   the destination, let out (found by a red-team helper).
// - Unix sockets never reach these hooks (see the README's network section).
// - A session without host networking binds in its own network namespace,
//   freely; a socket of the host's passed to it (SCM_RIGHTS) is refused
//   any bind (cage.h's host_socket).
// - cgroup_skb/egress drops a session's IPv6 packets that carry a routing
//   header: a socket's IPV6_RTHDR option (a segment routing header needs
//   no privilege) sends each packet to the header's first segment, not to
//   the address the socket named, which is all the connect and sendmsg
//   hooks see. (IPv4's source route options need CAP_NET_RAW.)
//
// The allow-list is listen_allow, keyed by session, address and port;
// Register and Unregister (sessions.go) keep it with the session's other
// rules. Each denial is a net.denied event whose flags say bind or listen.

#include "cage.h"

// Why a listening socket's net.denied was reported (struct event's
// flags); bpf2go generates the Go constants (-type, see gen.go).
enum net_denied_reason {
	NET_DENIED_BIND = 1,   // bind(2) refused
	NET_DENIED_LISTEN = 2, // a packet to a listening socket dropped
	NET_DENIED_ROUTING = 3, // a packet with an IPv6 routing header dropped
	NET_DENIED_NONLOCAL = 4, // setsockopt(2) of IP(V6)_FREEBIND or _TRANSPARENT refused
};

// Keeps the enum in BTF for bpf2go's -type.
const enum net_denied_reason *unused_net_denied_reason __attribute__((unused));

// listen_key is one allowed local address (IPv4 as ::ffff:a.b.c.d) and
// port of a session.
struct listen_key {
	__u64 cgid;
	__u8 addr[16];
	__u16 port;
	__u16 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, __u32); // index in the server's listen list
} listen_allow SEC(".maps");

static __always_inline bool listen_allowed(__u64 cgid, __u8 *addr16, __u16 port)
{
	struct listen_key k = {.cgid = cgid, .port = port};
	__builtin_memcpy(k.addr, addr16, 16);
	return bpf_map_lookup_elem(&listen_allow, &k) != 0;
}

// put32 stores a network-order word read from the kernel byte by byte: a
// memcpy from a socket's fields becomes pointer arithmetic on the socket,
// which the verifier refuses.
static __always_inline void put32(__u8 *p, __u32 v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

// v4mapped writes ip (network order) as ::ffff:a.b.c.d.
static __always_inline void v4mapped(__u8 *addr16, __u32 ip)
{
	__builtin_memset(addr16, 0, 10);
	addr16[10] = 0xff;
	addr16[11] = 0xff;
	put32(addr16 + 12, ip);
}

static __always_inline void fill_denied(struct event *e, __u16 family, __u8 *addr16, __u16 port, __u8 proto, __u32 why)
{
	e->result = 0;
	e->flags = why;
	e->family = family;
	e->port = port;
	e->proto = proto;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (family == AF_INET)
		__builtin_memcpy(e->addr, addr16 + 12, 4);
	else
		__builtin_memcpy(e->addr, addr16, 16);
	e->comp[0][0] = 0;
}

static __always_inline int check_bind(struct bpf_sock_addr *ctx, __u16 family, __u8 *addr16)
{
	__u64 cgid;
	struct session *s = current_session(&cgid);
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	__u32 rule = s ? 0 : UNREGISTERED_RULE; // fail closed
	if (s && !(s->flags & SESSION_HOST_NET)) {
		// Own network namespace: nothing of the host to bind, unless the
		// socket is the host's (passed in): refused, port 0 too.
		if (!host_socket(ctx))
			return 1;
		rule = HOST_NETNS_RULE;
	} else if (s && (port == 0 || listen_allowed(cgid, addr16, port))) {
		return 1;
	}
	// Denials are always reported (no budget), as for connect.
	struct event *e = new_event(cgid, EV_NET_DENIED, false);
	if (e) {
		fill_denied(e, family, addr16, port, proto, NET_DENIED_BIND);
		e->rule = rule;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return 0;
}

SEC("cgroup/bind4")
int cage_bind4(struct bpf_sock_addr *ctx)
{
	__u8 addr16[16];
	v4mapped(addr16, ctx->user_ip4);
	return check_bind(ctx, AF_INET, addr16);
}

SEC("cgroup/bind6")
int cage_bind6(struct bpf_sock_addr *ctx)
{
	__u32 ip6[4];
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	// IPv4-mapped addresses (::ffff:a.b.c.d) follow the IPv4 rules: the
	// key is the same.
	__u16 family = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff) ? AF_INET : AF_INET6;
	return check_bind(ctx, family, (__u8 *)ip6);
}

// Packets arrive in softirq context: the event names no task.
static __always_inline struct event *new_net_event(__u64 cgid)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RINGBUF);
		return 0;
	}
	e->ts = bpf_ktime_get_ns();
	e->cgid = cgid;
	e->pid = 0;
	e->tgid = 0;
	e->kind = EV_NET_DENIED;
	e->rule = 0;
	e->ncomp = 0;
	e->killed = 0;
	e->hint[0] = 0;
	e->hint2[0] = 0;
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	return e;
}

SEC("cgroup_skb/ingress")
int cage_listen_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->state != BPF_TCP_LISTEN)
		return 1; // only a listening socket takes new connections
	// The session is the socket's (the cgroup it was made in), not its
	// holder's: a socket passed to another session keeps its maker's
	// listen list, and one made in an isolated session is in that
	// session's own network namespace.
	__u64 cgid = bpf_skb_ancestor_cgroup_id(skb, session_level);
	struct session *s = bpf_map_lookup_elem(&sessions, &cgid);
	if (s && !(s->flags & SESSION_HOST_NET))
		return 1;
	// Every field is read before branching: the compiler would otherwise
	// pick the offset in a register, which the verifier refuses.
	__u16 family = sk->family;
	__u32 ip4 = sk->src_ip4;
	__u32 w0 = sk->src_ip6[0], w1 = sk->src_ip6[1], w2 = sk->src_ip6[2], w3 = sk->src_ip6[3];
	__u8 addr16[16];
	if (family == AF_INET) {
		v4mapped(addr16, ip4);
	} else {
		put32(addr16, w0);
		put32(addr16 + 4, w1);
		put32(addr16 + 8, w2);
		put32(addr16 + 12, w3);
		if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff))
			family = AF_INET;
	}
	__u16 port = sk->src_port; // host order
	if (s && listen_allowed(cgid, addr16, port))
		return 1;
	// A host client retransmits its SYN: these reports are budgeted.
	if (s && !admit_event(s))
		return 0;
	struct event *e = new_net_event(cgid);
	if (e) {
		fill_denied(e, family, addr16, port, sk->protocol, NET_DENIED_LISTEN);
		e->rule = s ? 0 : UNREGISTERED_RULE;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return 0;
}

#define ETH_P_IPV6 0x86DD
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_DEST 60
// How many extension headers are looked through for a routing header
// (hop-by-hop and destination options may come before it).
#define EXT_HEADERS 8

SEC("cgroup_skb/egress")
int cage_routing_egress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return 1;
	// The data starts at the IPv6 header: its next header at byte 6.
	__u8 next = 0;
	if (bpf_skb_load_bytes(skb, 6, &next, 1))
		return 1;
	__u32 off = 40;
	bool routed = false;
#pragma clang loop unroll(full)
	for (int i = 0; i < EXT_HEADERS; i++) {
		if (next == NEXTHDR_ROUTING) {
			routed = true;
			break;
		}
		if (next != NEXTHDR_HOP && next != NEXTHDR_DEST)
			break;
		__u8 h[2];
		if (bpf_skb_load_bytes(skb, off, h, 2))
			break;
		next = h[0];
		off += ((__u32)h[1] + 1) * 8;
	}
	if (!routed)
		return 1;
	// Dropped whatever the session (registered or not: fail closed); the
	// report says where the packet would have gone first.
	__u64 cgid = bpf_skb_ancestor_cgroup_id(skb, session_level);
	struct session *s = bpf_map_lookup_elem(&sessions, &cgid);
	if (s && !admit_event(s))
		return 0;
	__u8 daddr[16];
	if (bpf_skb_load_bytes(skb, 24, daddr, 16))
		return 0;
	__u8 proto = 0;
	struct bpf_sock *sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		proto = sk->protocol;
	struct event *e = new_net_event(cgid);
	if (e) {
		fill_denied(e, AF_INET6, daddr, 0, proto, NET_DENIED_ROUTING);
		e->rule = s ? 0 : UNREGISTERED_RULE;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return 0;
}

#define SOL_IP 0
#define SOL_IPV6 41
#define IP_FREEBIND 15
#define IP_TRANSPARENT 19
#define IPV6_TRANSPARENT 75
#define IPV6_FREEBIND 78

SEC("cgroup/setsockopt")
int cage_setsockopt(struct bpf_sockopt *ctx)
{
	int level = ctx->level, optname = ctx->optname;
	bool nonlocal = (level == SOL_IP && (optname == IP_FREEBIND || optname == IP_TRANSPARENT)) ||
			(level == SOL_IPV6 && (optname == IPV6_FREEBIND || optname == IPV6_TRANSPARENT));
	if (!nonlocal)
		return 1; // the option's value is left as it is (optlen untouched)
	__u64 cgid;
	struct session *s = current_session(&cgid);
	struct event *e = new_event(cgid, EV_NET_DENIED, false);
	if (e) {
		__u8 none[16] = {};
		fill_denied(e, level == SOL_IP ? AF_INET : AF_INET6, none, 0, 0, NET_DENIED_NONLOCAL);
		e->rule = s ? 0 : UNREGISTERED_RULE;
		e->port = optname;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return 0; // EPERM
}
