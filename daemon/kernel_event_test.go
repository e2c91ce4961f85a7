package daemon

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// testCgroup is the cgroup id of the kernel fixture's session.
const testCgroup = 4242

// kernelFixture is a daemon with one session (s1 of server fs, in cgroup
// testCgroup), without eBPF: what onKernelEvent needs and no more.
type kernelFixture struct {
	d     *Daemon
	s     *session
	trace *tracer // subscribed to every session

	mu      sync.Mutex
	records []audit.Record // as written to the audit log
}

func newKernelFixture(t testing.TB, srv *config.Server, opts audit.Options) *kernelFixture {
	t.Helper()
	f := &kernelFixture{}
	discard := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	opts.Path, opts.HeadPath = filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit.head")
	if opts.OnRecord == nil {
		opts.OnRecord = func(e audit.Entry) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.records = append(f.records, e.Record())
		}
	}
	al, err := audit.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = al.Close() }) // a test that read the records closed it already
	srv.Name = "fs"
	f.s = &session{digests: testDigests, id: "s1", server: "fs", srv: srv, peer: Peer{UID: 1000}, user: "alice", agent: "cd",
		agentP: identity.Process{PID: 7, StartTime: 9}, log: discard, policyStop: make(chan struct{}),
		relay: relay.New(relay.Options{Logger: discard}, relay.Streams{})}
	f.d = &Daemon{log: discard, audit: al, metrics: metrics.New(), byCgroup: map[uint64]*session{testCgroup: f.s}}
	f.trace = &tracer{root: true, ch: make(chan []byte, 16)}
	f.d.tracers.add(f.trace)
	return f
}

// written closes the audit log and returns the records written, without
// the chain's fields.
func (f *kernelFixture) written(t *testing.T) []audit.Record {
	t.Helper()
	if err := f.d.audit.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.records {
		delete(r, "seq")
		delete(r, "prev")
		delete(r, "hash")
	}
	return f.records
}

// traced returns the events the trace subscriber received.
func (f *kernelFixture) traced(t *testing.T) []KernelEvent {
	t.Helper()
	var out []KernelEvent
	for {
		select {
		case b := <-f.trace.ch:
			var ke KernelEvent
			if err := json.Unmarshal(b, &ke); err != nil {
				t.Fatalf("trace line %s: %v", b, err)
			}
			out = append(out, ke)
		default:
			return out
		}
	}
}

