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
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/bpf/egress"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/internal/contain"
	"github.com/mcpcage/mcpcage/sandbox"
)

// session is one client connected to one sandboxed server.
type session struct {
	id              string
	server          string
	serverLabel     string         // the server's label in metrics (metrics.Server)
	srv             *config.Server // the definition the session started with (reloads do not change it)
	peer            Peer
	user            string           // the delegating user's name
	agent           string           // registered agent name, or exe:PATH
	agentP          identity.Process // the agent process as the kernel shows it
	notify          chan struct{}    // consent changes that may alter what the agent sees
	allowed, denied atomic.Int64
	start           time.Time
	inst            *sandbox.Instance // the sandboxed server (nil for a remote one)
	handle          serverHandle      // the server the session runs against: inst, or a remote bridge
	remote          *remoteServer     // the bridge of a remote server (nil for a sandboxed one)
	relay           *relay.Relay
	policy          *sessionPolicy
	log             *slog.Logger
	digests         *audit.Digester // args_digest and prompt_digest: the delegating user's (digestsFor)
	over            atomic.Bool     // the session stopped waiting for its relay (awaitRelay returned)

	deniedSyscalls  atomic.Int64
	kernelEvents    atomic.Int64
	deniedKernel    atomic.Int64
	kernelDenials   recordBudget  // the repeatable ones, recorded one by one up to a bound
	pinChanges      pinChanges    // held-back definitions recorded, within a budget
	lists           listRecords   // the lists recorded: each once
	recordsDropped  atomic.Int64  // its kernel events' records the audit queue had no room for
	opensFolded     uint64        // opens deny-checked but folded into a recorded one (kernel)
	eventsThrottled uint64        // kernel events the session's budget refused: not recorded
	callEpoch       atomic.Uint64 // tool calls forwarded, told to the kernel (newCall)
	killedBy        atomic.Value  // string: why the kernel killed the server
	maskLost        atomic.Bool   // killedBy says a hidden path became visible (watchMasks)
	cgroupKilled    atomic.Bool   // killSession wrote cgroup.kill (once)
	policyStop      chan struct{} // closed when a broken rule ends the session
	policyOnce      sync.Once
	unregisterOnce  sync.Once
	cgid            uint64                                // session cgroup id, 0 without eBPF
	cgroupsPath     string                                // its path in each cgroup hierarchy ("/ns/mcpcage-ID")
	egressFirst     []bpf.EgressRule                      // the egress rules the session was registered with
	egressMu        sync.Mutex                            // orders watchEgress's updates with unregisterKernel
	egressUnwritten atomic.Bool                           // watchEgress could not write the rules: none are in force
	kernelGone      bool                                  // unregisterKernel ran (under egressMu)
	refusedAnswers  atomic.Pointer[map[netip.Addr]string] // DNS answers egress refuses -> why (egressanswers.go)
	renameMounts    []renameMount                         // writable mounts whose renames fanotify reports (renamecheck.go)
	renameReleases  []func()
	renameChecks    renameChecks // renames waiting for their check, off the kernel-event loop (renamecheck.go)
	changesWatched  bool         // every writable mount is watched: fanotify checks deletions and attribute changes (fschanges.go)

	stopOnce sync.Once
	grace    time.Duration
	shutdown chan struct{} // closed when the daemon ends the session
	shutOnce sync.Once

	streams sessionStreams // the sandbox's ends of the relay's pipes, until the server starts
	stdio   api.StdioMode  // how the client's stream reaches the relay

	agentInstance string // agentP.Instance(), computed once
	whoOnce       sync.Once
	who           sessionWho // the who-and-what fields, boxed (whoFields)

	pinKey    string       // whose tool pins the session's server uses (see pinKey)
	code      string       // shown in the session's consent questions and by mcpcage sessions
	limiter   ask.Limiter  // the session's consent questions
	warm      *warmSandbox // the prepared sandbox taken for the session, until startSandbox
	warmStart bool         // the server started in a prepared sandbox
	injected  []string     // secret values its server's env got from any store, as resolved at its start (scrubbed from its records)

	run        *flow.Run    // the agent run the session belongs to (the data-flow guard)
	suspectEnd atomic.Value // string: why a suspect influence ended the session
	// internalEnd: a bug of mcpcaged's in dealing with the session (one
	// of its goroutines, or its kernel events) stopped its server
	// (endForBug).
	internalEnd atomic.Bool
	// ending, accounting: the session is being ended (endSession), its
	// end recorded and its container removed (accountSession).
	ending, accounting atomic.Bool
	calls              atomic.Uint64
}

// runKey names the session's agent run in records (flow.Run.ID).
func (s *session) runKey() string {
	if s.run == nil {
		return ""
	}
	return s.run.ID
}

