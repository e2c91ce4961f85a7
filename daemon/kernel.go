package daemon

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/bpf/egress"
	"github.com/mcpcage/mcpcage/bpf/probe"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/request"
)

// Timing of the kernel side's housekeeping.
const (
	// lostInterval is how often the lost-event counters are read and
	// reported (a log line, a metric and an audit record per change).
	lostInterval = 5 * time.Second
	// resolveTimeout bounds one lookup of a session's egress host names.
	resolveTimeout = 10 * time.Second
)

// setupEBPF loads the cage programs when the kernel allows the hooks they
// need; otherwise it records why not.
func (d *Daemon) setupEBPF(ctx context.Context) {
	d.ebpfHooks = probe.Run(probe.CgroupV2Root())
	d.log.Info("eBPF hooks probed", "result", d.ebpfHooks.String())
	d.setupStamps()
	for _, need := range []string{probe.CgroupSockAddr, probe.Tracepoint, probe.RawTracepoint, probe.SendSignal, probe.RingBuffer} {
		if r := d.ebpfHooks[need]; !r.OK {
			d.ebpfErr = fmt.Sprintf("%s unavailable: %s", need, r.Err)
			d.log.Error("eBPF enforcement unavailable: servers that need it will not start unless require_ebpf = false", "reason", d.ebpfErr)
			return
		}
	}
	root := probe.CgroupV2Root()
	cage, err := bpf.Load(bpf.Options{
		CgroupParent: filepath.Join(root, d.conf().Daemon.ContainerdNamespace),
		PinDir:       filepath.Join(d.conf().Daemon.BPFPinDir, d.conf().Daemon.ContainerdNamespace),
		// Read at start: a reload does not change it.
		ObserverLinger: time.Duration(d.conf().Daemon.ObserverLinger),
		OnDetachError: func(err error) {
			d.log.Error("detaching the eBPF observation programs failed: some may stay attached, and every process on the host pays for them", "err", err)
		},
	})
	if err != nil {
		d.ebpfErr = err.Error()
		d.log.Error("eBPF enforcement unavailable: servers that need it will not start unless require_ebpf = false", "err", err)
		return
	}
	// Without the bind hooks a host-network server could serve the host:
	// fail closed, as without the connect hooks.
	if ingressErr, err := cage.EnableBind(); err != nil {
		if cerr := cage.Close(); cerr != nil {
			d.log.Error("unloading the eBPF programs failed: some may stay attached", "err", cerr)
		}
		d.ebpfErr = "cgroup bind4/bind6 unavailable: " + err.Error()
		d.log.Error("eBPF enforcement unavailable: servers that need it will not start unless require_ebpf = false", "err", err)
		return
	} else if ingressErr != nil {
		d.ingressErr = ingressErr.Error()
		d.log.Warn("listen control: binds are checked, but a TCP listener on an ephemeral port stays reachable from the host (cgroup_skb/ingress refused)", "err", ingressErr)
	}
	cage.SetEgressBudget(d.conf().Daemon.EgressEntriesPerUser)
	d.cage = cage
	d.cgroupRoot = root
	if r := d.ebpfHooks[probe.LSM]; r.OK {
		if err := cage.EnableLSM(); err != nil {
			d.lsmErr = err.Error()
			d.log.Warn("BPF LSM is available but its file_open program did not load: deny_paths fall back to kill-on-open", "err", err)
		} else {
			d.log.Info("deny_paths enforced by BPF LSM (file_open: EACCES)")
		}
	} else {
		d.lsmErr = r.Err
	}
	d.log.Info("eBPF programs loaded", "session_cgroup_level", cage.Level(), "cgroup_namespace_offset", cage.NamespaceOffset())
	if ok, err := cage.DirectReads(); !ok {
		d.log.Info("the eBPF programs read files, dentries and mounts by helper calls, about 100 ns more per open in a session than direct loads", "err", err)
	}
	if _, err := cage.SessionClock(); err != nil {
		d.log.Info("the eBPF programs time the folding of repeated opens and the event budget by the monotonic clock, a clock read per open in a session (about 100 ns on a virtual machine with slow clock reads), not by the kernel's tick", "err", err)
	}
	if ok, err := cage.CallEpochsMapped(); !ok {
		d.log.Warn("call epochs are moved by a map update per tool call start and end (a syscall each), and a session's renames are not held to a share of the kernel's event ring (one session renaming faster than this daemon reads may leave another's without room): this kernel does not map BPF arrays into memory", "err", err)
	}
	if err := cage.Events(d.containedKernelEvent, d.badKernelEvent); err != nil {
		d.log.Error("kernel events unavailable", "err", err)
	}
	d.goLoop(ctx, "lost kernel events", func() { d.watchLost(ctx) })
}

// setupStamps attaches the exec and fork stampers that bind an agent to
// the image that forked the shim. They need only a raw tracepoint, a BTF
// tracepoint and task storage, so they run wherever those do, whatever
// becomes of the rest of the eBPF layer; pinned, the record survives
// daemon restarts.
func (d *Daemon) setupStamps() {
	if r := d.ebpfHooks[probe.RawTracepoint]; !r.OK {
		d.stampsErr = probe.RawTracepoint + " unavailable: " + r.Err
	} else if s, err := LoadExecStamps(d.conf().Daemon.BPFPinDir); err != nil {
		d.stampsErr = err.Error()
	} else {
		d.stamps = s
		d.hasher.Stamps = execStamps{s}
		d.log.Info("agent identity bound to the image that forks the shim (kernel exec and fork record)")
		return
	}
	d.log.Warn("agent identity is weaker: no kernel exec record, so a process could fork mcpcage run and then exec a registered agent's program", "reason", d.stampsErr)
}

// LoadExecStamps loads (or finds pinned in pinDir, daemon.bpf_pin_dir)
// the exec and fork stampers the daemon binds agents with, keeping the
// variables identity checks. A test harness calls it, then execs itself,
// so that its own process (an agent of its tests) has a stamp.
func LoadExecStamps(pinDir string) (*bpf.ExecStamps, error) {
	var names []bpf.EnvName
	for _, n := range identity.EnvNames() {
		names = append(names, bpf.EnvName(n))
	}
	return bpf.LoadExecStamps(pinDir, names)
}

