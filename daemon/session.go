package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/bpf/egress"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/sandbox"
)

// session is one client connected to one sandboxed server.
type session struct {
	id              string
	server          string
	srv             *config.Server // the definition the session started with (reloads do not change it)
	peer            Peer
	user            string           // the delegating user's name
	agent           string           // registered agent name, or exe:PATH
	agentP          identity.Process // the agent process as the kernel shows it
	notify          chan struct{}    // consent changes that may alter what the agent sees
	allowed, denied atomic.Int64
	start           time.Time
	inst            *sandbox.Instance
	relay           *relay.Relay
	policy          *sessionPolicy
	log             *slog.Logger

	deniedSyscalls atomic.Int64
	kernelEvents   atomic.Int64
	deniedKernel   atomic.Int64
	killedBy       atomic.Value  // string: why the kernel killed the server
	policyStop     chan struct{} // closed when a broken rule ends the session
	policyOnce     sync.Once
	unregisterOnce sync.Once
	cgid           uint64 // session cgroup id, 0 without eBPF

	stopOnce sync.Once
	grace    time.Duration
	shutdown chan struct{} // closed when the daemon ends the session
	shutOnce sync.Once
}

// agentDetail is the agent's identity for the session.start record.
func agentDetail(ap identity.Process) map[string]any {
	m := map[string]any{"exe": ap.Exe, "sha256": ap.SHA256, "uid": ap.UID, "pid": ap.PID, "start_time": ap.StartTime, "binding": ap.Binding}
	if ap.Interpreter {
		m["script"] = ap.Script
	}
	return m
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errClientGone ends the client stream when the shim's connection drops.
var errClientGone = errors.New("shim connection lost")

func (d *Daemon) runSession(ctx context.Context, c *net.UnixConn, fr *api.FrameReader, fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	srv, ok := d.server(req.Server, peer)
	if !ok {
		log.Info("session refused: unknown server", "server", req.Server)
		reply(fw, api.Reply{Code: api.CodeUnknownServer, Error: unknownServer(req.Server, d.serverNamesFor(peer))}, log)
		return
	}
	s := &session{id: newID(), server: srv.Name, srv: srv, peer: peer, start: time.Now(),
		grace: time.Duration(d.conf().Daemon.StopTimeout), shutdown: make(chan struct{}), policyStop: make(chan struct{}), notify: make(chan struct{}, 1)}
	ap, err := d.agentOf(peer)
	if identity.Refused(err) {
		// One line on the shim's stderr: what happened, and that it is final.
		log.Warn("session refused: the shim's parent did not start it as the program it runs", "err", err)
		d.audit.AppendAsync(audit.Record{"type": "session.refused", "server": srv.Name, "user": userName(peer.UID), "reason": err.Error()})
		reply(fw, api.Reply{Code: api.CodeDenied, Error: "refused: " + err.Error() + ": a session runs only for the program that started the shim"}, log)
		return
	}
	if err != nil {
		log.Warn("session refused: agent not identified", "err", err)
		reply(fw, api.Reply{Code: api.CodeLaunchFailed, Error: fmt.Sprintf("cannot identify the program that started mcpcage run: %v", err)}, log)
		return
	}
	s.agentP, s.agent, s.user = ap, identity.Name(ap, d.agentRules()), userName(peer.UID)
	s.log = log.With("session", s.id, "server", s.server, "agent", s.agent, "user", s.user, "agent_instance", ap.Instance())
	if ap.Binding != identity.BoundKernel {
		s.log.Warn("agent identity not bound by the kernel", "binding", ap.Binding)
	}
	if !d.addSession(s) {
		reply(fw, api.Reply{Code: api.CodeShuttingDown, Error: "mcpcaged is shutting down: try again once it is back"}, log)
		return
	}
	defer d.removeSession(s.id)

	clientInR, clientInW := io.Pipe()
	serverInR, serverInW := io.Pipe()
	serverOutR, serverOutW := io.Pipe()
	stderr := &drainWriter{w: api.StreamWriter{F: fw, Type: api.FrameStderr}}

	pol := &sessionPolicy{d: d, s: s, srv: srv, agent: d.conf().Agents[s.agent], observe: d.conf().Decision(srv) == config.DecisionAllow,
		calls: map[string]callStart{}, defs: map[string]string{}}
	s.policy = pol
	msgs := [2]prometheus.Counter{d.metrics.Messages.WithLabelValues(srv.Name, "client_to_server"), d.metrics.Messages.WithLabelValues(srv.Name, "server_to_client")}
	bytesC := [2]prometheus.Counter{d.metrics.MessageBytes.WithLabelValues(srv.Name, "client_to_server"), d.metrics.MessageBytes.WithLabelValues(srv.Name, "server_to_client")}
	s.relay = relay.New(relay.Options{
		Inspector: pol,
		OnMessage: func(dir relay.Direction, n int) {
			msgs[dir].Inc()
			bytesC[dir].Add(float64(n))
		},
		OnClaims: func(c relay.Claims) {
			d.audit.AppendAsync(s.record("session.claims", audit.Record{"era": string(c.Era), "protocol_version": c.ProtocolVersion, "client_info": json.RawMessage(orNull(c.ClientInfo))}))
		},
		OnAmbiguous: func(dir relay.Direction, problem string) {
			s.denied.Add(1)
			d.audit.AppendAsync(s.record(recordMessageRefused, audit.Record{"direction": dir.String(), "reason": "ambiguous message: " + problem}))
		},
		MaxMessageBytes: int64(d.conf().Daemon.MaxMessageBytes),
		Logger:          s.log,
		OnClientEOF:     func() { go s.stop() },
	}, relay.Streams{
		ClientIn:  clientInR,
		ClientOut: api.StreamWriter{F: fw, Type: api.FrameStdout},
		ServerIn:  serverInW,
		ServerOut: serverOutR,
	})
	params, err := d.sandboxParams(s.id, srv, peer, paramsOptions{resolveSecrets: true, checkMounts: true})
	defer closePins(params)
	if err == nil {
		err = d.checkCommand(srv, params)
	}
	var policy *bpf.Policy
	var hosts *egress.Tracker
	if err == nil {
		policy, hosts, err = d.kernelPolicy(ctx, srv)
	}
	if err == nil {
		// Nothing runs unrecorded: no audit, no session.
		err = d.audit.Append(s.record("session.start", audit.Record{
			"agent_detail": agentDetail(ap),
			"delegator":    map[string]any{"uid": peer.UID, "name": s.user},
			"sandbox": map[string]any{"uid": params.UID, "gid": params.GID, "network": srv.Network, "memory": int64(srv.Memory), "pids": srv.Pids,
				"cpus": srv.CPUs, "seccomp": srv.Seccomp, "landlock": params.Init != "", "mounts": mountList(params), "image": srv.Image,
				"egress": srv.Egress, "listen": srv.Listen, "deny_paths": srv.DenyPatterns()},
			"enforcement":      d.enforcement(),
			"default_decision": d.conf().Decision(srv),
		}))
	}
	if err == nil {
		started := time.Now()
		s.inst, err = d.launch(ctx, s, params, policy, sandbox.Stdio{Stdin: serverInR, Stdout: serverOutW, Stderr: stderr})
		if err == nil {
			d.metrics.SandboxStart.Observe(time.Since(started).Seconds())
		}
	}
	if s.cgid != 0 {
		defer d.unregisterKernel(s)
	}
	if err != nil {
		s.log.Error("launch failed", "err", err)
		reply(fw, api.Reply{Code: api.CodeLaunchFailed, Error: fmt.Sprintf("cannot start server %q: %v", s.server, err)}, log)
		return
	}
	if srv.User == "root" {
		s.log.Warn("server runs as root inside its sandbox (user = \"root\" in its config)")
	}
	go s.watchConsents(d)
	d.metrics.SessionsTotal.WithLabelValues(srv.Name, metrics.Agent(s.agent)).Inc()
	active := d.metrics.SessionsActive.WithLabelValues(srv.Name)
	active.Inc()
	defer active.Dec()
	s.log.Info("session started", "agent_exe", ap.Exe, "agent_sha256", ap.SHA256, "agent_uid", ap.UID, "container", s.inst.ID, "pid", s.inst.Pid, "uid", params.UID, "gid", params.GID,
		"network", srv.Network, "seccomp", srv.Seccomp, "landlock", d.initPath != "", "memory", int64(srv.Memory), "pids", srv.Pids)
	reply(fw, api.Reply{OK: true, Session: s.id}, log)

	go pumpClient(fr, clientInW)
	if s.cgid != 0 && hosts != nil {
		go s.watchEgress(d, hosts)
	}
	go func() {
		select {
		case <-s.shutdown:
			s.stop()
		case <-s.policyStop:
			s.stop()
		case <-s.relay.Done():
		}
	}()

	end := s.relay.Run(func() string {
		select {
		case <-s.inst.Exited():
			code, _ := s.inst.ExitCode()
			return fmt.Sprintf("the MCP server exited with status %d", code)
		case <-time.After(100 * time.Millisecond):
			return "the MCP server closed its output"
		}
	})
	if end.Reason == "client_message_too_large" || end.Reason == "server_message_too_large" {
		s.inst.Kill(context.WithoutCancel(ctx))
	}
	s.stop() // no-op when the ladder already ran; otherwise the server closed stdout while alive
	if s.cgid != 0 {
		// The server's tasks are gone: take in their last kernel events
		// (a deny_paths kill among them) before the session is summed up.
		if err := d.cage.Sync(2 * time.Second); err != nil {
			s.log.Warn("kernel events of the session may be incomplete", "err", err)
		}
		// Nothing of the session runs any more: forget it in the kernel
		// now, before the client hears the session ended.
		d.unregisterKernel(s)
	}
	select {
	case <-s.shutdown:
		end = relay.End{Reason: "daemon_shutdown", Err: errors.New("mcpcaged is shutting down")}
	default:
	}
	exit := api.Exit{Code: -1, Reason: end.Reason}
	if code, err := s.inst.ExitCode(); err == nil {
		exit.Code = int(code)
	}
	limits := s.inst.Limits()
	switch {
	case end.Err != nil:
		exit.Error = end.Err.Error()
	case s.killedBy.Load() != nil:
		exit.Reason = "file_denied"
		exit.Error = fmt.Sprintf("server %q was killed: %s", s.server, s.killedBy.Load())
	case limits.OOMKilled:
		exit.Reason = "memory_limit"
		exit.Error = fmt.Sprintf("server %q was killed: it exceeded its memory limit of %d MiB (raise `memory` in [servers.%s])", s.server, srv.Memory>>20, s.server)
	case end.Reason == "server_exited" && exit.Code != 0:
		exit.Error = fmt.Sprintf("server %q exited with status %d", s.server, exit.Code)
	}
	if limits.OOMKilled {
		s.log.Warn("server killed for exceeding its memory limit", "memory", int64(srv.Memory))
	}
	if limits.PidsLimitHits > 0 {
		s.log.Warn("server hit its process limit", "pids", srv.Pids, "refused_forks", limits.PidsLimitHits)
	}
	b, _ := json.Marshal(exit)
	_ = fw.Write(api.FrameExit, b)
	d.recordDeniedOverflow(s)
	st0 := &s.relay.Stats
	endErr := d.audit.Append(s.record("session.end", audit.Record{"reason": exit.Reason, "exit_code": exit.Code, "error": exit.Error,
		"duration_ms": time.Since(s.start).Milliseconds(), "calls_allowed": s.allowed.Load(), "calls_denied": s.denied.Load(),
		"messages_in": st0.Messages[relay.ClientToServer].Load(), "messages_out": st0.Messages[relay.ServerToClient].Load(),
		"denied_syscalls": s.deniedSyscalls.Load(), "kernel_events": s.kernelEvents.Load(), "kernel_denied": s.deniedKernel.Load()}))
	if endErr != nil {
		s.log.Error("session end not recorded in the audit log", "err", endErr)
	}
	if err := s.inst.Remove(ctx); err != nil {
		s.log.Error("cleanup failed", "err", err)
	}
	st := &s.relay.Stats
	s.log.Info("session ended", "reason", exit.Reason, "exit_code", exit.Code,
		"duration", time.Since(s.start).Round(time.Millisecond).String(),
		"messages_in", st.Messages[relay.ClientToServer].Load(), "messages_out", st.Messages[relay.ServerToClient].Load(),
		"malformed_in", st.Malformed[relay.ClientToServer].Load(), "malformed_out", st.Malformed[relay.ServerToClient].Load(),
		"calls_allowed", s.allowed.Load(), "calls_denied", s.denied.Load(), "client_claims", string(s.relay.Claims().ClientInfo),
		"denied_syscalls", s.deniedSyscalls.Load(), "kernel_events", s.kernelEvents.Load(), "kernel_denied", s.deniedKernel.Load())
}

// stop runs the stop ladder once and waits for the server to exit.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		s.inst.Stop(context.Background(), s.grace)
	})
	<-s.inst.Exited()
}