// nextCall names a tools/call for the audit log and mcpcage why.
func (s *session) nextCall() string {
	return s.id + "." + strconv.FormatUint(s.calls.Add(1), 10)
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errSessionOver ends what is left of a session's streams.
var errSessionOver = errors.New("the session is over")

// errClientGone ends the client stream when the shim's connection drops.
var errClientGone = errors.New("shim connection lost")

// runSession serves one `mcpcage run`: who is asking, for which server,
// in which sandbox; then the relay until either side ends; then the
// account of the session.
//
// takeFiles receives the client's files when the shim passes them
// (req.PassStdio): it is called once the session is admitted, so a
// refused one never takes any.
func (d *Daemon) runSession(ctx context.Context, c *net.UnixConn, fr *api.FrameReader, fw *api.FrameWriter, peer Peer, req api.Request, takeFiles func() (*passedStdio, *api.FrameReader, error), log *slog.Logger) {
	s, refused := d.admitSession(peer, req, log)
	if s == nil {
		reply(fw, refused, log)
		return
	}
	if !d.addSession(s) {
		if s.warm != nil {
			_ = d.warm.discard(s.warm) // logged
		}
		reply(fw, api.Reply{Code: api.CodeShuttingDown, Error: "mcpcaged is shutting down: try again once it is back"}, log)
		return
	}
	defer d.removeSession(s)
	var stdio *passedStdio
	var err error
	if req.PassStdio {
		if stdio, fr, err = takeFiles(); errors.Is(err, errFramedInstead) {
			stdio, err = nil, nil // the shim relays in frames: the reply says so
		} else if errors.Is(err, errFilesFullOldShim) {
			if s.warm != nil {
				_ = d.warm.discard(s.warm) // logged
			}
			reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, log)
			return
		} else if err != nil {
			if s.warm != nil {
				_ = d.warm.discard(s.warm) // logged
			}
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error() + ": mcpcage run passes the pipes its MCP client gave it"}, log)
			return
		}
	}
	// The server as it is now: the shim's hand-off of its files can take
	// seconds, in which the configuration may be reloaded or the user's
	// own server changed or removed. The session starts under what holds
	// when it starts, not under what held when it was admitted (found by
	// a red-team helper: a session admitted before a reload that took an
	// egress host away reached that host). A sandbox prepared before is
	// still taken only if its spec matches the one built now.
	if srv, ok := d.server(s.server, peer); ok {
		// And what admission made of it: the name may now be another
		// server (a user's own, or the administrator's of that name, which
		// wins): its pins, metrics label and stop timeout follow it (found
		// by a review helper: the session kept the other one's pin key).
		label, pinKey := metrics.Server(srv.Name, srv.Personal), d.pinKey(srv.Name, peer.UID)
		grace, agent := time.Duration(d.conf().Daemon.StopTimeout), identity.Name(s.agentP, d.agentRules())
		logger := log.With("session", s.id, "server", s.server, "agent", agent, "user", s.user, "agent_instance", s.agentInstance)
		d.mu.Lock() // the session is listed (sessions, status) meanwhile
		s.srv, s.serverLabel, s.grace, s.agent, s.log = srv, label, grace, agent, logger
		oldPinKey := s.pinKey
		s.pinKey = pinKey
		d.mu.Unlock()
		if oldPinKey != s.pinKey {
			// The pins of the server it was admitted to, if that was
			// removed meanwhile, waited for this session to end: it no
			// longer uses them.
			d.forgetPinsOfRemovedServer(oldPinKey)
		}
	} else {
		if s.warm != nil {
			_ = d.warm.discard(s.warm) // logged
		}
		log.Info("session refused: its server was removed while the session started", "server", s.server)
		reply(fw, api.Reply{Code: api.CodeUnknownServer, Error: unknownServer(s.server, d.serverNamesFor(peer))}, log)
		return
	}
	s.run = d.runs.Attach(peer.UID, s.user, s.agentP.PID, s.agentP.StartTime)
	defer d.runs.Detach(s.run)

	pumpClient := s.buildRelay(d, fw, stdio)
	var params sandbox.Params
	var hosts *egress.Tracker
	if s.srv.IsRemote() {
		err = d.startRemote(s)
	} else {
		params, hosts, err = d.startSandbox(ctx, s)
	}
	defer closePins(params)
	defer s.releaseRenames()
	defer d.unregisterKernel(s)
	if err != nil {
		s.log.Error("launch failed", "err", err)
		reply(fw, api.Reply{Code: api.CodeLaunchFailed, Error: fmt.Sprintf("cannot start server %q: %v", s.server, err)}, log)
		return
	}
	// From here on the server runs: a bug of mcpcaged's that cuts this
	// function short (a panic, contained by the connection's handler)
	// must not leave it running outside the session's bounds and record.
	accounted := false
	defer func() {
		if !accounted {
			d.endBrokenSession(ctx, s, fw, stdio, c)
		}
	}()
	active := d.metrics.SessionsActive.WithLabelValues(s.serverLabel)
	active.Inc()
	defer active.Dec()
	if s.remote != nil {
		d.announceRemote(s)
	} else {
		d.announceSession(s, params)
	}
	beforeSessionReply()
	reply(fw, api.Reply{OK: true, Session: s.id, Stdio: s.stdio}, log)
	s.streams.stderr.open() // what the server wrote on stderr as it started, after the reply

	// The session's goroutines that deal with what its peers send are
	// contained: a bug of mcpcaged's there ends this session only.
	s.relay.Go("client frames", func() { pumpClient(fr) })
	s.relay.Go("consents", func() { s.watchConsents(d) })
	if hosts != nil {
		s.relay.Go("egress", func() { s.watchEgress(d, hosts, s.egressFirst) })
	}
	go s.stopOnRequest()
	if stdio != nil {
		go s.boundClientWrites(stdio.stdout)
	}
	// What lets go of the client when the relay cannot end by itself
	// (see awaitRelay): its passed files, or the shim's connection.
	cut := func() { _ = c.SetDeadline(time.Now()) }
	if stdio != nil {
		cut = stdio.abandon
	}
	failpointPanic("started", s.server)
	ended := make(chan relay.End, 1)
	contain.Go(func() { ended <- s.relay.Run(s.serverGone) }, func(p contain.Panic) {
		s.log.Error("internal error: the session ends; mcpcaged goes on (please report this)", "in", "relay", "panic", p.Value, "stack", p.Stack)
		d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
		s.relay.Abort()
		s.endForBug()
		ended <- relay.End{Reason: api.ExitInternal, Err: relay.ErrInternal}
	})
	end := s.awaitRelay(ended, cut)
	s.over.Store(true)

	exit := d.endSession(ctx, s, end)
	b, _ := json.Marshal(exit)
	// A shim that stopped reading cannot hold the end of the session: the
	// exit has closeWait to go out (a stderr copy blocked on the
	// connection ends then too).
	_ = c.SetWriteDeadline(time.Now().Add(closeWait))
	_ = fw.Write(api.FrameExit, b)
	if stdio != nil {
		// Nothing more goes to or comes from the client: whatever still
		// waits on its files (a stderr copy) ends now.
		stdio.expire()
	}
	d.accountSession(ctx, s, exit)
	accounted = true
}