// execStamps adapts bpf.ExecStamps to identity.Stamps.
type execStamps struct{ *bpf.ExecStamps }

func (e execStamps) Lookup(pidfd int) (identity.Stamp, bool, error) {
	st, ok, err := e.ExecStamps.Lookup(pidfd)
	return identity.Stamp(st), ok, err
}

func (e execStamps) Lost() identity.Lost { return identity.Lost(e.ExecStamps.Lost()) }

// agentIdentity describes how sessions identify their agent, for status.
func (d *Daemon) agentIdentity() string {
	if d.stamps == nil {
		return "weaker: " + d.stampsErr + ": the agent is whatever the shim's parent runs when mcpcaged looks (a process could fork mcpcage run, then exec a registered agent's program, or make a registered agent the parent of a shim it forked)" + "; shims must run " + strings.Join(d.shimRule().Paths, " or ") + " (how often a shim exec'd is not known without the record)" + "; " + peerPidfdNote()
	}
	s := "kernel exec record (tp_btf/sched_prepare_exec, raw_tracepoint/sched_process_exec, tp_btf/sched_process_fork, task storage): a parent that exec'd after forking mcpcage run, or that did not fork it, or whose exec is under way, is refused; the environment variables identity checks are the ones exec gave the agent, copied at exec"
	if ok, err := d.stamps.PrepareHooked(); !ok {
		s += fmt.Sprintf("; execs are marked only once their image is loaded (%v): a process whose exec a slow file system holds (a FUSE mount of its user) shows the new program in /proc before its record changes, so a shim it forked before could pass for the new program's", err)
	}
	if l := d.stamps.Lost(); l.Execs > 0 || l.Forks > 0 {
		s += fmt.Sprintf("; %d execs and %d forks went unrecorded (memory pressure): sessions of agents stamped before are unverified", l.Execs, l.Forks)
	}
	return s + "; " + d.shimNote() + "; " + peerPidfdNote()
}

// shimNote says, for status, what a shim must be.
func (d *Daemon) shimNote() string {
	rule := d.shimRule()
	if rule.Launchers {
		return "shims must run " + strings.Join(rule.Paths, " or ") + "; one a launcher exec'd (a shell, env) runs unverified (allow_shim_launchers)"
	}
	return "shims must run " + strings.Join(rule.Paths, " or ") + ", exec'd by their agent directly (no shell or env between)"
}

// ptraceScope reads kernel.yama.ptrace_scope and says what it means for
// agent identity.
func ptraceScope() string {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return "unknown (no Yama): any process of the agent's user may ptrace it and act as it; enable Yama with kernel.yama.ptrace_scope = 1 or more"
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "0":
		return "0: any process of the agent's user may ptrace it and act as it; set kernel.yama.ptrace_scope = 1 or more (sysctl)"
	case "1":
		return "1 (restricted: only the agent's ancestors, or those it allows, may ptrace it)"
	case "2":
		return "2 (admin only)"
	case "3":
		return "3 (no ptrace)"
	default:
		return v
	}
}

// watchLost logs when kernel events are lost or throttled, until ctx ends
// or the daemon closes. What it has told is kept on the daemon: a restart
// after a bug (goLoop) does not tell it again.
func (d *Daemon) watchLost(ctx context.Context) {
	lastRB, lastTh := &d.lostTold.ringbufFull, &d.lostTold.throttled
	every(ctx, lostInterval, func() bool {
		d.mu.Lock()
		closing := d.closing
		d.mu.Unlock()
		if closing {
			return true
		}
		rb, th, err := d.cage.Lost()
		if err != nil {
			return false
		}
		if rb > *lastRB || th > *lastTh {
			d.log.Warn("kernel events lost", "ringbuf_full", rb-*lastRB, "throttled", th-*lastTh, "ringbuf_full_total", rb, "throttled_total", th)
			d.metrics.KernelEventsLost.Add(float64(rb - *lastRB + th - *lastTh))
			d.audit.AppendAsync(audit.Record{"type": "events.lost", "ringbuf_full": rb - *lastRB, "throttled": th - *lastTh,
				"ringbuf_full_total": rb, "throttled_total": th})
		}
		killUnchecked := rb > *lastRB
		*lastRB, *lastTh = rb, th
		if killUnchecked {
			d.killUnchecked()
		}
		return false
	})
}

// killUnchecked ends the sessions a full ring buffer left unchecked (see
// endUnchecked).
func (d *Daemon) killUnchecked() {
	for _, s := range d.liveSessions() {
		d.forSession(s, "unchecked changes", func() { d.endUnchecked(s) })
	}
}

// endUnchecked ends s if a full ring buffer (or its share of the ring
// spent) left it unchecked: a rename,
// link or change of its that the daemon had to check was not reported,
// so its names were never checked against
// deny_paths. The kernel killed its caller and kills every later opener
// in the session (SESSION_UNCHECKED); this kills the rest and records
// why, once (a session already ended by a hit is left as it is).
func (d *Daemon) endUnchecked(s *session) {
	if d.cage == nil || s.cgid == 0 {
		return
	}
	if unchecked, err := d.cage.Unchecked(s.cgid); err != nil || !unchecked {
		return
	}
	why := "a rename, link or change by name it made could not be reported to the deny_paths check (the kernel's event buffer was full, or held 1024 such changes of this session unread)"
	if !s.killedBy.CompareAndSwap(nil, why) {
		return
	}
	ke := &KernelEvent{Time: time.Now(), Type: bpf.KindFileDenied.String(), Rule: uncheckedRule}
	ke.Action, _ = d.killSession(s)
	s.stopForPolicy()
	s.deniedKernel.Add(1)
	s.log.Warn("a rename, link or change by name went unchecked: "+ke.Action, "rule", ke.Rule)
	d.audit.Enqueue(s.kernelRecord(ke, ""), audit.Essential)
}

