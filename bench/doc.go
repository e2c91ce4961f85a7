// Package bench measures what an MCP client pays for mcpcage, side by side
// with the same server spawned directly and under a peer sandbox
// (Anthropic's sandbox-runtime, srt). `make bench` runs it as root; see
// bench/README.md for what each figure means.
//
// Every figure comes from one run, with the paths taken round-robin: each
// round runs every path once, in an order rotated from round to round, and
// a figure is the median over the rounds with their min..max. The client
// is the official TypeScript SDK (client.mjs), the server the official
// server-everything; the 16 MiB row uses mcpcage's Go test server, which
// has a tool that answers that much. Under the table, a targets section
// compares the medians with the targets (added latency, against
// this disk's measured fdatasync for audit_sync "always"; throughput with
// 32 in flight against direct's; cold start against srt's; the daemon's
// memory at 50 sessions) and says by how much each is met or missed. With
// 50 sessions open, all of them calling at once give the scale figures:
// per-call p50 and p99, and the daemon's CPU time per call.
//
// The harness starts and owns everything it measures: a private
// containerd, three mcpcaged (audit_sync "always", "batch", and a fresh
// one for the memory figures), and the clients. It becomes a child
// subreaper, so that every process its children leave behind is its own,
// and stops all of them before it returns, on error and on SIGINT/SIGTERM
// too. Nothing it starts listens on, or connects to, a non-loopback
// address: the daemons' metrics listeners are off, the servers run with no
// network (mcpcage's network = "none"; srt with no allowed domain).
//
// Caveats: the numbers are this machine's, with whatever else it runs at
// the same time; RSS counts shared pages once per process (PSS, next to
// it, splits them); the client's own cost (Node.js, the SDK's schema
// checks) is in every latency, so compare the added microseconds.
package bench