// serveRun takes the user's session slot and runs the session, which
// receives the client's files once admitted when the shim passes them
// (the only time the daemon takes files, see passrights.go). The slot is
// given back once the session has ended and the daemon's copies of the
// client's files and connection are closed: a read, write or close of a
// pipe can wait on its lock, which a process sharing it can hold (see
// stdio.go), and the slot bounds the daemon threads one user can keep
// waiting that way. A daemon-wide slot (clientFiles), taken before the
// files and given back with the user's, bounds all users' together; past
// it the session runs framed.
func (d *Daemon) serveRun(ctx context.Context, c *net.UnixConn, fr *api.FrameReader, fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	release, err := d.sessionSlots.takeUpTo(peer.account(), d.conf().Daemon.MaxSessionsPerUser)
	if err != nil {
		d.sessionSlots.refused(log, "session refused", err)
		reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, log)
		return
	}
	var stdio *passedStdio
	releaseFiles := func() {} // the daemon-wide slot of the client's files, once taken
	defer func() {
		closed := make(chan struct{})
		held, filesClosed := d.clientFiles.tracker()
		go func() {
			defer release()
			defer filesClosed() // after the slot is back: a count of 0 means it is
			defer releaseFiles()
			defer close(closed)
			_ = c.Close() // files queued on it unread are dropped here
			if stdio != nil {
				stdio.close() // waits for what is in progress on them
			}
		}()
		t := time.NewTimer(closeWait)
		defer t.Stop()
		select {
		case <-closed:
		case <-t.C:
			held()
			log.Warn("the client's files are closed later: a read, write or close of them waits on a pipe's lock another process holds; the session counts toward the user's max_sessions_per_user, and toward the sessions whose files the daemon holds, until then",
				"waited", closeWait, "held", d.clientFiles.Held(), "holding_files", d.clientFiles.InUse(), "bound", maxClientFiles)
		}
	}()
	takeFiles := func() (*passedStdio, *api.FrameReader, error) {
		rel, err := d.clientFiles.take()
		if err != nil && !req.TakesFramed {
			log.Warn("session refused", "reason", err, "bound", maxClientFiles)
			return nil, fr, errFilesFullOldShim
		}
		if err != nil {
			log.Warn("the session's stdio is relayed by its shim in frames", "reason", err, "bound", maxClientFiles)
			return nil, fr, err
		}
		releaseFiles = rel
		p, r, err := receiveStdio(c, fw, peer.UID)
		switch {
		case errors.Is(err, errForeignStream) && req.TakesFramed:
			log.Warn("the session's stdio is relayed by its shim in frames", "reason", err)
			rel()
			releaseFiles = func() {}
			return nil, r, errFramedInstead
		case errors.Is(err, errForeignStream):
			return nil, r, fmt.Errorf("%w; this mcpcage run is older than mcpcaged and cannot relay it itself: update mcpcage (one package holds both)", err)
		}
		stdio = p // closed with the connection, above
		return p, r, err
	}
	d.runSession(ctx, c, fr, fw, peer, req, takeFiles, log)
}

// admitSession finds the server and identifies the agent; it returns the
// new session, or nil and the reply that refuses it.
func (d *Daemon) admitSession(peer Peer, req api.Request, log *slog.Logger) (*session, api.Reply) {
	srv, ok := d.server(req.Server, peer)
	if !ok {
		log.Info("session refused: unknown server", "server", req.Server)
		return nil, api.Reply{Code: api.CodeUnknownServer, Error: unknownServer(req.Server, d.serverNamesFor(peer))}
	}
	ap, err := d.agentOf(peer)
	if identity.Refused(err) {
		// One line on the shim's stderr: what happened, and that it is final.
		log.Warn("session refused: the process that connected does not speak for its parent's program", "err", err)
		d.audit.AppendAsync(sessionRefusedRecord(srv.Name, userName(peer.UID), err.Error()))
		return nil, api.Reply{Code: api.CodeDenied, Error: "refused: " + err.Error() + ": a session runs only for the program that started the shim"}
	}
	if err != nil {
		log.Warn("session refused: agent not identified", "err", err)
		return nil, api.Reply{Code: api.CodeLaunchFailed, Error: fmt.Sprintf("cannot identify the program that started mcpcage run: %v", err)}
	}
	id := newID()
	ws := d.warm.take(warmKey{server: srv.Name, uid: peer.UID})
	if ws != nil {
		id = ws.id // the sandbox was built for this session id
	}
	s := &session{id: id, digests: d.digestsFor(peer.UID), warm: ws, server: srv.Name, serverLabel: metrics.Server(srv.Name, srv.Personal), srv: srv, peer: peer, start: time.Now(), agentP: ap,
		agent: identity.Name(ap, d.agentRules()), user: userName(peer.UID),
		grace: time.Duration(d.conf().Daemon.StopTimeout), shutdown: make(chan struct{}), policyStop: make(chan struct{}), notify: make(chan struct{}, 1)}
	s.agentInstance = ap.Instance()
	s.pinKey = d.pinKey(srv.Name, peer.UID)
	s.code = ask.NewCode()
	s.log = log.With("session", s.id, "server", s.server, "agent", s.agent, "user", s.user, "agent_instance", s.agentInstance)
	if ap.Binding != identity.BoundKernel {
		s.log.Warn("agent identity not bound by the kernel", "binding", ap.Binding)
	}
	return s, api.Reply{}
}