// uncheckedRule is the rule of a session ended by killUnchecked.
const uncheckedRule = "deny_paths: every rename, link and change by name is checked (one could not be reported)"

// needsEBPF says why a server's rules need the eBPF layer ("" if not).
func needsEBPF(srv *config.Server) string {
	switch {
	case srv.Network == config.NetworkHost:
		return "its egress rules (network = \"host\")"
	case len(srv.DenyPatterns()) > 0:
		return "its deny_paths"
	}
	return ""
}

// policyFor builds the kernel policy of a session, resolving host names;
// the tracker (nil without host networking) keeps them current. refused
// are the DNS answers its rules leave out (kernelRules).
func (d *Daemon) policyFor(ctx context.Context, srv *config.Server) (p bpf.Policy, tracker *egress.Tracker, refused []egress.Refused, err error) {
	p = bpf.Policy{HostNetwork: srv.Network == config.NetworkHost, DenyComponents: map[string]int{}}
	for i, pat := range srv.DenyPatterns() {
		name, err := config.DenyComponent(pat)
		if err != nil {
			return p, nil, nil, err
		}
		p.DenyComponents[name] = i
	}
	entries, err := egress.ParseAll(srv.Egress)
	if err != nil {
		return p, nil, nil, err
	}
	if !p.HostNetwork {
		return p, nil, nil, nil
	}
	p.Listen = srv.ListenAddrs()
	// The daemon's resolvers and private domains as they are at each
	// look-up: a reload applies to running sessions at their next one.
	tracker = egress.NewTracker(entries, func(ctx context.Context, host string) ([]egress.Answer, error) {
		dc := d.conf().Daemon
		return (&egress.DNS{Servers: dc.DNSServers, PrivateDomains: dc.PrivateDomains}).LookupTTL(ctx, host)
	})
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	rules, _, err := tracker.Refresh(ctx, time.Now())
	if err != nil {
		return p, nil, nil, err
	}
	warnAddrsDropped(d.log.With("server", srv.Name), tracker, 0)
	p.Egress, refused = kernelRules(rules, d.log)
	return p, tracker, refused, nil
}

// warnAddrsDropped says when host names answered with more addresses
// than a name keeps (egress.MaxAddrsPerName) since the tracker had
// dropped addresses let go.
func warnAddrsDropped(log *slog.Logger, tracker *egress.Tracker, dropped int) {
	if n := tracker.Dropped() - dropped; n > 0 {
		log.Warn("an egress host name answered with more addresses than are kept: connections to those let go are refused", "dropped", n, "kept_per_name", egress.MaxAddrsPerName)
	}
}

// builtinRule is the kernel's rule index of the built-in egress rules:
// the largest its 16-bit field (cage.c's struct ports) holds, beyond any
// server's egress list, so their events name no rule.
const builtinRule = 0xffff

// kernelRules adds the built-in rules (DNS to the host's resolvers) and
// the host's own addresses and networks that "public" leaves out, as
// they are now, refuses DNS answers that "public" would not reach
// (egress.PublicAnswers: DNS rebinding), and converts for the kernel.
// When the host's addresses or routes cannot be read, "public" and DNS
// answers allow nothing (rather than the host) and the reason is logged.
func kernelRules(rules []egress.Rule, log *slog.Logger) ([]bpf.EgressRule, []egress.Refused) {
	addrs, aerr := net.InterfaceAddrs()
	routes, rerr := egress.HostRoutes()
	var refused []egress.Refused
	if err := errors.Join(aerr, rerr); err != nil && slices.ContainsFunc(rules, func(r egress.Rule) bool { return r.Public || r.Answer }) {
		log.Error("the host's addresses or routes could not be read: public and host names allow nothing until they can", "err", err)
		kept := make([]egress.Rule, 0, len(rules))
		for _, r := range rules {
			switch {
			case r.Answer:
				refused = append(refused, egress.Refused{Rule: r, Why: "the host's addresses could not be read to tell whether it is one of them"})
			case !r.Public:
				kept = append(kept, r)
			}
		}
		rules = kept
	}
	host := egress.HostPrefixes(addrs, routes)
	rules, more := egress.PublicAnswers(rules, host)
	refused = append(refused, more...)
	rules = egress.WithHost(append(rules, egress.DNSRules(egress.ResolvConf)...), host)
	out := make([]bpf.EgressRule, 0, len(rules))
	for _, r := range rules {
		idx := r.Index
		if idx < 0 {
			idx = builtinRule
		}
		out = append(out, bpf.EgressRule{Prefix: r.Prefix, Ports: r.Ports, Index: idx, Public: r.Public, Exclude: r.Exclude})
	}
	return out, refused
}

// cgroupV2Entry starts the cgroup v2 line of /proc/PID/cgroup (hierarchy
// 0, no controllers), followed by the task's cgroup path.
const cgroupV2Entry = "0::"

// sessionCgroup finds the cgroup v2 id of a task's session cgroup.
func (d *Daemon) sessionCgroup(pid uint32, want string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), cgroupV2Entry); ok {
			if rest != want {
				return 0, fmt.Errorf("task %d is in cgroup %s, want %s", pid, rest, want)
			}
			return bpf.CgroupID(filepath.Join(d.cgroupRoot, rest))
		}
	}
	return 0, fmt.Errorf("task %d has no cgroup v2 entry", pid)
}

// hostCheckEvery is how often a host-network session's rules are
// checked against the host: its resolvers (resolv.conf) and its own
// addresses and networks (which "public" leaves out) change when it
// changes networks.
const hostCheckEvery = 5 * time.Second