// stopForPolicy makes the session stop its server (a rule was broken);
// safe to call before the server has started.
func (s *session) stopForPolicy() {
	s.policyOnce.Do(func() { close(s.policyStop) })
}

// endForShutdown makes the session stop its server now.
func (s *session) endForShutdown() {
	s.shutOnce.Do(func() { close(s.shutdown) })
}

func (d *Daemon) launch(ctx context.Context, s *session, p sandbox.Params, policy *bpf.Policy, stdio sandbox.Stdio) (*sandbox.Instance, error) {
	spec, err := sandbox.BuildSpec(p)
	if err != nil {
		return nil, err
	}
	o := sandbox.StartOptions{
		ID:     p.ID,
		Image:  s.srv.Image,
		Spec:   spec,
		Labels: map[string]string{sandbox.LabelServer: s.server, sandbox.LabelSession: s.id},
		Stdio:  stdio,
		Mounts: p.Mounts,
	}
	if policy != nil {
		// The task exists but has not run a single instruction of the
		// server: put its cgroup under the kernel's watch now.
		o.BeforeStart = func(ctx context.Context, pid uint32) error {
			cgid, err := d.sessionCgroup(pid, p.CgroupsPath)
			if err != nil {
				return fmt.Errorf("find the session's cgroup: %w", err)
			}
			if err := d.cage.Register(cgid, *policy); err != nil {
				return errors.Join(err, d.cage.Unregister(cgid))
			}
			s.cgid = cgid
			d.mu.Lock()
			d.byCgroup[cgid] = s
			d.mu.Unlock()
			return nil
		}
	}
	return d.launcher.Start(ctx, o)
}