// sessionStreams are the sandbox's ends of the relay's streams: pipes
// containerd copies from and to when mcpcage-init is not installed (nil
// otherwise: the server's stdio are the daemon's own FIFOs, see
// sandbox.ServerStdio), and its stderr.
type sessionStreams struct {
	serverInR  *io.PipeReader
	serverOutR *io.PipeReader // the relay's end of serverOutW
	serverOutW *io.PipeWriter
	stderr     *drainWriter
	// serverOut is the daemon's end of the server's stdout FIFO, closed
	// with the session.
	serverOut io.Closer
	// stderrDone is closed once the server's stderr FIFO is drained (nil
	// when containerd copies it).
	stderrDone chan struct{}
}

// buildRelay sets up the session's policy and relay; it returns what
// reads the shim's frames for the session's life. With passed stdio the
// relay reads and writes the client's own pipes and the shim's frames
// only end the input; otherwise stdin and stdout travel in frames.
func (s *session) buildRelay(d *Daemon, fw *api.FrameWriter, stdio *passedStdio) func(*api.FrameReader) {
	srv := s.srv
	var clientIn io.ReadCloser
	var clientOut io.Writer
	var stderr io.Writer = api.StreamWriter{F: fw, Type: api.FrameStderr}
	var pump func(*api.FrameReader)
	s.stdio = api.StdioFramed
	if stdio != nil {
		s.stdio = api.StdioPassed
		in := &stoppableReader{f: stdio.stdin, out: stdio.stdout, gone: s.shimGone}
		clientIn, clientOut, pump = in, stdio.stdout, in.follow
		if stdio.stderr != nil {
			stderr = stdio.stderr
		}
	} else {
		clientInR, clientInW := io.Pipe()
		clientIn, clientOut = clientInR, api.StreamWriter{F: fw, Type: api.FrameStdout}
		pump = func(fr *api.FrameReader) { pumpFrames(fr, clientInW) }
	}
	// stderr in frames waits for the reply that starts the session.
	framed := stdio == nil || stdio.stderr == nil
	s.streams = sessionStreams{stderr: &drainWriter{w: stderr, held: framed}}
	var serverIn io.WriteCloser
	var serverOut io.Reader
	if d.initPath == "" && !srv.IsRemote() {
		// containerd copies the server's stdio: the relay joins it by pipes.
		serverInR, serverInW := io.Pipe()
		serverOutR, serverOutW := io.Pipe()
		s.streams.serverInR, s.streams.serverOutR, s.streams.serverOutW = serverInR, serverOutR, serverOutW
		serverIn, serverOut = serverInW, serverOutR
	}
	s.policy = &sessionPolicy{d: d, s: s, srv: srv, agent: d.conf().Agents[s.agent], observe: d.conf().Decision(srv) == config.DecisionAllow,
		ask: askMode(d.conf(), srv), calls: map[string]callStart{}, defs: map[string]string{}, questions: map[string]chan struct{}{}}
	s.policy.callCounters.Limit, s.policy.callLatency.Limit = sessionMetricChildren, sessionMetricChildren
	msgs := [2]prometheus.Counter{d.metrics.Messages.WithLabelValues(s.serverLabel, "client_to_server"), d.metrics.Messages.WithLabelValues(s.serverLabel, "server_to_client")}
	bytesC := [2]prometheus.Counter{d.metrics.MessageBytes.WithLabelValues(s.serverLabel, "client_to_server"), d.metrics.MessageBytes.WithLabelValues(s.serverLabel, "server_to_client")}
	s.relay = relay.New(relay.Options{
		Inspector: s.policy,
		OnMessage: func(dir relay.Direction, n int) {
			msgs[dir].Inc()
			bytesC[dir].Add(float64(n))
		},
		OnClaims: func(c relay.Claims) { d.audit.AppendAsync(s.claimsRecord(c)) },
		OnAmbiguous: func(dir relay.Direction, problem string) {
			s.denied.Add(1)
			d.audit.AppendAsync(s.messageRefusedRecord(refusal{dir: dir, reason: "ambiguous message: " + problem}))
		},
		MaxMessageBytes: int64(d.conf().Daemon.MaxMessageBytes),
		Logger:          s.log,
		OnClientEOF:     func() { go s.stop() },
		OnInternalError: func() {
			d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
			s.endForBug()
		},
		ScrubLog:           func(text string) string { return audit.ScrubText(text, s.policy.secretValues()) },
		AfterServerMessage: s.policy.afterServerMessage,
	}, relay.Streams{
		ClientIn:  clientIn,
		ClientOut: clientOut,
		ServerIn:  serverIn,
		ServerOut: serverOut,
	})
	return pump
}