// watchEgress keeps a host-network session's egress rules current: each
// host name is looked up again when its records' TTL runs out, and the
// host's resolvers and addresses are checked every hostCheckEvery.
func (s *session) watchEgress(d *Daemon, tracker *egress.Tracker, first []bpf.EgressRule) {
	last := first
	dropped := tracker.Dropped() // policyFor said those
	for {
		now := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		rules, when, err := tracker.Refresh(ctx, now)
		cancel()
		if err != nil {
			s.log.Warn("re-resolving egress host names failed; the last answer stays in force until the servers answer", "err", err)
		}
		warnAddrsDropped(s.log, tracker, dropped)
		dropped = tracker.Dropped()
		next, refused := kernelRules(rules, s.log)
		s.setRefusedAnswers(refused)
		if !slices.EqualFunc(next, last, sameEgressRule) {
			var gone bool
			if last, gone = d.writeEgress(s, next, last); gone {
				return
			}
		}
		wait := hostCheckEvery
		if !when.IsZero() {
			wait = min(wait, time.Until(when))
		}
		select {
		case <-s.relayDone():
			return
		case <-time.After(wait):
		}
	}
}

// sameEgressRule compares two kernel rules.
func sameEgressRule(a, b bpf.EgressRule) bool {
	return a.Prefix == b.Prefix && a.Index == b.Index && a.Public == b.Public && a.Exclude == b.Exclude && slices.Equal(a.Ports, b.Ports)
}

// hostSocketRule is the rule of a net.denied (or net.bind_denied) of a
// session without host networking on a socket of the host's network
// namespace (bpf.HostNetnsRule).
const hostSocketRule = "socket of the host's network namespace, in a sandbox with its own (network = \"none\")"

// egressUnwrittenRule is the rule of a net.denied while the session's
// egress rules could not be written to the kernel (its egress tables,
// shared by every session, full): nothing is allowed meanwhile.
const egressUnwrittenRule = "egress rules not written to the kernel (its egress tables are full): every connection is refused until they are"

// nonlocalRule is the rule of a refused setsockopt(2) of option opt
// (IP_FREEBIND 15, IP_TRANSPARENT 19, IPV6_TRANSPARENT 75,
// IPV6_FREEBIND 78): with it a socket binds to an address not the
// host's, a spoofed source the egress list does not check.
func nonlocalRule(opt uint16) string {
	name := map[uint16]string{15: "IP_FREEBIND", 19: "IP_TRANSPARENT", 75: "IPV6_TRANSPARENT", 78: "IPV6_FREEBIND"}[opt]
	if name == "" {
		name = fmt.Sprintf("option %d", opt)
	}
	return name + ": binding to an address that is not the host's (a spoofed source) is refused in a sandbox"
}

// unspecifiedRule is the rule of a net.denied to 0.0.0.0/8, :: or
// ::ffff:0.0.0.0/104 (bpf.UnspecifiedRule).
const unspecifiedRule = "unspecified address: the kernel takes it to this host itself (its loopback), which no egress rule opens"

// KernelEvent is api.KernelEvent: the trace stream's wire format.
type KernelEvent = api.KernelEvent

// writeEgress puts session s's egress rules next in the kernel, last
// being what is there now, and returns what is there after; gone reports
// that s is unregistered (nothing to update, nothing to leave behind).
// The lock is let go of however this ends: the session's end waits for
// it (unregisterKernel).
func (d *Daemon) writeEgress(s *session, next, last []bpf.EgressRule) (written []bpf.EgressRule, gone bool) {
	s.egressMu.Lock()
	defer s.egressMu.Unlock()
	if s.kernelGone {
		return last, true
	}
	if err := d.cage.SetEgress(s.cgid, next); err != nil {
		// The previous rules must not stay: the update may be a new
		// address of the host to leave out, or an answer whose TTL ran
		// out (the kernel's tries are shared by every session and can be
		// full). Nothing is allowed until the rules are written, tried
		// again at the next check (found by a red-team helper).
		s.egressUnwritten.Store(true)
		if cerr := d.cage.ClearEgress(s.cgid); cerr != nil {
			s.log.Error("updating egress rules failed, and so did removing the old ones: ending the session", "err", err, "remove_err", cerr)
			s.stopForPolicy()
		} else {
			s.log.Error("updating egress rules failed: every connection of the session is refused until they are written (tried again in a few seconds)", "err", err)
		}
		return nil, false
	}
	if s.egressUnwritten.Swap(false) {
		s.log.Info("egress rules written again: connections follow them", "rules", len(next))
	} else {
		s.log.Info("egress rules follow DNS and the host's networks", "rules", len(next))
	}
	return next, false
}

// onKernelEvent attributes a kernel event to its session, enforces
// deny_paths, and records and traces it. It runs for every event (tens of
// thousands a second): keep what it allocates to the audit record and
// the values it holds (BenchmarkOnKernelEvent counts them).
func (d *Daemon) onKernelEvent(ev bpf.Event) {
	if s := d.sessionOfEvent(ev); s != nil {
		d.onSessionEvent(s, ev)
	}
}

// sessionOfEvent is the session of a kernel event's cgroup; nil (an
// unregistered task's denied connection logged) when there is none.
func (d *Daemon) sessionOfEvent(ev bpf.Event) *session {
	d.mu.Lock()
	s := d.byCgroup[ev.Cgroup]
	d.mu.Unlock()
	if s == nil && ev.Kind == bpf.KindNetDenied && ev.Rule == bpf.UnregisteredRule {
		d.log.Warn("connection denied: task in mcpcage's cgroup without a registered session", "addr", ev.Addr.String(), "pid", ev.Tgid)
	}
	return s
}