// kernelPolicy returns the session's kernel policy, nil when eBPF is
// unavailable and the server may run without it.
func (d *Daemon) kernelPolicy(ctx context.Context, srv *config.Server) (*bpf.Policy, *egress.Tracker, error) {
	if d.cage == nil {
		if why := needsEBPF(srv); why != "" && d.conf().Daemon.EBPFRequired() {
			return nil, nil, fmt.Errorf("%s need eBPF, which is unavailable here (%s): see `mcpcage status`, or set require_ebpf = false to run without kernel enforcement", why, d.ebpfErr)
		}
		return nil, nil, nil
	}
	p, entries, err := d.policyFor(ctx, srv)
	if err != nil {
		return nil, nil, err
	}
	return &p, entries, nil
}

// unregisterKernel removes the session from the kernel maps (once).
func (d *Daemon) unregisterKernel(s *session) {
	s.unregisterOnce.Do(func() {
		if err := d.cage.Unregister(s.cgid); err != nil {
			s.log.Error("kernel state of the session not fully removed", "cgroup_id", s.cgid, "err", err)
		}
		d.mu.Lock()
		delete(d.byCgroup, s.cgid)
		d.mu.Unlock()
	})
}

// relayDone is closed when the session's relay ends.
func (s *session) relayDone() <-chan struct{} { return s.relay.Done() }