// startSandbox prepares the server's sandbox and kernel policy (or takes
// the warm one prepared for it), records the session's start (nothing runs
// unrecorded) and starts the server. The egress tracker is nil when the
// session has no kernel policy.
func (d *Daemon) startSandbox(ctx context.Context, s *session) (sandbox.Params, *egress.Tracker, error) {
	srv := s.srv
	ws := s.warm
	s.warm = nil
	defer func() {
		if ws != nil { // not taken: a failure before the check
			_ = d.warm.discard(ws) // logged
		}
	}()
	params, err := d.sandboxParams(ctx, s.id, srv, s.peer, paramsOptions{resolveSecrets: true, checkMounts: true, resolveImage: true, agent: s.agent})
	if err != nil {
		return params, nil, err
	}
	// Every value a store gave the server, the administrator's too: the
	// records of this session scrub them (a cut argument ending with the
	// head of one included) for as long as it runs, whatever the stores
	// hold by then (found by a red-team helper: once an administrator's
	// secret was set anew, a running session's records showed the old
	// value, and an admin server's cut arguments were never checked).
	s.injected = injectedSecrets(srv, params)
	if err := d.checkCommand(srv, params); err != nil {
		return params, nil, err
	}
	s.scanDenied(&params)
	policy, hosts, refused, err := d.kernelPolicy(ctx, srv)
	if err != nil {
		return params, nil, err
	}
	s.setRefusedAnswers(refused)
	if policy != nil {
		s.egressFirst = policy.Egress // what watchEgress starts from
	}
	if policy != nil {
		policy.ChangesWatched = d.watchRenames(s, params.Mounts) // before the server runs
		s.changesWatched = policy.ChangesWatched
	}
	started := time.Now()
	var prep *sandbox.Prepared
	var fifos *sandbox.ServerStdio
	outcome := warmMiss
	if ws != nil {
		var why string
		prep, fifos, why, err = d.warm.adopt(ctx, ws, srv, params)
		ws = nil
		if err != nil {
			return params, nil, err
		}
		if why != "" {
			outcome = warmStale
			s.log.Info("warm sandbox outdated, starting a new one", "why", why)
		} else {
			outcome = warmHit
		}
	}
	if d.warm.disabledWhy() == "" {
		d.metrics.WarmStarts.WithLabelValues(string(outcome)).Inc()
	}
	s.warmStart = prep != nil
	defer func() { // a no-op once started; logged
		if prep != nil {
			_ = prep.Discard(ctx)
		}
	}()
	var stdio sandbox.Stdio // none from containerd when the FIFOs are the server's
	if d.initPath != "" && fifos == nil {
		if fifos, err = sandbox.NewServerStdio(filepath.Join(d.stdioRoot, s.id), params.GID); err != nil {
			return params, nil, err
		}
	}
	if fifos != nil {
		defer func() { _ = fifos.Close() }()
		params.StdioDir = fifos.Dir()
	} else {
		stdio = sandbox.Stdio{Stdin: s.streams.serverInR, Stdout: s.streams.serverOutW, Stderr: s.streams.stderr}
	}
	if err := d.audit.Append(s.sessionStartRecord(s.agentP, params, d.enforcement(), d.conf().Decision(srv))); err != nil {
		return params, nil, err
	}
	if prep == nil {
		if prep, err = d.create(ctx, srv, s.peer.UID, s.id, params, stdio); err != nil {
			return params, nil, err
		}
	}
	var before func(context.Context, uint32) error
	if policy != nil {
		// The task exists but has not run a single instruction of the
		// server: put its cgroup under the kernel's watch now.
		before = func(ctx context.Context, pid uint32) error {
			return d.registerKernel(s, pid, params.CgroupsPath, *policy)
		}
	}
	built := time.Now()
	if fifos != nil {
		// The daemon's ends open while containerd starts the task:
		// mcpcage-init finds them ready instead of waiting for Start to
		// return (the task has not run yet, so nothing opens them early).
		fifos.Open()
	}
	if s.inst, err = prep.Start(ctx, before); err != nil {
		return params, nil, err
	}
	s.handle = s.inst
	ready := false
	defer func() {
		if !ready && s.inst != nil { // a bug of mcpcaged's (a panic) from here on
			d.abandonInstance(ctx, s)
		}
	}()
	s.relay.Go("masks", func() { d.watchMasks(s, s.inst, params.UID) })
	running := time.Now()
	if fifos != nil {
		in, out, errOut, err := fifos.Connect(s.handle.Exited(), stdioConnectWait)
		if err != nil {
			s.inst.Kill(ctx)
			<-s.inst.Exited()
			if rerr := s.inst.Remove(ctx); rerr != nil {
				s.log.Error("cleanup failed", "err", rerr)
			}
			s.inst, s.handle = nil, nil
			return params, nil, err
		}
		s.relay.AttachServer(in, out)
		s.streams.serverOut = out
		s.streams.stderrDone = make(chan struct{})
		s.relay.Go("stderr", func() { copyStderr(errOut, s.streams.stderr, s.streams.stderrDone) })
	}
	d.metrics.SandboxStart.Observe(time.Since(started).Seconds())
	s.log.Debug("sandbox started", "warm", s.warmStart, "build", built.Sub(started), "start", running.Sub(built), "stdio_connect", time.Since(running))
	if policy == nil {
		hosts = nil
	}
	ready = true
	return params, hosts, nil
}

// scanDenied searches p's mounts for deny_paths entries to mask, once:
// the spec and the session.start record use the same search. A search
// cut short is said: a denied entry there may be unmasked, left to the
// kernel's check alone.
func (s *session) scanDenied(p *sandbox.Params) {
	scan := sandbox.ScanDenied(p.Mounts, p.DenyNames)
	p.Denied = &scan
	for _, c := range scan.Incomplete {
		if !c.Reason.Budget() {
			// The depth bound (only names deeper than it are unread: no
			// content of the mount can push a shallower one out), or a
			// directory the user may search but not list (its denied
			// names were looked up; the rest is the kernel check's).
			s.log.Debug("deny_paths search of a mount was not whole", "mount", c.Mount, "reason", string(c.Reason), "depth", sandbox.DenyScanDepth)
			continue
		}
		s.log.Warn("deny_paths search of a mount was cut short: a denied entry there may be unmasked, left to the kernel's kill-on-open check; "+
			"move bulky or server-written trees out of that mount, or mount a narrower directory",
			"mount", c.Mount, "reason", c.Reason, "entries", sandbox.DenyScanEntries, "masks", sandbox.DenyScanMasks, "directory_entries", sandbox.DenyScanDirEntries)
	}
}

// announceSession counts and logs a session whose server runs.
func (d *Daemon) announceSession(s *session, params sandbox.Params) {
	srv, ap := s.srv, s.agentP
	if srv.User == "root" {
		s.log.Warn("server runs as root inside its sandbox (user = \"root\" in its config)")
	}
	d.metrics.SessionsTotal.WithLabelValues(s.serverLabel, metrics.Agent(s.agent)).Inc()
	s.log.Info("session started", "agent_exe", ap.Exe, "agent_sha256", ap.SHA256, "agent_uid", ap.UID, "container", s.inst.ID, "pid", s.inst.Pid, "uid", params.UID, "gid", params.GID,
		"network", srv.Network, "seccomp", srv.Seccomp, "landlock", d.landlockOn, "memory", int64(srv.Memory), "pids", srv.Pids, "stdio", s.stdio, "server_stdio", serverStdio(params), "warm", s.warmStart)
}