// onSessionEvent is onKernelEvent for the event's session s.
func (d *Daemon) onSessionEvent(s *session, ev bpf.Event) {
	beforeSessionEvent(&ev)
	s.kernelEvents.Add(1)
	ke := KernelEvent{Time: ev.Time, Type: ev.Kind.String(), Session: s.id, Server: s.server, User: s.peer.UID,
		Pid: ev.Tgid, Comm: ev.Comm, Path: ev.Path, Hint: ev.Hint, Flags: ev.Flags, Repeats: ev.Repeats}
	if len(ev.Argv) > 0 {
		// What the session's server was given may be on its command
		// lines (mysql -pSECRET): never in a record or a trace.
		// Only the values the server was given count for arguments the
		// kernel cut (see audit.ScrubArgv): what it runs is chosen.
		secrets := d.secretValues()
		if s.policy != nil {
			secrets = s.policy.secretValues()
		}
		ke.Argv = audit.ScrubArgv(ev.Argv, bpf.ArgvCut, s.injected, secrets)
	}
	switch ev.Kind {
	case bpf.KindFileOpen, bpf.KindFileDenied, bpf.KindUnlink, bpf.KindRmdir, bpf.KindMkdir, bpf.KindRename, bpf.KindLink,
		bpf.KindTruncate, bpf.KindChmod, bpf.KindChown, bpf.KindXattr:
		ke.Result = resultOf(ev.Result, &ke.Error)
		if ev.Kind == bpf.KindRename || ev.Kind == bpf.KindLink {
			ke.To = newNamePath(ev)
		}
	case bpf.KindUnixConnect, bpf.KindUnixSend:
		ke.Proto = unixProtoName(ev.Proto)
	case bpf.KindConnect, bpf.KindNetDenied, bpf.KindUDPSend:
		ke.Addr = ev.Addr.String()
		ke.Proto = protoName(ev.Proto)
		if ev.Kind == bpf.KindConnect {
			ke.Outcome = ev.Outcome.String()
			if ev.Outcome != bpf.ConnectNoResult {
				ke.Result = resultOf(ev.Result, &ke.Error)
			}
		}
	}
	for _, c := range s.relay.CallsAt(ev.Time, string(request.ToolsCall)) {
		ke.InFlight = append(ke.InFlight, c.ID)
	}
	srv := s.srv
	touched := ""       // a deny_paths hit: the path it touched, for the audit record
	unrecorded := false // a repeatable denial over the session's bound (see kernelDenials)
	switch ev.Kind {
	case bpf.KindNetDenied:
		ke.Action = "EPERM"
		ke.Rule = "not in egress allow-list"
		if why := s.refusedAnswer(ev.Addr.Addr()); why != "" {
			ke.Rule = why
		}
		if s.egressUnwritten.Load() {
			ke.Rule = egressUnwrittenRule
		}
		msg := "connection denied"
		switch how := ev.NetDenial(); how {
		case "bind", "listen":
			// net.bind_denied (EPERM), net.listen_denied (packets dropped)
			ke.Type, ke.Rule, ke.Flags, msg = "net."+how+"_denied", "not in listen allow-list", 0, how+" denied"
			if how == "listen" {
				ke.Action = "dropped"
			}
		case "nonlocal":
			// setsockopt(2) of IP(V6)_FREEBIND or _TRANSPARENT: EPERM.
			// The event's port is the option.
			ke.Type, ke.Flags, ke.Addr, msg = "net.bind_denied", 0, "", "setsockopt denied"
			ke.Rule = nonlocalRule(ev.Addr.Port())
		case "routing":
			// Addr is where the routing header sent the packet first.
			ke.Addr = ev.Addr.Addr().String()
			ke.Action, ke.Flags, msg = "dropped", 0, "packet with a routing header denied"
			ke.Rule = "IPv6 routing header: the packet would go to " + ke.Addr + ", not where the socket was connected or sent (the egress allow-list's decision)"
		}
		switch ev.Rule {
		case bpf.HostNetnsRule:
			// Passed in by a process of the host's network namespace
			// (SCM_RIGHTS): the session's own namespace does not hold it.
			ke.Rule = hostSocketRule
		case bpf.UnspecifiedRule:
			ke.Rule = unspecifiedRule
		}
		s.deniedKernel.Add(1)
		if unrecorded = !s.admitKernelDenial(ke.Type, ke.Addr); unrecorded {
			s.log.Debug(msg, "addr", ke.Addr, "proto", ke.Proto, "pid", ke.Pid, "unrecorded", true)
			break
		}
		s.log.Warn(msg, "addr", ke.Addr, "proto", ke.Proto, "pid", ke.Pid, "comm", ke.Comm, "tool_calls", ke.InFlight)
	case bpf.KindFileDenied, bpf.KindUnlink, bpf.KindRmdir, bpf.KindMkdir, bpf.KindRename, bpf.KindLink,
		bpf.KindTruncate, bpf.KindChmod, bpf.KindChown, bpf.KindXattr:
		if ev.Kind == bpf.KindFileDenied && !ev.Killed {
			// BPF LSM refused the open: the server lives on, without the file.
			ke.Action = "EACCES"
			ke.Rule = denyRule(srv, ev.Rule)
			s.deniedKernel.Add(1)
			if unrecorded = !s.admitKernelDenial(ke.Type, ke.Path); unrecorded {
				s.log.Debug("file open denied", "path", ke.Path, "pid", ke.Pid, "unrecorded", true)
				break
			}
			s.log.Warn("file open denied", "path", ke.Path, "rule", ke.Rule, "action", "EACCES", "pid", ke.Pid, "comm", ke.Comm, "tool_calls", ke.InFlight)
			break
		}
		if ev.Killed {
			// The kernel killed the opener (its thread group) as the call
			// returned; for a change (rename, link...) the change is done.
			ke.Rule = denyRule(srv, ev.Rule)
			touched = ke.Path
		} else if ev.Result == 0 {
			if ev.Kind == bpf.KindRename && d.renames != nil && len(s.renameMounts) > 0 {
				// Checked where the kernel took the file from, which may
				// wait on fanotify's queue: off this loop, so that the
				// ring it drains keeps room for every session's events.
				d.queueRenameCheck(s, ev, ke)
				return
			}
			// The kernel checked the base directory of a relative name;
			// the names themselves are resolved here as the kernel
			// resolves them (through symlinks, in the sandbox's root).
			var rule string
			rule, touched = d.resolvedDenied(s, ev, !kernelCheckedName(ev) && !(s.changesWatched && watchedKind(ev.Kind)), ke.Path, ke.To)
			if rule == "" {
				if ev.OverBudget {
					// Checked, not recorded: the session is over its
					// event budget (the kernel counted it as throttled).
					return
				}
				break
			}
			ke.Rule = "deny_paths " + rule
		} else {
			break
		}
		d.emitKernelEvent(s, &ke, touched, d.endForDeniedPath(s, ev, &ke, touched))
		return
	case bpf.KindExec, bpf.KindUnixConnect, bpf.KindUnixSend:
		if ev.Killed {
			// The kernel killed the task before the file it ran under
			// deny_paths executed an instruction, or before connect(2) or
			// the send to a unix socket bound under deny_paths returned;
			// the session ends as for an open.
			ke.Rule = denyRule(srv, ev.Rule)
			touched = ke.Path
			d.emitKernelEvent(s, &ke, touched, d.endForDeniedPath(s, ev, &ke, touched))
			return
		}
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("kernel event", "type", ke.Type, "path", ke.Path, "pid", ke.Pid)
		}
	default:
		if ev.Kind == bpf.KindConnect || ev.Kind == bpf.KindUDPSend {
			if ev.Rule < uint32(len(srv.Egress)) {
				ke.Rule = "egress " + srv.Egress[ev.Rule]
			}
		}
		// Enabled first: the arguments alone would allocate per event.
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("kernel event", "type", ke.Type, "path", ke.Path, "addr", ke.Addr, "pid", ke.Pid)
		}
	}
	if unrecorded {
		d.countKernelEvent(s, &ke)
		return
	}
	d.emitKernelEvent(s, &ke, touched, false)
}