// pumpClient turns the shim's frames into the client input stream.
func pumpClient(fr *api.FrameReader, w *io.PipeWriter) {
	for {
		t, payload, err := fr.Next()
		if err != nil {
			w.CloseWithError(errClientGone)
			return
		}
		switch t {
		case api.FrameStdin:
			if _, err := w.Write(payload); err != nil {
				// The relay stopped reading; keep draining frames until
				// the connection closes so the shim never blocks.
				continue
			}
		case api.FrameStdinEOF:
			w.Close()
		}
	}
}

// drainWriter never fails and never blocks the server on a dead client:
// after the first error it discards everything.
type drainWriter struct {
	mu   sync.Mutex
	w    io.Writer
	dead bool
}

func (d *drainWriter) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.dead {
		if _, err := d.w.Write(p); err != nil {
			d.dead = true
		}
	}
	return len(p), nil
}

func (d *drainWriter) Close() error { return nil }

// watchConsents tells the client when what it may use changes: on grants
// and revocations that concern the session, and when a consent expires.
func (s *session) watchConsents(d *Daemon) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		t.Stop()
		var expiry <-chan time.Time
		if next := d.consents.NextExpiry(s.user, s.agent, s.server, time.Now()); !next.IsZero() {
			t.Reset(time.Until(next) + 10*time.Millisecond)
			expiry = t.C
		}
		select {
		case <-s.relay.Done():
			return
		case <-s.notify:
		case <-expiry:
			d.consents.Invalidate()
		}
		if s.relay.Claims().Era == relay.EraUnknown {
			continue // the client has not started the protocol yet
		}
		s.tellListChanged()
	}
}

// tellListChanged sends notifications/tools/list_changed the way the
// client's era allows: untagged in the initialize era; in the stateless
// era only on the client's open subscriptions/listen streams that asked
// for it, tagged with each stream's id (none open: nothing is sent).
func (s *session) tellListChanged() {
	msgs := [][]byte{[]byte(listChangedUntagged)}
	if s.relay.Claims().Era == relay.EraStateless {
		msgs = s.policy.listens.toolsListChanged()
		if len(msgs) == 0 {
			s.log.Info("tool list changed; the client has no subscriptions/listen stream for it, so it was not told")
			return
		}
	}
	for _, m := range msgs {
		if err := s.relay.Notify(m); err != nil {
			return
		}
	}
	s.log.Info("told the client its tool list changed", "streams", len(msgs))
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return "uid:" + strconv.FormatUint(uint64(uid), 10)
}

func orNull(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}

func mountList(p sandbox.Params) []string {
	var out []string
	for _, m := range p.Mounts {
		mode := "ro"
		if m.Writable {
			mode = "rw"
		}
		out = append(out, m.Source+":"+m.Target+":"+mode)
	}
	return out
}