// stopOnRequest stops the server when the daemon shuts down or a broken
// rule ends the session, or stop_timeout after the relay has ended when
// the server has not exited by then: the end of the session, which stops
// it otherwise, waits for the relay's writer, which a process of the
// sandbox can hold on its stdin pipe's lock (see stopServer).
func (s *session) stopOnRequest() {
	select {
	case <-s.shutdown:
	case <-s.policyStop:
	case <-s.relay.Done():
		t := time.NewTimer(s.grace)
		defer t.Stop()
		select {
		case <-s.handle.Exited():
			return
		case <-t.C:
		}
	}
	s.stopServer()
}

// stopServer runs the stop ladder: the server's stdin ends now (its FIFO
// is the daemon's, containerd cannot close it), then SIGTERM and SIGKILL
// of the whole sandbox a stop_timeout apart. The close runs beside the
// ladder, never ahead of it: it waits for a write to the FIFO in progress,
// and a process of the sandbox can hold the pipe's lock (a splice from it
// into a full socket) so that the write, and the close, wait until that
// process dies (found by a red-team helper: the ladder never started, and
// the server outlived its shim, the daemon's stop and end-session).
func (s *session) stopServer() {
	s.relay.CloseServerIn() // does not wait for the close
	s.stop()
}

// boundClientWrites gives the client stop_timeout to read what the
// server wrote once the server has exited: a client that stopped reading
// cannot keep the session (and its container) alive.
func (s *session) boundClientWrites(out *clientStream) {
	<-s.handle.Exited() // always closed by the end of the session
	_ = out.SetWriteDeadline(time.Now().Add(s.grace))
}

// relayEndWait is how long, past the grace the client has to take the
// server's last output (boundClientWrites), the end of a session waits
// for its relay before it lets go of the client.
const relayEndWait = 2 * time.Second

// awaitRelay waits for the relay's end. Once the server has exited, the
// relay has stop_timeout and relayEndWait to end; one that has not waits
// on the client's files where no deadline reaches (a pipe's lock another
// process holds, see stdio.go), or on a shim that stopped reading. The
// session then lets go of the client (cut), records the results the
// server gave, and ends without the relay, which ends by itself once the
// lock is released.
func (s *session) awaitRelay(ended <-chan relay.End, cut func()) relay.End {
	select {
	case end := <-ended:
		return end
	case <-s.handle.Exited():
	}
	t := time.NewTimer(s.grace + relayEndWait)
	defer t.Stop()
	select {
	case end := <-ended:
		return end
	case <-t.C:
	}
	select {
	case end := <-ended: // it ended as the time ran out
		return end
	default:
	}
	cut()
	s.policy.afterServerMessage()
	why := "the client's pipes stayed locked (another process holds the lock of a pipe the client passed, such as a splice from a blocking socket)"
	if s.stdio == api.StdioFramed {
		why = "the shim stopped reading what the server sent"
	}
	s.log.Warn("the relay did not end after the server exited: the session ends without its client", "why", why, "waited", s.grace+relayEndWait)
	return relay.End{Reason: api.ExitClientStuck, Err: fmt.Errorf("the session of server %q ended without its client: %s", s.server, why)}
}

// shimGone ends a session whose shim is gone even when its relay cannot
// see it (a read of the client's stdin that waits on a pipe's lock): if
// the relay has not ended within stop_timeout, the server is stopped.
func (s *session) shimGone() {
	go func() {
		t := time.NewTimer(s.grace)
		defer t.Stop()
		select {
		case <-s.relay.Done():
			return
		case <-t.C:
		}
		if s.over.Load() {
			return
		}
		s.log.Warn("the shim is gone but the relay still reads the client's stdin: stopping the server")
		s.stopServer()
	}()
}

// serverGone explains the end of the server's output to the client.
func (s *session) serverGone() string {
	select {
	case <-s.handle.Exited():
		if s.remote != nil {
			return s.remote.gone()
		}
		code, _ := s.handle.ExitCode()
		return fmt.Sprintf("the MCP server exited with status %d", code)
	case <-time.After(serverExitWait):
		return "the MCP server closed its output"
	}
}

// stdioConnectWait bounds the wait for mcpcage-init to open the server's
// stdio once the sandbox started (it is the first thing it does).
const stdioConnectWait = 30 * time.Second

// serverExitWait is how long a closed output waits for the server's exit
// status before the client is told only that the output closed.
const serverExitWait = 100 * time.Millisecond

// kernelSyncWait bounds the wait for a session's last kernel events.
const kernelSyncWait = 2 * time.Second

// endSession stops what is left of the session's server, takes in its
// last kernel events, and says why the session ended.
func (d *Daemon) endSession(ctx context.Context, s *session, end relay.End) api.Exit {
	s.ending.Store(true)
	if end.Reason == api.ExitClientTooLarge || end.Reason == api.ExitServerTooLarge {
		s.handle.Kill(context.WithoutCancel(ctx))
	}
	s.stop() // no-op when the ladder already ran; otherwise the server closed stdout while alive
	if s.cgid != 0 {
		// The server's tasks are gone: take in their last kernel events
		// (a deny_paths kill among them) before the session is summed up.
		if err := d.cage.Sync(kernelSyncWait); err != nil {
			s.log.Warn("kernel events of the session may be incomplete", "err", err)
		}
		if !s.renameChecks.wait(kernelSyncWait) {
			s.log.Warn("renames of the session are still being checked: their records may come after its end")
		}
		if n, err := d.cage.SessionCounts(s.cgid); err != nil {
			s.log.Warn("kernel counts of the session unavailable", "err", err)
		} else {
			s.opensFolded, s.eventsThrottled = n.OpensFolded, n.Throttled
			if n.Throttled > 0 {
				s.log.Warn("kernel events of the session not recorded: over its budget of events a second (opens, execs, connections among them)", "events", n.Throttled)
			}
		}
		// A rename the full ring could not report: its mark goes with the
		// session's kernel entry, so it is recorded now if not already.
		d.endUnchecked(s)
		// Nothing of the session runs any more: forget it in the kernel
		// now, before the client hears the session ended.
		d.unregisterKernel(s)
	}
	select {
	case <-s.shutdown:
		end = relay.End{Reason: api.ExitDaemonShutdown, Err: errors.New("mcpcaged is shutting down")}
	default:
	}
	if s.streams.stderrDone != nil {
		// What the server said on stderr before it exited reaches the
		// client before the exit does.
		select {
		case <-s.streams.stderrDone:
		case <-time.After(stderrDrainWait):
		}
	}
	return s.exitOf(end)
}