// endForDeniedPath ends session s for its kernel event ev, a deny_paths
// hit (ke.Rule set): touched is the path that hit the rule. It reports
// whether the hit ended the session (not ended already by another).
func (d *Daemon) endForDeniedPath(s *session, ev bpf.Event, ke *KernelEvent, touched string) (ended bool) {
	// A hit ends the whole session at once: every process of its
	// cgroup, not only the opener (a process sharing its files, a
	// child that holds the file name). A later hit (its events, or
	// queued rename checks, read after the kill) finds it ended.
	ke.Action, ended = d.killSession(s)
	if ev.Killed {
		ke.Action = "SIGKILL, " + ke.Action
	}
	s.stopForPolicy()
	what := ke.Path
	if touched != ke.Path {
		what += " (that is " + touched + ")"
	}
	s.deniedKernel.Add(1)
	// The first hit is what the client is told.
	s.killedBy.CompareAndSwap(nil, fmt.Sprintf("it %s %s, which deny_paths rule %q forbids", deniedVerb(ev.Kind), what, strings.TrimPrefix(ke.Rule, "deny_paths ")))
	s.log.Warn("denied path: "+ke.Action, "op", ke.Type, "path", ke.Path, "to", ke.To, "touched", touched, "rule", ke.Rule, "pid", ke.Pid, "comm", ke.Comm, "tool_calls", ke.InFlight)
	return ended
}

// emitKernelEvent traces, counts and records a kernel event of s; ended
// says the event ended the session, and its record is kept whatever the
// audit queue holds (a flood of observations must not hide it).
func (d *Daemon) emitKernelEvent(s *session, ke *KernelEvent, touched string, ended bool) {
	prio := audit.Observation
	if ke.Action != "" {
		prio = audit.Decision
	}
	if ended {
		prio = audit.Essential
	}
	if !d.audit.Enqueue(s.kernelRecord(ke, touched), prio) {
		s.recordsDropped.Add(1)
	}
	// Counted once queued (a scrape that sees a denial sees its record
	// on its way).
	d.countKernelEvent(s, ke)
}

// countKernelEvent traces and counts a kernel event of s (emitKernelEvent
// without its record).
func (d *Daemon) countKernelEvent(s *session, ke *KernelEvent) {
	d.tracers.publish(*ke)
	agent := metrics.Agent(s.agent)
	d.metrics.KernelEvents.WithLabelValues(s.serverLabel, agent, ke.Type).Inc()
	if ke.Action != "" {
		d.metrics.KernelDenied.WithLabelValues(s.serverLabel, agent, ke.Type).Inc()
	}
}

// kernelRecord is the audit record of a kernel event: the trace event's
// fields (strings when not empty; result, flags, argv and tool calls when
// set) and, for a deny_paths hit, the path touched. Built in place: one
// map per event.
func (s *session) kernelRecord(ke *KernelEvent, touched string) audit.Record {
	rec := s.record(api.RecordType(ke.Type), nil)
	rec["time"], rec["pid"], rec["comm"] = ke.Time.UTC().Format(time.RFC3339Nano), ke.Pid, ke.Comm
	for _, f := range [...]struct{ key, val string }{
		{"path", ke.Path}, {"hint", ke.Hint}, {"to", ke.To}, {"addr", ke.Addr}, {"proto", ke.Proto}, {"rule", ke.Rule},
		{"action", ke.Action}, {"error", ke.Error}, {"outcome", ke.Outcome}, {"touched", touched},
	} {
		if f.val != "" {
			rec[f.key] = f.val
		}
	}
	keepRawBytes(rec, ke.Comm, ke.Path, ke.Hint, ke.To, touched, ke.Argv)
	if ke.Result != nil {
		rec["result"] = *ke.Result
	}
	if ke.Flags != 0 {
		rec["flags"] = ke.Flags
	}
	if ke.Repeats != 0 {
		rec["repeats"] = ke.Repeats
	}
	if len(ke.Argv) > 0 {
		rec["argv"] = ke.Argv
	}
	if len(ke.InFlight) > 0 {
		rec["tool_calls"] = ke.InFlight
	}
	return rec
}