// inFlight runs the session's relay and has the client send tools/call
// id, which the server never answers.
func (f *kernelFixture) inFlight(t *testing.T, id string) {
	t.Helper()
	cinR, cinW := io.Pipe()
	sinR, sinW := io.Pipe()
	soutR, soutW := io.Pipe()
	f.s.relay = relay.New(relay.Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		relay.Streams{ClientIn: cinR, ClientOut: io.Discard, ServerIn: sinW, ServerOut: soutR})
	done := make(chan struct{})
	go func() { f.s.relay.Run(nil); close(done) }()
	t.Cleanup(func() { _ = cinW.Close(); _ = soutW.Close(); <-done })
	go func() {
		_, _ = io.WriteString(cinW, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"read"}}`+"\n")
	}()
	buf := make([]byte, 4096)
	if _, err := sinR.Read(buf); err != nil { // the relay has recorded the call when it forwards it
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, sinR) }()
}

var (
	kernelT0   = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	kernelTime = "2026-01-02T03:04:05.000000006Z"
)

// wantRecord is the audit record of a kernel event of session s1 by
// node[42]: fields beyond the session's and the task's.
func wantRecord(typ string, fields audit.Record) audit.Record {
	r := audit.Record{"type": typ, "session": "s1", "agent": "cd", "agent_instance": "7@9", "user": "alice", "server": "fs",
		"time": kernelTime, "pid": uint32(42), "comm": "node"}
	for k, v := range fields {
		r[k] = v
	}
	return r
}

// wantTraced is the trace event of session s1 by node[42].
func wantTraced(ke KernelEvent) KernelEvent {
	ke.Time, ke.Session, ke.Server, ke.User, ke.Pid, ke.Comm = kernelT0, "s1", "fs", 1000, 42, "node"
	return ke
}

func i32(v int32) *int32 { return &v }

func TestOnKernelEvent(t *testing.T) {
	ssh := []string{"**/.ssh/**"}
	egress := []string{"example.com:443", "8.8.8.8:53"}
	web := netip.MustParseAddrPort("93.184.216.34:443")
	tests := []struct {
		name   string
		ev     bpf.Event // Time, Tgid and Comm filled in
		srv    config.Server
		calls  []string     // tools/call ids in flight
		noTask bool         // an event from softirq: no pid, no comm
		record audit.Record // nil: none
		trace  *KernelEvent // nil: none
		killed string       // why the session was stopped ("": it was not)
		denied int64        // the session's kernel denials
	}{
		{
			name:   "file open",
			ev:     bpf.Event{Kind: bpf.KindFileOpen, Path: "/etc/hosts", Hint: "/etc/hosts", Flags: 0x80000, Result: 3},
			record: wantRecord("file.open", audit.Record{"path": "/etc/hosts", "hint": "/etc/hosts", "flags": uint32(0x80000), "result": int32(3)}),
			trace:  &KernelEvent{Type: "file.open", Path: "/etc/hosts", Hint: "/etc/hosts", Flags: 0x80000, Result: i32(3)},
		},
		{
			name:   "file open failed",
			ev:     bpf.Event{Kind: bpf.KindFileOpen, Hint: "missing", Result: -2},
			record: wantRecord("file.open", audit.Record{"hint": "missing", "result": int32(-2), "error": "ENOENT"}),
			trace:  &KernelEvent{Type: "file.open", Hint: "missing", Result: i32(-2), Error: "ENOENT"},
		},
		{
			name:  "file open during a tools/call",
			ev:    bpf.Event{Kind: bpf.KindFileOpen, Path: "/w/a", Hint: "a", Result: 4},
			calls: []string{`"c-1"`},
			record: wantRecord("file.open", audit.Record{"path": "/w/a", "hint": "a", "result": int32(4),
				"tool_calls": []string{`"c-1"`}}),
			trace: &KernelEvent{Type: "file.open", Path: "/w/a", Hint: "a", Result: i32(4), InFlight: []string{`"c-1"`}},
		},
		{
			name: "file denied by BPF LSM",
			ev: bpf.Event{Kind: bpf.KindFileDenied, Path: "/home/u/.ssh/id_rsa", Hint: "/home/u/.ssh/id_rsa",
				Result: -13},
			srv: config.Server{DenyPaths: &ssh},
			record: wantRecord("file.denied", audit.Record{"path": "/home/u/.ssh/id_rsa", "hint": "/home/u/.ssh/id_rsa",
				"result": int32(-13), "error": "EACCES", "action": "EACCES", "rule": "deny_paths **/.ssh/**"}),
			trace: &KernelEvent{Type: "file.denied", Path: "/home/u/.ssh/id_rsa", Hint: "/home/u/.ssh/id_rsa", Result: i32(-13),
				Error: "EACCES", Action: "EACCES", Rule: "deny_paths **/.ssh/**"},
			denied: 1,
		},
		{
			name: "file open killed",
			ev: bpf.Event{Kind: bpf.KindFileDenied, Path: "/home/u/.ssh/id_rsa", Hint: "../.ssh/id_rsa", Flags: 0x80000,
				Result: 5, Killed: true},
			srv: config.Server{DenyPaths: &ssh},
			record: wantRecord("file.denied", audit.Record{"path": "/home/u/.ssh/id_rsa", "hint": "../.ssh/id_rsa",
				"flags": uint32(0x80000), "result": int32(5), "action": "SIGKILL, session stopped", "rule": "deny_paths **/.ssh/**",
				"touched": "/home/u/.ssh/id_rsa"}),
			trace: &KernelEvent{Type: "file.denied", Path: "/home/u/.ssh/id_rsa", Hint: "../.ssh/id_rsa", Flags: 0x80000,
				Result: i32(5), Action: "SIGKILL, session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it opened /home/u/.ssh/id_rsa, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name: "unlink over the budget: checked, not recorded",
			ev:   bpf.Event{Kind: bpf.KindUnlink, Dir: "/work", Hint: "d/tmp.txt", Path: "/work/d/tmp.txt", OverBudget: true},
			srv:  config.Server{DenyPaths: &ssh},
		},
		{
			name: "unlink over the budget into a denied directory",
			ev:   bpf.Event{Kind: bpf.KindUnlink, Dir: "/work", Hint: ".ssh/id_rsa", Path: "/work/.ssh/id_rsa", OverBudget: true},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("file.unlink", audit.Record{"path": "/work/.ssh/id_rsa", "hint": ".ssh/id_rsa", "result": int32(0),
				"action": "session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/work/.ssh/id_rsa"}),
			trace: &KernelEvent{Type: "file.unlink", Path: "/work/.ssh/id_rsa", Hint: ".ssh/id_rsa", Result: i32(0),
				Action: "session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it removed /work/.ssh/id_rsa, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name: "truncate in a denied directory",
			ev:   bpf.Event{Kind: bpf.KindTruncate, Dir: "/work", Hint: ".ssh/id_rsa", Path: "/work/.ssh/id_rsa"},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("file.truncate", audit.Record{"path": "/work/.ssh/id_rsa", "hint": ".ssh/id_rsa", "result": int32(0),
				"action": "session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/work/.ssh/id_rsa"}),
			trace: &KernelEvent{Type: "file.truncate", Path: "/work/.ssh/id_rsa", Hint: ".ssh/id_rsa", Result: i32(0),
				Action: "session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it truncated /work/.ssh/id_rsa, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name:   "chmod elsewhere",
			ev:     bpf.Event{Kind: bpf.KindChmod, Dir: "/work", Hint: "run.sh", Path: "/work/run.sh", Flags: 0o755},
			srv:    config.Server{DenyPaths: &ssh},
			record: wantRecord("file.chmod", audit.Record{"path": "/work/run.sh", "hint": "run.sh", "result": int32(0), "flags": uint32(0o755)}),
			trace:  &KernelEvent{Type: "file.chmod", Path: "/work/run.sh", Hint: "run.sh", Result: i32(0), Flags: 0o755},
		},
		{
			name:   "unlink of a relative name",
			ev:     bpf.Event{Kind: bpf.KindUnlink, Dir: "/work", Hint: "tmp.txt", Path: "/work/tmp.txt"},
			srv:    config.Server{DenyPaths: &ssh},
			record: wantRecord("file.unlink", audit.Record{"path": "/work/tmp.txt", "hint": "tmp.txt", "result": int32(0)}),
			trace:  &KernelEvent{Type: "file.unlink", Path: "/work/tmp.txt", Hint: "tmp.txt", Result: i32(0)},
		},
		{
			name: "unlink of a relative name in a denied directory",
			ev:   bpf.Event{Kind: bpf.KindUnlink, Dir: "/home/u", Hint: ".ssh/known_hosts", Path: "/home/u/.ssh/known_hosts"},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("file.unlink", audit.Record{"path": "/home/u/.ssh/known_hosts", "hint": ".ssh/known_hosts",
				"result": int32(0), "action": "session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/home/u/.ssh/known_hosts"}),
			trace: &KernelEvent{Type: "file.unlink", Path: "/home/u/.ssh/known_hosts", Hint: ".ssh/known_hosts", Result: i32(0),
				Action: "session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it removed /home/u/.ssh/known_hosts, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name:   "failed mkdir",
			ev:     bpf.Event{Kind: bpf.KindMkdir, Dir: "/home/u", Hint: ".ssh", Path: "/home/u/.ssh", Flags: 0o755, Result: -17},
			srv:    config.Server{DenyPaths: &ssh},
			record: wantRecord("file.mkdir", audit.Record{"path": "/home/u/.ssh", "hint": ".ssh", "flags": uint32(0o755), "result": int32(-17), "error": "EEXIST"}),
			trace:  &KernelEvent{Type: "file.mkdir", Path: "/home/u/.ssh", Hint: ".ssh", Flags: 0o755, Result: i32(-17), Error: "EEXIST"},
		},
		{
			name: "rename of relative names",
			ev:   bpf.Event{Kind: bpf.KindRename, Dir: "/work", Hint: "a.txt", NewHint: "b.txt", Path: "/work/a.txt"},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("file.rename", audit.Record{"path": "/work/a.txt", "hint": "a.txt", "to": "/work/b.txt",
				"result": int32(0)}),
			trace: &KernelEvent{Type: "file.rename", Path: "/work/a.txt", Hint: "a.txt", To: "/work/b.txt", Result: i32(0)},
		},
		{
			name: "rename into a denied directory",
			ev:   bpf.Event{Kind: bpf.KindRename, Dir: "/work", Hint: "a.txt", NewHint: ".ssh/authorized_keys", Path: "/work/a.txt"},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("file.rename", audit.Record{"path": "/work/a.txt", "hint": "a.txt", "to": "/work/.ssh/authorized_keys",
				"result": int32(0), "action": "session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/work/.ssh/authorized_keys"}),
			trace: &KernelEvent{Type: "file.rename", Path: "/work/a.txt", Hint: "a.txt", To: "/work/.ssh/authorized_keys", Result: i32(0),
				Action: "session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it renamed /work/a.txt (that is /work/.ssh/authorized_keys), which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name: "link out of a denied directory, killed",
			ev: bpf.Event{Kind: bpf.KindLink, Dir: "/home/u/.ssh", Hint: "id_rsa", NewHint: "/tmp/x", Path: "/home/u/.ssh/id_rsa",
				Killed: true},
			srv: config.Server{DenyPaths: &ssh},
			record: wantRecord("file.link", audit.Record{"path": "/home/u/.ssh/id_rsa", "hint": "id_rsa", "to": "/tmp/x",
				"result": int32(0), "action": "SIGKILL, session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/home/u/.ssh/id_rsa"}),
			trace: &KernelEvent{Type: "file.link", Path: "/home/u/.ssh/id_rsa", Hint: "id_rsa", To: "/tmp/x", Result: i32(0),
				Action: "SIGKILL, session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it linked /home/u/.ssh/id_rsa, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name: "connect with the handshake's result",
			ev:   bpf.Event{Kind: bpf.KindConnect, Addr: web, Proto: 6, Outcome: bpf.ConnectHandshake, Allowed: true},
			srv:  config.Server{Egress: egress},
			record: wantRecord("net.connect", audit.Record{"addr": "93.184.216.34:443", "proto": "tcp", "outcome": "handshake",
				"result": int32(0), "rule": "egress example.com:443"}),
			trace: &KernelEvent{Type: "net.connect", Addr: "93.184.216.34:443", Proto: "tcp", Outcome: "handshake", Result: i32(0),
				Rule: "egress example.com:443"},
		},
		{
			name: "connect refused",
			ev:   bpf.Event{Kind: bpf.KindConnect, Addr: web, Proto: 6, Outcome: bpf.ConnectSyscall, Result: -111, Allowed: true},
			srv:  config.Server{Egress: egress},
			record: wantRecord("net.connect", audit.Record{"addr": "93.184.216.34:443", "proto": "tcp", "outcome": "connect",
				"result": int32(-111), "error": "ECONNREFUSED", "rule": "egress example.com:443"}),
			trace: &KernelEvent{Type: "net.connect", Addr: "93.184.216.34:443", Proto: "tcp", Outcome: "connect", Result: i32(-111),
				Error: "ECONNREFUSED", Rule: "egress example.com:443"},
		},
		{
			name: "connect without a result",
			ev: bpf.Event{Kind: bpf.KindConnect, Addr: netip.MustParseAddrPort("[::1]:8080"), Proto: 6, Outcome: bpf.ConnectNoResult,
				Rule: 0xffff, Allowed: true},
			srv:    config.Server{Egress: egress},
			record: wantRecord("net.connect", audit.Record{"addr": "[::1]:8080", "proto": "tcp", "outcome": "no_result"}),
			trace:  &KernelEvent{Type: "net.connect", Addr: "[::1]:8080", Proto: "tcp", Outcome: "no_result"},
		},
		{
			name: "connect denied",
			ev:   bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("1.2.3.4:22"), Proto: 6},
			srv:  config.Server{Egress: egress},
			record: wantRecord("net.denied", audit.Record{"addr": "1.2.3.4:22", "proto": "tcp", "action": "EPERM",
				"rule": "not in egress allow-list"}),
			trace:  &KernelEvent{Type: "net.denied", Addr: "1.2.3.4:22", Proto: "tcp", Action: "EPERM", Rule: "not in egress allow-list"},
			denied: 1,
		},
		{
			name: "bind denied",
			ev:   bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("0.0.0.0:8080"), Proto: 6, Flags: bpf.NetDeniedBind},
			record: wantRecord("net.bind_denied", audit.Record{"addr": "0.0.0.0:8080", "proto": "tcp", "action": "EPERM",
				"rule": "not in listen allow-list"}),
			trace: &KernelEvent{Type: "net.bind_denied", Addr: "0.0.0.0:8080", Proto: "tcp", Action: "EPERM",
				Rule: "not in listen allow-list"},
			denied: 1,
		},
		{
			name: "connect denied: a socket of the host's network namespace in an isolated session",
			ev:   bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("169.254.169.254:80"), Proto: 6, Rule: bpf.HostNetnsRule},
			record: wantRecord("net.denied", audit.Record{"addr": "169.254.169.254:80", "proto": "tcp", "action": "EPERM",
				"rule": hostSocketRule}),
			trace:  &KernelEvent{Type: "net.denied", Addr: "169.254.169.254:80", Proto: "tcp", Action: "EPERM", Rule: hostSocketRule},
			denied: 1,
		},
		{
			name: "bind denied: a socket of the host's network namespace in an isolated session",
			ev: bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("127.0.0.1:0"), Proto: 6, Flags: bpf.NetDeniedBind,
				Rule: bpf.HostNetnsRule},
			record: wantRecord("net.bind_denied", audit.Record{"addr": "127.0.0.1:0", "proto": "tcp", "action": "EPERM",
				"rule": hostSocketRule}),
			trace:  &KernelEvent{Type: "net.bind_denied", Addr: "127.0.0.1:0", Proto: "tcp", Action: "EPERM", Rule: hostSocketRule},
			denied: 1,
		},
		{
			name:   "listen denied (no task: softirq)",
			ev:     bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("[::]:40001"), Proto: 6, Flags: bpf.NetDeniedListen},
			noTask: true,
			record: wantRecord("net.listen_denied", audit.Record{"pid": uint32(0), "comm": "", "addr": "[::]:40001", "proto": "tcp",
				"action": "dropped", "rule": "not in listen allow-list"}),
			trace: &KernelEvent{Type: "net.listen_denied", Addr: "[::]:40001", Proto: "tcp", Action: "dropped",
				Rule: "not in listen allow-list"},
			denied: 1,
		},
		{
			name:   "a packet with a routing header dropped (no task: the packet's socket)",
			ev:     bpf.Event{Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("[fd00::2]:0"), Proto: 17, Flags: bpf.NetDeniedRouting},
			noTask: true,
			record: wantRecord("net.denied", audit.Record{"pid": uint32(0), "comm": "", "addr": "fd00::2", "proto": "udp", "action": "dropped",
				"rule": "IPv6 routing header: the packet would go to fd00::2, not where the socket was connected or sent (the egress allow-list's decision)"}),
			trace: &KernelEvent{Type: "net.denied", Addr: "fd00::2", Proto: "udp", Action: "dropped",
				Rule: "IPv6 routing header: the packet would go to fd00::2, not where the socket was connected or sent (the egress allow-list's decision)"},
			denied: 1,
		},
		{
			name:   "udp send",
			ev:     bpf.Event{Kind: bpf.KindUDPSend, Addr: netip.MustParseAddrPort("8.8.8.8:53"), Proto: 17, Rule: 1, Result: 1, Allowed: true},
			srv:    config.Server{Egress: egress},
			record: wantRecord("net.udp_send", audit.Record{"addr": "8.8.8.8:53", "proto": "udp", "rule": "egress 8.8.8.8:53"}),
			trace:  &KernelEvent{Type: "net.udp_send", Addr: "8.8.8.8:53", Proto: "udp", Rule: "egress 8.8.8.8:53"},
		},
		{
			name:   "unix connect",
			ev:     bpf.Event{Kind: bpf.KindUnixConnect, Path: "/var/tmp/app/s.sock", Proto: 1, Allowed: true},
			srv:    config.Server{DenyPaths: &ssh},
			record: wantRecord("net.unix_connect", audit.Record{"path": "/var/tmp/app/s.sock", "proto": "unix_stream"}),
			trace:  &KernelEvent{Type: "net.unix_connect", Path: "/var/tmp/app/s.sock", Proto: "unix_stream"},
		},
		{
			name: "unix connect killed",
			ev: bpf.Event{Kind: bpf.KindUnixConnect, Path: "/home/u/.ssh/cm-git@host:22", Proto: 5, Allowed: true,
				Killed: true},
			srv: config.Server{DenyPaths: &ssh},
			record: wantRecord("net.unix_connect", audit.Record{"path": "/home/u/.ssh/cm-git@host:22", "proto": "unix_seqpacket",
				"action": "SIGKILL, session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/home/u/.ssh/cm-git@host:22"}),
			trace: &KernelEvent{Type: "net.unix_connect", Path: "/home/u/.ssh/cm-git@host:22", Proto: "unix_seqpacket",
				Action: "SIGKILL, session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it connected to the unix socket /home/u/.ssh/cm-git@host:22, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name: "unix datagram killed",
			ev:   bpf.Event{Kind: bpf.KindUnixSend, Path: "/home/u/.ssh/agent", Proto: 2, Allowed: true, Killed: true},
			srv:  config.Server{DenyPaths: &ssh},
			record: wantRecord("net.unix_send", audit.Record{"path": "/home/u/.ssh/agent", "proto": "unix_dgram",
				"action": "SIGKILL, session stopped", "rule": "deny_paths **/.ssh/**", "touched": "/home/u/.ssh/agent"}),
			trace: &KernelEvent{Type: "net.unix_send", Path: "/home/u/.ssh/agent", Proto: "unix_dgram",
				Action: "SIGKILL, session stopped", Rule: "deny_paths **/.ssh/**"},
			killed: `it sent a datagram to the unix socket /home/u/.ssh/agent, which deny_paths rule "**/.ssh/**" forbids`,
			denied: 1,
		},
		{
			name:   "exec",
			ev:     bpf.Event{Kind: bpf.KindExec, Path: "/usr/bin/git", Argv: []string{"git", "status"}},
			record: wantRecord("process.exec", audit.Record{"path": "/usr/bin/git", "argv": []string{"git", "status"}}),
			trace:  &KernelEvent{Type: "process.exec", Path: "/usr/bin/git", Argv: []string{"git", "status"}},
		},
		{
			name: "unknown cgroup",
			ev:   bpf.Event{Cgroup: testCgroup + 1, Kind: bpf.KindFileOpen, Path: "/etc/hosts", Result: 3},
		},
		{
			name: "unregistered session denied",
			ev: bpf.Event{Cgroup: testCgroup + 1, Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort("1.2.3.4:22"),
				Rule: bpf.UnregisteredRule},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newKernelFixture(t, &tt.srv, audit.Options{})
			for _, id := range tt.calls {
				f.inFlight(t, id)
			}
			ev := tt.ev
			if ev.Cgroup == 0 {
				ev.Cgroup = testCgroup
			}
			ev.Time = kernelT0
			if len(tt.calls) > 0 {
				// After the call began (the relay stamps it with the clock).
				ev.Time = time.Now()
				tt.record["time"] = ev.Time.UTC().Format(time.RFC3339Nano)
			}
			if !tt.noTask {
				ev.Tgid, ev.Pid, ev.Comm = 42, 43, "node"
			}
			f.d.onKernelEvent(ev)

			var wantRecords []audit.Record
			if tt.record != nil {
				wantRecords = append(wantRecords, tt.record)
			}
			if diff := cmp.Diff(wantRecords, f.written(t)); diff != "" {
				t.Errorf("audit records (-want +got):\n%s", diff)
			}
			var wantTrace []KernelEvent
			if tt.trace != nil {
				ke := wantTraced(*tt.trace)
				if tt.noTask {
					ke.Pid, ke.Comm = 0, ""
				}
				ke.Time = ev.Time
				wantTrace = append(wantTrace, ke)
			}
			if diff := cmp.Diff(wantTrace, f.traced(t)); diff != "" {
				t.Errorf("trace (-want +got):\n%s", diff)
			}
			killed, _ := f.s.killedBy.Load().(string)
			if killed != tt.killed {
				t.Errorf("killed by %q, want %q", killed, tt.killed)
			}
			select {
			case <-f.s.policyStop:
				if tt.killed == "" {
					t.Error("the session was stopped")
				}
			default:
				if tt.killed != "" {
					t.Error("the session was not stopped")
				}
			}
			if got := f.s.deniedKernel.Load(); got != tt.denied {
				t.Errorf("%d kernel denials counted, want %d", got, tt.denied)
			}
			wantEvents := int64(1)
			if ev.Cgroup != testCgroup {
				wantEvents = 0
			}
			if got := f.s.kernelEvents.Load(); got != wantEvents {
				t.Errorf("%d kernel events counted, want %d", got, wantEvents)
			}
		})
	}
}

// A reader too slow for the events misses some, and is told how many
// before the next one it gets; events of sessions it does not follow do
// not count.
func TestTraceTellsMissedEvents(t *testing.T) {
	var ts tracers
	tr := &tracer{session: "s1", root: true, ch: make(chan []byte, 2)}
	ts.add(tr)
	ev := func(i int, session string) KernelEvent {
		return KernelEvent{Time: kernelT0.Add(time.Duration(i) * time.Second), Type: "file.open", Session: session, Pid: uint32(i)}
	}
	read := func() string {
		select {
		case b := <-tr.ch:
			return string(b)
		default:
			return ""
		}
	}
	line := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	for i := 1; i <= 5; i++ { // 1 and 2 fit; 3, 4 and 5 are missed
		ts.publish(ev(i, "s1"))
		ts.publish(ev(100+i, "s2"))
	}
	var got []string
	for l := read(); l != ""; l = read() {
		got = append(got, l)
	}
	ts.publish(ev(6, "s1"))
	ts.publish(ev(7, "s1")) // the channel is full again: missed
	for l := read(); l != ""; l = read() {
		got = append(got, l)
	}
	ts.publish(ev(8, "s1"))
	got = append(got, read())
	want := []string{
		line(ev(1, "s1")), line(ev(2, "s1")),
		line(api.KernelEvent{Time: ev(6, "").Time, Type: api.TraceMissed, Session: "s1", Missed: 3}), line(ev(6, "s1")),
		line(api.KernelEvent{Time: ev(8, "").Time, Type: api.TraceMissed, Session: "s1", Missed: 1}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("trace lines (-want +got):\n%s", diff)
	}
	// What `mcpcage trace` decodes from the gap line.
	var ke KernelEvent
	if err := json.Unmarshal([]byte(want[2]), &ke); err != nil || ke.Type != api.TraceMissed || ke.Session != "s1" {
		t.Errorf("the gap line as a KernelEvent: %+v, %v", ke, err)
	}
}

// BenchmarkOnKernelEvent is the daemon's side of one kernel event (a busy
// server sends ~70k a second), with no trace client. The audit writer is
// held while the timer runs, so allocs/op counts onKernelEvent's own
// allocations (the record it queues included), not the writer's encoding.
func BenchmarkOnKernelEvent(b *testing.B) {
	for _, bc := range []struct {
		name string
		ev   bpf.Event
	}{
		{"file.open", bpf.Event{Kind: bpf.KindFileOpen, Path: "/usr/lib/python3/dist-packages/yaml/__init__.py",
			Hint: "/usr/lib/python3/dist-packages/yaml/__init__.py", Flags: 0x80000, Result: 3}},
		{"file.unlink", bpf.Event{Kind: bpf.KindUnlink, Dir: "/work", Hint: "tmp.txt", Path: "/work/tmp.txt"}},
		{"net.connect", bpf.Event{Kind: bpf.KindConnect, Addr: netip.MustParseAddrPort("93.184.216.34:443"), Proto: 6,
			Outcome: bpf.ConnectHandshake, Allowed: true}},
		{"process.exec", bpf.Event{Kind: bpf.KindExec, Path: "/usr/bin/git", Argv: []string{"git", "status"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var writer sync.Mutex // held: the audit writer stops at its next record
			hold := func(audit.Entry) {
				writer.Lock()
				//lint:ignore SA2001 an empty section on purpose: it waits for the benchmark to let the writer go
				writer.Unlock()
			}
			f := newKernelFixture(b, &config.Server{Egress: []string{"example.com:443"}}, audit.Options{Sync: audit.SyncBatch, OnRecord: hold})
			f.d.tracers.remove(f.trace)
			ev := bc.ev
			ev.Cgroup, ev.Time, ev.Tgid, ev.Pid, ev.Comm = testCgroup, time.Now(), 42, 43, "python3"
			// Fewer than the audit queue holds: no record is dropped.
			const chunk = 1024
			queued := int64(0)
			writer.Lock()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 && i%chunk == 0 {
					b.StopTimer()
					writer.Unlock()
					testenv.WaitFor(b, "the audit writer", 10*time.Second, func() (bool, string) {
						n := f.d.audit.Count()
						return n == queued, fmt.Sprintf("%d of %d written", n, queued)
					})
					writer.Lock()
					b.StartTimer()
				}
				f.d.onKernelEvent(ev)
				queued++
			}
			b.StopTimer()
			writer.Unlock()
		})
	}
}

func TestKeepRawBytes(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name                string
		comm, path, to, tch string
		argv                []string
		want                audit.Record
	}{
		{name: "all UTF-8", comm: "sh", path: "/tmp/é", argv: []string{"ls", "-l"}, want: audit.Record{}},
		{name: "path", comm: "sh", path: "/tmp/n\xffa", want: audit.Record{"path_b64": b64("/tmp/n\xffa")}},
		{name: "comm and rename target", comm: "x\xfe", path: "/a", to: "/b\xc3", want: audit.Record{"comm_b64": b64("x\xfe"), "to_b64": b64("/b\xc3")}},
		{name: "touched", tch: "/home/u/.ssh/\xff", want: audit.Record{"touched_b64": b64("/home/u/.ssh/\xff")}},
		{name: "one argument: all of them, in order", argv: []string{"true", "a\xff", "b"}, want: audit.Record{"argv_b64": []string{b64("true"), b64("a\xff"), b64("b")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := audit.Record{}
			keepRawBytes(rec, tc.comm, tc.path, "", tc.to, tc.tch, tc.argv)
			if diff := cmp.Diff(tc.want, rec); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
}