// exitOf turns the relay's end and the sandbox's fate into the exit the
// client is told.
func (s *session) exitOf(end relay.End) api.Exit {
	srv := s.srv
	exit := api.Exit{Code: -1, Reason: end.Reason}
	if code, err := s.handle.ExitCode(); err == nil {
		exit.Code = int(code)
	}
	limits := s.handle.Limits()
	switch {
	case s.handle.Lost() != nil:
		exit.Reason = api.ExitContainerdLost
		exit.Error = fmt.Sprintf("%v, so mcpcaged stopped server %q: start the session again once containerd is back (systemctl status containerd)", s.handle.Lost(), s.server)
	case s.internalEnd.Load():
		exit.Reason, exit.Error = api.ExitInternal, relay.ErrInternal.Error()
	case end.Err != nil:
		exit.Error = end.Err.Error()
	case s.suspectEnd.Load() != nil:
		exit.Reason = api.ExitSuspect
		exit.Error = fmt.Sprintf("mcpcage ended the session: %s (on_suspect = \"end-session\" in [servers.%s])", s.suspectEnd.Load(), s.server)
	case s.killedBy.Load() != nil:
		exit.Reason = api.ExitFileDenied
		if s.maskLost.Load() {
			exit.Reason = api.ExitMaskLost
		}
		exit.Error = fmt.Sprintf("server %q was killed: %s", s.server, s.killedBy.Load())
	case limits.OOMKilled:
		exit.Reason = api.ExitMemoryLimit
		exit.Error = fmt.Sprintf("server %q was killed: it exceeded its memory limit of %d MiB (raise `memory` in [servers.%s])", s.server, srv.Memory>>20, s.server)
	case end.Reason == api.ExitServerExited && exit.Code != 0:
		exit.Error = fmt.Sprintf("server %q exited with status %d", s.server, exit.Code)
	}
	if limits.OOMKilled {
		s.log.Warn("server killed for exceeding its memory limit", "memory", int64(srv.Memory))
	}
	if limits.PidsLimitHits > 0 {
		s.log.Warn("server hit its process limit", "pids", srv.Pids, "refused_forks", limits.PidsLimitHits)
	}
	return exit
}

// accountSession records and logs the end of a session and removes its
// container.
func (d *Daemon) accountSession(ctx context.Context, s *session, exit api.Exit) {
	s.accounting.Store(true)
	d.recordDeniedOverflow(s)
	d.recordKernelDeniedOverflow(s)
	d.recordPinChangeOverflow(s)
	d.endSessionConsents(s)
	if err := d.audit.Append(s.sessionEndRecord(exit)); err != nil {
		s.log.Error("session end not recorded in the audit log", "err", err)
	}
	if s.streams.serverOutR != nil {
		// containerd's copy of the server's stdout ends: a relay that no
		// longer reads (it ended, or was let go of) cannot keep Remove,
		// which waits for the copy, from returning.
		_ = s.streams.serverOutR.CloseWithError(errSessionOver)
	}
	if err := s.handle.Remove(ctx); err != nil {
		s.log.Error("cleanup failed", "err", err)
	}
	if s.srv != nil && s.srv.Image != "" {
		d.collectImagesSoon() // the last user of an image no server names any more
	}
	if s.streams.serverOut != nil {
		_ = s.streams.serverOut.Close()
	}
	if exit.Reason != api.ExitDaemonShutdown && exit.Reason != api.ExitContainerdLost && s.remote == nil {
		d.warm.refill(s.server, s.peer) // the next session of this server for this user starts warm
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
		s.handle.Stop(context.Background(), s.grace)
	})
	<-s.handle.Exited()
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

// create builds the sandbox of a session id of srv, not started.
func (d *Daemon) create(ctx context.Context, srv *config.Server, owner uint32, id string, p sandbox.Params, stdio sandbox.Stdio) (*sandbox.Prepared, error) {
	spec, err := sandbox.BuildSpec(p)
	if err != nil {
		return nil, err
	}
	return d.launcher.Create(pullsCounted(ctx, srv, owner), sandbox.StartOptions{
		ID:     p.ID,
		Image:  srv.Image,
		Spec:   spec,
		Labels: map[string]string{sandbox.LabelServer: srv.Name, sandbox.LabelSession: id},
		Stdio:  stdio,
		Mounts: p.Mounts,
		Masks:  sandbox.WatchedMasks(p),
	})
}

// kernelPolicy returns the session's kernel policy, nil when eBPF is
// unavailable and the server may run without it.
func (d *Daemon) kernelPolicy(ctx context.Context, srv *config.Server) (*bpf.Policy, *egress.Tracker, []egress.Refused, error) {
	if d.cage == nil {
		if why := needsEBPF(srv); why != "" && d.conf().Daemon.EBPFRequired() {
			return nil, nil, nil, fmt.Errorf("%s need eBPF, which is unavailable here (%s): see `mcpcage status`, or set require_ebpf = false to run without kernel enforcement", why, d.ebpfErr)
		}
		return nil, nil, nil, nil
	}
	p, tracker, refused, err := d.policyFor(ctx, srv)
	if err != nil {
		return nil, nil, nil, err
	}
	return &p, tracker, refused, nil
}