// keepRawBytes adds the exact bytes of the names a server chose, when
// they are not UTF-8: JSON carries text, so an invalid byte is written as
// U+FFFD and two files ("a\xff" and "a\xfe") would read alike in the
// record. The bytes go beside the text, base64 (RFC 4648, standard
// alphabet), as NAME_b64; argv_b64 holds every argument, in order, when
// one of them is not UTF-8.
func keepRawBytes(rec audit.Record, comm, path, hint, to, touched string, argv []string) {
	for _, f := range [...]struct{ key, val string }{
		{"comm", comm}, {"path", path}, {"hint", hint}, {"to", to}, {"touched", touched},
	} {
		if !utf8.ValidString(f.val) {
			rec[f.key+"_b64"] = base64.StdEncoding.EncodeToString([]byte(f.val))
		}
	}
	for _, a := range argv {
		if !utf8.ValidString(a) {
			raw := make([]string, len(argv))
			for i, a := range argv {
				raw[i] = base64.StdEncoding.EncodeToString([]byte(a))
			}
			rec["argv_b64"] = raw
			return
		}
	}
}

// deniedVerb says what a file operation that hit deny_paths did, for the
// reason the session was stopped.
func deniedVerb(k bpf.Kind) string {
	switch k {
	case bpf.KindFileDenied:
		return "opened"
	case bpf.KindUnlink, bpf.KindRmdir:
		return "removed"
	case bpf.KindMkdir:
		return "created"
	case bpf.KindRename:
		return "renamed"
	case bpf.KindLink:
		return "linked"
	case bpf.KindTruncate:
		return "truncated"
	case bpf.KindChmod:
		return "changed the mode of"
	case bpf.KindChown:
		return "changed the owner of"
	case bpf.KindXattr:
		return "changed the extended attributes of"
	case bpf.KindExec:
		return "executed"
	case bpf.KindUnixConnect:
		return "connected to the unix socket"
	case bpf.KindUnixSend:
		return "sent a datagram to the unix socket"
	}
	return "touched"
}

// resultOf returns r, and sets *name to its errno's name when negative.
func resultOf(r int32, name *string) *int32 {
	if r < 0 {
		*name = unix.ErrnoName(syscall.Errno(-r))
		if *name == "" {
			*name = fmt.Sprintf("errno %d", -r)
		}
	}
	return &r
}

// denyRule names deny_paths rule i of srv for the record.
func denyRule(srv *config.Server, i uint32) string {
	if pats := srv.DenyPatterns(); int(i) < len(pats) {
		return "deny_paths " + pats[i]
	}
	return ""
}

// deniedComponent returns the deny_paths rule one of paths falls under.
func deniedComponent(srv *config.Server, paths ...string) string {
	for _, pat := range srv.DenyPatterns() {
		name, err := config.DenyComponent(pat)
		if err != nil {
			continue
		}
		for _, p := range paths {
			for rest := p; rest != ""; { // the components of p, without a slice of them
				var c string
				c, rest, _ = strings.Cut(rest, "/")
				if c == name {
					return pat
				}
			}
		}
	}
	return ""
}

// denyNames are a server's deny_paths components (".ssh"), for masking
// at launch.
func denyNames(srv *config.Server) []string {
	var out []string
	for _, pat := range srv.DenyPatterns() {
		if name, err := config.DenyComponent(pat); err == nil {
			out = append(out, name)
		}
	}
	return out
}

// resolvedDenied checks the names of a directory operation (a rename's
// or link's old and new name, an unlink's, mkdir's or rmdir's name) as
// written and as the kernel resolves them in the sandbox: every
// directory of a name is followed through symlinks, inside the
// sandbox's root (openat2 RESOLVE_IN_ROOT under /proc/PID/root), and the
// kernel's path of the result is checked. paths are the names as
// recorded (checked as text); resolve says whether to resolve them too
// (resolvableNames: a directory the kernel's path does not name whole
// is looked up in /proc; one that names another directory by then, or
// is deeper than PATH_MAX, is a hit: unresolvableDir). It returns
// the rule hit and the path that hit it. A name changed between the call
// and this check (a symlink swapped within milliseconds) escapes it:
// masking at launch and the refusal of link(2) are the lines that do not
// race.
func (d *Daemon) resolvedDenied(s *session, ev bpf.Event, resolve bool, paths ...string) (string, string) {
	for _, p := range paths {
		if rule := deniedComponent(s.srv, p); rule != "" {
			return rule, p
		}
	}
	if s.inst == nil || !resolve {
		return "", ""
	}
	// A name relative to a directory the kernel's event does not name
	// whole (deeper than its walk, a long component) or at all (a
	// rename's new directory) is resolved from the directory looked up
	// after the call.
	names, err := resolvableNames(ev)
	if err != nil {
		if rule := unresolvableDir(err); rule != "" {
			s.log.Warn("a change's name could not be resolved", "path", paths[0], "err", err)
			return rule, paths[0]
		}
		// (Debug: short-lived tools in deep directories do this all day.)
		s.log.Debug("a change's name was checked as text only: its directory could not be looked up after the call", "path", paths[0], "err", err)
	}
	for _, p := range names {
		real, err := resolveIn(s.inst.Pid, ev.Tgid, p, ev.Kind.FollowsLastName(ev.AtFlags))
		if errors.Is(err, unix.ELOOP) {
			// A /proc magic link (/proc/PID/cwd/NAME): the kernel followed
			// it, this resolution cannot, so what it led to is unknown.
			return "every change by name is checked: this one's name goes through a /proc magic link or a loop, which cannot be followed here", p
		}
		if err != nil {
			s.log.Debug("cannot resolve a name in the sandbox", "path", p, "err", err)
			continue
		}
		if rule := deniedComponent(s.srv, real); rule != "" {
			return rule, real
		}
	}
	return "", ""
}

// kernelCheckedName reports whether the kernel's check of an unlink,
// rmdir or mkdir covers what it acted on, so that resolving the name
// again here adds nothing: one component relative to a directory (no
// '/'), whose path the kernel checked in full, while the component
// itself is in the event's path and checked as text. Such events come
// by the thousand (a package manager's clean-up, or a flood meant to
// keep this daemon behind its events), and a resolution walks the whole
// path (thousands of components in a deep tree).
//
// A change that follows a symlink in its last name (truncate, chmod,
// chown, setxattr without AT_SYMLINK_NOFOLLOW) is never covered: the
// name may be a symlink into a denied directory.
func kernelCheckedName(ev bpf.Event) bool {
	switch ev.Kind {
	case bpf.KindTruncate, bpf.KindChmod, bpf.KindChown, bpf.KindXattr:
		if ev.Kind.FollowsLastName(ev.AtFlags) {
			return false
		}
		fallthrough
	case bpf.KindUnlink, bpf.KindRmdir, bpf.KindMkdir:
		return ev.Hint != "" && ev.Hint != "." && ev.Hint != ".." && !strings.ContainsRune(ev.Hint, '/') &&
			len(ev.Hint) < bpf.HintMax // not cut short (a '/' may follow)
	}
	return false
}

// watchedKind reports whether fanotify checks changes of kind k where the
// kernel made them, in a session whose writable mounts it all watches
// (deletions and attribute changes): resolving the names again adds
// nothing, and such events come by the thousand.
func watchedKind(k bpf.Kind) bool {
	switch k {
	case bpf.KindUnlink, bpf.KindRmdir, bpf.KindChmod, bpf.KindChown, bpf.KindXattr:
		return true
	}
	return false
}

// resolveIn returns the kernel's path, in the sandbox, of p's directory
// (followed through symlinks) joined with p's last element (not
// followed: rename, link and unlink act on the name itself), or with
// follow (truncate, chmod...) of what p leads to, when it leads to
// something. The root is that of the calling task, else of the sandbox's
// first process.
func resolveIn(initPid, pid uint32, p string, follow bool) (string, error) {
	var root *os.File
	var err error
	for _, id := range []uint32{pid, initPid} {
		if root, err = os.OpenFile(fmt.Sprintf("/proc/%d/root", id), unix.O_PATH|unix.O_DIRECTORY, 0); err == nil {
			break
		}
	}
	if err != nil {
		return "", err
	}
	defer func() { _ = root.Close() }()
	if follow {
		fd, err := unix.Openat2(int(root.Fd()), "."+path.Clean(p), &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err == nil {
			defer func() { _ = unix.Close(fd) }()
			return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		}
		// Gone since: where its name is is all there is to check.
	}
	dir, base := path.Split(path.Clean(p))
	fd, err := unix.Openat2(int(root.Fd()), "."+dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(fd) }()
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	return path.Join(real, base), nil
}

// killSession writes cgroup.kill for s's cgroup, once, and says what
// was done; first reports whether this call did it (a later one says
// "session already ended"). A session stopping for another reason
// (on_suspect = "end-session" waits stop_timeout for its server) is
// killed all the same.
func (d *Daemon) killSession(s *session) (action string, first bool) {
	if !s.cgroupKilled.CompareAndSwap(false, true) {
		return "session already ended", false
	}
	if d.cage == nil || s.cgid == 0 {
		return "session stopped", true
	}
	if _, err := d.cage.KillSession(s.cgid); err != nil {
		s.log.Error("killing the session's cgroup failed: stopping it instead", "err", err)
		return "session stopped (cgroup.kill failed)", true
	}
	return "session killed", true
}

// daemonDown says what enforces sandboxes while mcpcaged is not running
// (stopped or crashed), for status.
func (d *Daemon) daemonDown() string {
	if d.cage == nil {
		return "nothing kernel-side (eBPF unavailable); sandboxes keep their mounts, seccomp and Landlock"
	}
	pinned, where := d.cage.PinsObservers()
	if !pinned {
		return "egress only: deny_paths stops with the daemon (observation links not pinned)"
	}
	return "egress and deny_paths stay enforced: the cgroup hooks, and while sessions run the observation links (" + where +
		"), are pinned; without the daemon a deny hit kills the opener only (no session-wide kill, no audit record) until the restart reaps the sandboxes and unpins them"
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case 0:
		return ""
	}
	return fmt.Sprintf("proto%d", p)
}

// unixProtoName names a unix socket's type (SOCK_STREAM...).
func unixProtoName(t uint8) string {
	switch t {
	case unix.SOCK_STREAM:
		return "unix_stream"
	case unix.SOCK_SEQPACKET:
		return "unix_seqpacket"
	case unix.SOCK_DGRAM:
		return "unix_dgram"
	}
	return fmt.Sprintf("unix_type%d", t)
}

// tracers fans kernel events out to `mcpcage trace` clients.
type tracers struct {
	mu   sync.Mutex
	subs map[*tracer]bool
}

type tracer struct {
	session, server string
	uid             uint32
	root            bool
	ch              chan []byte
	// missed counts the events this reader did not get since the last
	// one it did (its channel was full): it learns the count before its
	// next event (an api.TraceMissed line).
	missed uint64
}

func (t *tracers) add(tr *tracer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.subs == nil {
		t.subs = map[*tracer]bool{}
	}
	t.subs[tr] = true
}

func (t *tracers) remove(tr *tracer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, tr)
}

// publish hands ke to every reader it concerns. A slow reader never slows
// the kernel path: an event that does not fit in its channel is counted
// as missed, and the reader is told how many before its next event.
func (t *tracers) publish(ke KernelEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.subs) == 0 {
		return
	}
	b, _ := json.Marshal(ke) // cannot fail: no channel, func or cycle in it
	b = append(b, '\n')
	for tr := range t.subs {
		if (tr.session != "" && tr.session != ke.Session) || (tr.server != "" && tr.server != ke.Server) || (!tr.root && tr.uid != ke.User) {
			continue
		}
		if tr.missed > 0 {
			gap, _ := json.Marshal(api.KernelEvent{Time: ke.Time, Type: api.TraceMissed, Session: tr.session, Server: tr.server, Missed: tr.missed})
			select {
			case tr.ch <- append(gap, '\n'):
				tr.missed = 0
			default:
				tr.missed++
				continue
			}
		}
		select {
		case tr.ch <- b:
		default:
			tr.missed++
		}
	}
}