// instance names the agent process instance (see identity.Process).
func (s *session) instance() string {
	if s.agentInstance == "" {
		return s.agentP.Instance() // a session built by a test
	}
	return s.agentInstance
}

// relayDone is closed when the session's relay ends.
func (s *session) relayDone() <-chan struct{} { return s.relay.Done() }

// pumpFrames turns the shim's frames into the client input stream.
func pumpFrames(fr *api.FrameReader, w *io.PipeWriter) {
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

// stoppableReader is the client's passed stdin: the relay reads it
// directly, and the shim's frames can end it (the client asked the shim
// to stop, or the shim is gone).
type stoppableReader struct {
	f       *clientStream
	out     *clientStream // the client's stdout: a gone shim ends writes to it too
	stopped atomic.Pointer[error]
	ending  atomic.Bool // EndAfter: a read deadline ends the input
	gone    func()      // called once the shim's connection is lost
}

// follow reads the shim's frames until the connection ends: a stdin EOF
// frame ends the input as if the client had closed it; a lost shim ends
// it as a gone client.
func (r *stoppableReader) follow(fr *api.FrameReader) {
	for {
		t, _, err := fr.Next()
		if err != nil {
			r.stop(errClientGone)
			// The session ends with its shim: a write blocked on the
			// client's stdout (a client that stopped reading) must not
			// hold it.
			_ = r.out.SetWriteDeadline(time.Now())
			if r.gone != nil {
				r.gone()
			}
			return
		}
		if t == api.FrameStdinEOF {
			r.stop(io.EOF)
		}
	}
}

func (r *stoppableReader) stop(why error) {
	if r.stopped.CompareAndSwap(nil, &why) {
		_ = r.f.SetReadDeadline(time.Now()) // ends a read in progress
	}
}

func (r *stoppableReader) Read(p []byte) (int, error) {
	if why := r.stopped.Load(); why != nil {
		return 0, *why
	}
	n, err := r.f.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if why := r.stopped.Load(); why != nil {
			return n, *why
		}
		if r.ending.Load() {
			return n, errClientGone
		}
	}
	return n, err
}

// Close stops reading; the file itself is closed with the session.
func (r *stoppableReader) Close() error {
	r.stop(errClientGone)
	return nil
}

// EndAfter lets reads take in what the client has already written, for
// at most d, then ends them as a gone client.
func (r *stoppableReader) EndAfter(d time.Duration) {
	_ = r.f.SetReadDeadline(time.Now().Add(d))
	r.ending.Store(true)
}

// copyStderr copies the server's stderr to the client until the server
// and its children close it; drainWriter never blocks the server on a
// dead client.
func copyStderr(r *os.File, w *drainWriter, done chan struct{}) {
	defer close(done)
	defer func() { _ = r.Close() }()
	_, _ = io.Copy(w, r)
}

// stderrDrainWait bounds the wait for the rest of a server's stderr once
// it exited (a child that outlives it can hold the FIFO open).
const stderrDrainWait = 2 * time.Second

// drainWriter never fails and never blocks the server on a dead client:
// after the first error it discards everything. A held one (stderr in
// frames, before the reply that starts the session) keeps what comes
// until open, up to maxEarlyStderr: a shim reads the reply first, and an
// older one takes any other frame for a broken daemon.
type drainWriter struct {
	mu   sync.Mutex
	w    io.Writer
	dead bool
	held bool
	kept []byte
	lost int // bytes beyond maxEarlyStderr, dropped while held
}

// beforeSessionReply runs before the reply that starts a session: a
// no-op, but a delay in the failpoints build (failpoint_on.go).
var beforeSessionReply = func() {}

// maxEarlyStderr bounds the server's stderr kept until the session's
// reply is out.
const maxEarlyStderr = 64 << 10

func (d *drainWriter) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.held:
		n := min(len(p), maxEarlyStderr-len(d.kept))
		d.kept = append(d.kept, p[:n]...)
		d.lost += len(p) - n
	case !d.dead:
		if _, err := d.w.Write(p); err != nil {
			d.dead = true
		}
	}
	return len(p), nil
}

// open writes what was kept and lets the rest through.
func (d *drainWriter) open() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.held {
		return
	}
	d.held = false
	if d.lost > 0 {
		if len(d.kept) > 0 && d.kept[len(d.kept)-1] != '\n' {
			d.kept = append(d.kept, '\n')
		}
		d.kept = fmt.Appendf(d.kept, "mcpcage: %d more bytes the server wrote on stderr while it started were dropped\n", d.lost)
	}
	if len(d.kept) > 0 && !d.dead {
		if _, err := d.w.Write(d.kept); err != nil {
			d.dead = true
		}
	}
	d.kept = nil
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
			d.consents.InvalidateFor(s.user, s.agent, s.server)
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
	return uidNamePrefix + strconv.FormatUint(uint64(uid), 10)
}

// uidNamePrefix starts the name userName gives a uid it cannot look up.
const uidNamePrefix = "uid:"

// uidOfName is the uid userName(uid) gave name; ok is false for a user
// the system does not know (user.UnknownUserError), err for a look-up
// that failed otherwise.
func uidOfName(name string) (uid uint32, ok bool, err error) {
	if n, found := strings.CutPrefix(name, uidNamePrefix); found {
		v, err := strconv.ParseUint(n, 10, 32)
		return uint32(v), err == nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if errors.As(err, new(user.UnknownUserError)) {
			return 0, false, nil
		}
		return 0, false, err
	}
	v, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("user %s has uid %q: %w", name, u.Uid, err)
	}
	return uint32(v), true, nil
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
