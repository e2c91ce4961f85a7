package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/bpf/probe"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/flow"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/oauth"
	"github.com/mcpcage/mcpcage/daemon/pins"
	"github.com/mcpcage/mcpcage/daemon/renames"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/daemon/userservers"
	"github.com/mcpcage/mcpcage/internal/subid"
	"github.com/mcpcage/mcpcage/internal/tcpsockets"
	"github.com/mcpcage/mcpcage/sandbox"
	"github.com/mcpcage/mcpcage/sandbox/landlock"
	"github.com/mcpcage/mcpcage/sandbox/seccompnotify"
)

// Version is the daemon's version, set at build time.
var Version = "dev"

// Daemon is a running mcpcaged.
type Daemon struct {
	// pending, answering, auditing and following bound, per account
	// (account.go), connections that have not sent their request,
	// requests being answered, audit queries (history or follow) and
	// followers of the audit log and of kernel events; pending also all
	// accounts' together.
	pending          uidSlots
	answering        uidSlots
	auditing         uidSlots
	following        uidSlots
	sessionSlots     uidSlots
	clientFiles      clientFiles      // daemon-wide bound of sessions holding a client's files
	subuids          *subid.Table     // whose subordinate uids are (account.go); nil: none are
	userSecretsBytes userSecretsBytes // all users' own secrets together (usersecrets.go; userSecretMu held)
	secretsFull      refusalLog       // secrets refused for userSecretsMaxTotal
	// lostTold is what watchLost has told of the kernel's lost events
	// (its counters are totals): only watchLost uses it.
	lostTold    struct{ ringbufFull, throttled uint64 }
	cfg         atomic.Pointer[config.Config] // swapped on reload (SIGHUP)
	log         *slog.Logger
	logLevel    *slog.LevelVar // log's level, changed by a reload; nil: fixed
	launcher    *sandbox.Launcher
	hostView    *sandbox.HostView
	started     time.Time
	secrets     *secrets.Store
	oauth       *oauth.Manager  // users' sign-ins to remote servers
	actor       *oauth.Actor    // signs actor tokens for token exchange (mcpcage jwks)
	digests     *audit.Digester // the install's keyed digests of what callers send (args_digest): use digestsFor
	userDigests sync.Map        // uid -> *audit.Digester: each user's (digests.ForUser)
	remotes     remoteClients   // HTTP clients of remote servers, by definition

	seccompListener *seccompnotify.Listener
	initPath        string // mcpcage-init on the host; "" when it is not installed
	landlockOn      bool   // sandboxes apply Landlock rules (through mcpcage-init)
	stdioRoot       string // the sessions' stdio FIFO directories (with mcpcage-init)
	landlockABI     int
	ebpfHooks       probe.Results
	cage            *bpf.Cage // nil when eBPF enforcement is unavailable
	ebpfErr         string
	lsmErr          string // why deny_paths do not use BPF LSM
	ingressErr      string // why ephemeral listeners of host-network servers stay reachable
	cgroupRoot      string
	byCgroup        map[uint64]*session
	consents        *consent.Engine
	hasher          *identity.Hasher
	audit           *audit.Log
	metrics         *metrics.Metrics
	metricsAddr     atomic.Value // string: where metrics are served, or why they are not
	auditFollowers  followers
	secretCache     atomic.Pointer[[]string]
	secretMu        sync.Mutex // a read of the stores into secretCache, and a change of them (secretsChanged)
	userServers     *userservers.Store
	tracers         tracers
	warm            *warmPool
	pins            *pins.Store // nil when the store could not be read (logged; tools are then not pinned)
	sealer          *ask.Sealer // seals the requestState of consent questions (2026-07-28 era)
	book            *ask.Book   // requests waiting for mcpcage approve, and the user's refusals
	runs            flow.Runs   // agent runs: the data-flow guard's taint and influence trail
	guards          atomic.Pointer[guardConfig]
	imagesUnused    chan struct{}    // asks collectImages for a pass (images.go)
	renames         *renames.Watcher // where renames took files from (fanotify); nil when unavailable
	renamesErr      string           // why renames is nil

	// The kernel's exec record (agent identity); nil when unavailable.
	stamps    *bpf.ExecStamps
	stampsErr string

	// serverChange keeps consents from being stored (read) while a
	// user's own server is removed or defined anew (write): the consents
	// for it are revoked and the change made under it, so none given for
	// the old definition lands on the new one.
	serverChange sync.RWMutex

	mu       sync.Mutex
	sessions map[string]*session
	// pinsToForget are the pin keys of users' servers removed while
	// sessions of them ran: forgotten when the last of those ends.
	pinsToForget map[string]bool
	closing      bool
	wg           sync.WaitGroup
}

// New prepares a daemon: it connects to containerd, removes what a crashed
// predecessor left, and builds the host view. It does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{log: log, sessions: map[string]*session{}, byCgroup: map[uint64]*session{}, started: time.Now(), metrics: metrics.New(), imagesUnused: make(chan struct{}, 1)}
	refusedFilesLog = log
	d.setUserLimits()
	d.subuids = subid.New(subuidPath)
	d.clientFiles.gauge, d.clientFiles.inUse = d.metrics.SessionsHeld, d.metrics.SessionsClientFiles
	d.warm = newWarmPool(d)
	d.cfg.Store(cfg)
	if warning, err := checkAdminGroup(cfg.Daemon.AdminGroup, user.LookupGroup, socketGID(cfg.Daemon.Socket)); err != nil {
		return nil, err
	} else if warning != "" {
		log.Warn(warning)
	}
	warnLiteralCredentials(cfg, log)
	if err := os.MkdirAll(cfg.Daemon.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	var err error
	if d.secrets, err = secrets.Open(filepath.Join(cfg.Daemon.StateDir, "secrets")); err != nil {
		return nil, err
	}
	grants, err := secrets.Open(filepath.Join(cfg.Daemon.StateDir, "oauth"))
	if err != nil {
		return nil, err
	}
	d.oauth = oauth.NewManager(grants)
	keys, err := secrets.Open(filepath.Join(cfg.Daemon.StateDir, "keys"))
	if err != nil {
		return nil, err
	}
	if d.actor, err = oauth.LoadActor(keys, actorIssuer()); err != nil {
		return nil, err
	}
	d.oauth.SetActor(d.actor)
	if d.digests, err = loadDigester(keys); err != nil {
		return nil, err
	}
	store, err := consent.Open(filepath.Join(cfg.Daemon.StateDir, "consent.db"))
	if err != nil {
		return nil, err
	}
	d.consents, d.hasher = consent.NewEngine(store), identity.NewHasher()
	d.metrics.CountConsentLookups(d.consents.Lookups)
	d.sealer, d.book = ask.NewSealer(), ask.NewBook()
	d.runs.Alive = identity.Alive
	if d.pins, err = pins.Open(filepath.Join(cfg.Daemon.StateDir, "pins.json")); err != nil {
		return nil, err
	}
	if d.userServers, err = userservers.Open(filepath.Join(cfg.Daemon.StateDir, "userservers")); err != nil {
		return nil, err
	}
	if err := d.openAudit(); err != nil {
		return nil, err
	}
	d.bindUnboundConsents()
	// Consents answered for one session of a previous run allow nothing
	// now: revoke them, so they are not listed as active.
	if recs, err := d.consents.Store().RevokeSessionBound("mcpcaged", "its session ended (mcpcaged restarted)"); err != nil {
		return nil, err
	} else if len(recs) > 0 {
		for _, r := range recs {
			d.audit.AppendAsync(consentRevokeRecord(r, "mcpcaged", r.Reason))
		}
		log.Info("revoked the consents of sessions of a previous run", "count", len(recs))
	}
	d.updateConsentGauge()
	if err := d.setupLandlock(); err != nil {
		return nil, err
	}
	d.seccompListener, err = seccompnotify.Listen(filepath.Join(cfg.Daemon.StateDir, "seccomp.sock"), d.onDeniedSyscall, log)
	if err != nil {
		return nil, err
	}
	l, err := sandbox.NewLauncher(ctx, cfg.Daemon.ContainerdAddress, cfg.Daemon.ContainerdNamespace,
		filepath.Join(cfg.Daemon.StateDir, "fifo"), filepath.Join(cfg.Daemon.StateDir, "roots"), log)
	if err != nil {
		return nil, err
	}
	d.launcher = l
	n, err := l.Reap(ctx)
	if err != nil {
		log.Error("could not remove every leftover container", "err", err)
	}
	// Sessions' stdio FIFO directories (see sandbox.ServerStdio); a
	// predecessor's are gone with its containers.
	d.stdioRoot = filepath.Join(cfg.Daemon.StateDir, "stdio")
	if err := os.RemoveAll(d.stdioRoot); err != nil {
		return nil, fmt.Errorf("remove stale server stdio: %w", err)
	}
	if err := os.Mkdir(d.stdioRoot, 0o700); err != nil {
		return nil, fmt.Errorf("create server stdio directory: %w", err)
	}
	if n > 0 {
		log.Info("removed containers left by a previous run", "count", n)
	}
	// Once no sandbox of a predecessor runs (one of an older version ran
	// in the skeleton itself).
	if d.hostView, err = sandbox.PrepareHostView(filepath.Join(cfg.Daemon.StateDir, "rootfs"), "/"); err != nil {
		return nil, err
	}
	// After the reaping: links pinned by a crashed predecessor kept its
	// sandboxes enforced until now and can be replaced.
	d.setupEBPF(ctx)
	if d.cage != nil {
		if d.renames, err = renames.Open(log); err != nil {
			d.renamesErr = err.Error()
			log.Warn("renames, deletions and attribute changes in writable mounts are checked after the fact, by name: a symlink swapped or removed at once escapes the check", "err", err)
		} else {
			d.renames.CheckChanges(d.cage.Changer, d.onFsChanges)
		}
	}
	if err := tcpsockets.Check(); err != nil {
		log.Warn("the kernel cannot say whose program is at the other end of a connection: remote servers on this host, and sign-in answers at the daemon's loopback listener, are refused", "err", err)
	}
	enf := d.enforcement()
	d.metrics.BuildInfo.WithLabelValues(Version, "network="+firstWord(enf["network"])+",files="+firstWord(enf["files"])+",landlock="+firstWord(enf["landlock"])).Set(1)
	return d, nil
}

// Serve accepts connections on ln until ctx is cancelled, then ends every
// session and returns nil.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	d.log.Info("mcpcaged ready", "socket", ln.Addr().String(), "servers", d.conf().ServerNames(), "version", Version)
	d.goLoop(ctx, "agent runs", func() { d.sweepRuns(ctx) })
	d.goLoop(ctx, "unused images", func() { d.collectImages(ctx) })
	if d.renames != nil {
		// Rename events read when it panicked are lost: the checks of
		// renames made until then fail closed (renames.LostSince); the
		// deletions and attribute changes among them go unchecked.
		d.goLoop(ctx, "renames", d.renames.Run)
	}
	d.collectImagesSoon() // what the configuration stopped naming while the daemon was down
	refuseFiles(ln)       // its connections take files only when a session asks (passrights.go)
	go func() {
		<-ctx.Done()
		_ = ln.Close() // ends the accept loop
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			d.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			_ = c.Close()
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.handle(ctx, uc)
		}()
	}
	d.shutdown()
	return nil
}

// shutdownWait bounds how long shutdown waits for the sessions to end and
// the warm pool to empty.
const shutdownWait = 30 * time.Second

// shutdown ends every session and waits for them.
func (d *Daemon) shutdown() {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	live := d.liveSessions()
	d.log.Info("shutting down", "sessions", len(live))
	warmDone := d.warm.close() // no new prepared sandboxes; the ready ones removed
	for _, s := range live {
		s.endForShutdown()
	}
	// The sessions and the warm pool's builds and removals end together,
	// within one bound (systemd's TimeoutStopSec is 45 s): a build under
	// way when the daemon stops completes and is removed, unless it waits
	// longer (on a mount source's file system, a loaded containerd).
	bound, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-bound.Done():
		d.log.Error("sessions did not end within the shutdown's bound; exiting anyway", "bound", shutdownWait)
	}
	select {
	case <-warmDone:
	case <-bound.Done():
		d.log.Warn("warm sandboxes still being built or removed; the next start removes what is left")
	}
	type closer struct {
		what string
		c    io.Closer
	}
	closers := []closer{{"containerd client", d.launcher}, {"seccomp listener", d.seccompListener}, {"consent store", d.consents.Store()}, {"audit log", d.audit}}
	if d.cage != nil {
		closers = append(closers, closer{"eBPF enforcement", d.cage})
	}
	if d.renames != nil {
		closers = append(closers, closer{"rename watcher", d.renames})
	}
	if d.stamps != nil { // pinned: the record goes on for the next daemon
		closers = append(closers, closer{"exec stamps", d.stamps})
	}
	for _, c := range closers {
		if err := c.c.Close(); err != nil {
			d.log.Error("shutdown: close", "what", c.what, "err", err)
		}
	}
	if d.pins != nil {
		// What a failed write left out (every session has ended).
		if err := d.pins.Save(); err != nil {
			d.log.Error("shutdown: tool pins not saved: changes since the last write are lost", "err", err)
		}
	}
}

// setupLandlock finds mcpcage-init and probes the kernel. mcpcage-init
// runs first in every sandbox when it is installed: it connects the
// server's stdin and stdout to the daemon's own pipes (see serverStdio)
// and applies Landlock when that is on.
func (d *Daemon) setupLandlock() error {
	mode := d.conf().Daemon.Landlock
	d.landlockABI = landlock.ABI()
	d.initPath = d.findInit()
	if d.initPath == "" {
		d.log.Warn("mcpcage-init not found: sandboxes run without Landlock, and servers' stdio goes through containerd's copy", "looked_for", d.initLookup())
	}
	if mode == config.LandlockOff {
		d.log.Info("landlock disabled by configuration")
		return nil
	}
	if d.landlockABI == 0 {
		if mode == config.LandlockRequire {
			return fmt.Errorf("landlock = \"require\" but this kernel has no Landlock (enable it with lsm=landlock,... on the kernel command line, or set landlock = \"auto\")")
		}
		d.log.Warn("kernel has no Landlock: sandboxes run without it")
		return nil
	}
	if d.initPath == "" {
		if mode == config.LandlockRequire {
			return fmt.Errorf("landlock = \"require\" but mcpcage-init is missing at %s: install it or set [daemon] init_path", d.initLookup())
		}
		return nil
	}
	d.landlockOn = true
	d.log.Info("landlock active in sandboxes", "abi", d.landlockABI, "init", d.initPath)
	return nil
}

// findInit returns mcpcage-init's path, "" when it is not installed.
func (d *Daemon) findInit() string {
	path := d.initLookup()
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return ""
	}
	return path
}

// initLookup is where mcpcage-init is looked for.
func (d *Daemon) initLookup() string {
	path := d.conf().Daemon.InitPath
	if path == "" {
		// Next to mcpcaged (a build tree), else where the packages put it.
		path = "/usr/libexec/mcpcage/mcpcage-init"
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "mcpcage-init"); fileExists(p) {
				path = p
			}
		}
	}
	return path
}

// Enforcement describes what protects sandboxes, for status and logs.
func (d *Daemon) enforcement() map[string]string {
	ll := "off"
	switch {
	case d.landlockOn:
		ll = fmt.Sprintf("enforced (ABI %d)", d.landlockABI)
	case d.landlockABI > 0:
		ll = fmt.Sprintf("available (ABI %d), not used", d.landlockABI)
	case d.conf().Daemon.Landlock != config.LandlockOff:
		ll = "unavailable in this kernel"
	}
	network, files, observed := "unavailable: "+d.ebpfErr, "unavailable: "+d.ebpfErr, "nothing: "+d.ebpfErr
	if d.cage != nil {
		network = "kernel (cgroup connect4/6, sendmsg4/6; packets with an IPv6 routing header dropped: cgroup_skb/egress); binds of host-network servers: cgroup bind4/bind6, listen allow-list"
		if d.ingressErr != "" {
			network += "; a listener on an ephemeral port stays reachable (cgroup_skb/ingress: " + d.ingressErr + ")"
		} else {
			network += ", ephemeral listeners dropped (cgroup_skb/ingress)"
		}
		files = "kill-on-open (bpf_send_signal at open exit; rename/link/unlink/mkdir/truncate/chmod/chown/xattr in a denied directory too), then the whole session is killed (cgroup.kill); denied paths present at launch are masked"
		if d.cage.LSM() {
			files = "kernel deny (BPF LSM file_open: EACCES); kill-on-open for rename/link/unlink/mkdir/truncate/chmod/chown/xattr and as a second line"
		}
		observed = "open, exec, unlink, rmdir, mkdir, rename, link, truncate, chmod, chown, xattr changes by name, connect with its result, new UDP destinations"
		if d.renames != nil {
			files += "; renames, deletions and attribute changes in writable mounts checked where the kernel acted (fanotify)"
		} else {
			files += "; renames, deletions and attribute changes checked by name after the fact (fanotify: " + d.renamesErr + ")"
		}
		if ok, err := d.cage.Handshakes(); ok {
			observed += "; TCP handshake outcome (tp_btf)"
		} else {
			observed += "; non-blocking TCP connects show EINPROGRESS (no tp_btf: " + err.Error() + ")"
		}
		if ok, err := d.cage.UnixPeers(); ok {
			files += "; kill-on-connect to a pathname unix socket in a denied directory (connect and datagrams: tp_btf/sk_data_ready)"
			observed += "; connects to pathname unix sockets (tp_btf/sk_data_ready)"
		} else {
			files += "; kill-on-connect to a pathname unix socket in a denied directory checked at connect's exit, on the call's descriptor (datagrams not checked; no tp_btf/sk_data_ready: " + err.Error() + ")"
			observed += "; connects to pathname unix sockets (at connect's exit)"
		}
		if !d.cage.LSM() {
			files += "; no BPF LSM: " + d.lsmErr
		}
		if ok, err := d.cage.DirectReads(); ok {
			observed += "; paths read by direct loads (bpf_rdonly_cast)"
		} else {
			observed += "; paths read by helper calls (" + err.Error() + ")"
		}
		if tick, err := d.cage.SessionClock(); err == nil {
			observed += fmt.Sprintf("; folding of repeated opens and the event budget timed by the kernel's tick (%v)", tick)
		} else {
			observed += "; folding of repeated opens and the event budget timed by the monotonic clock (the kernel's tick is unknown: " + err.Error() + ")"
		}
	}
	return map[string]string{
		"seccomp":      "mcpcage default profile, escape attempts reported",
		"landlock":     ll,
		"network":      network,
		"files":        files,
		"observed":     observed,
		"ebpf hooks":   d.ebpfHooks.String(),
		"daemon down":  d.daemonDown(),
		"client stdio": passedStdioState(d.conf().Daemon.MaxSessionsPerUser),
		"peer checks":  peerChecks(),
	}
}

// peerChecks says how the daemon learns whose program is at the other
// end of a connection to this host (a remote server's, a sign-in answer
// at its loopback listener).
func peerChecks() string {
	if err := tcpsockets.Check(); err != nil {
		return "unavailable (remote servers on this host and sign-in answers at the loopback listener are refused): " + err.Error()
	}
	return "kernel socket tables (NETLINK_SOCK_DIAG): exact lookups of a connection's other end and its uid"
}

// passedStdioState says how the client's passed pipes and sockets are
// kept from waiting in the kernel (see stdio.go).
func passedStdioState(maxSessions int) string {
	files := "files are taken only when a session the daemon admitted, holding one of its user's session slots, asks for them (SO_PASSRIGHTS off otherwise; a connection made before the daemon turned it off holds a slot until it is closed)"
	if !refusesUnaskedFiles() {
		files = "any connection can pass files (SO_PASSRIGHTS needs Linux 6.16): the daemon closes those it did not ask for, and closing a pipe whose lock another process holds keeps a daemon thread waiting, with no per-user bound"
	}
	return passedPipesState(maxSessions) + "; " + files
}

// passedPipesState says how reads and writes of the passed files are kept
// from holding a session.
func passedPipesState(maxSessions int) string {
	if pipesTakeNoWait() {
		return fmt.Sprintf("passed pipes and sockets never wait for data or room (RWF_NOWAIT, MSG_DONTWAIT): a client that makes them blocking again cannot hold its session open; one that holds a pipe's lock (a splice from a blocking socket) cannot either: the session ends without its files stop_timeout + %v after its server exited, and the daemon thread that waits on the lock stays until it is released (at most %d sessions per user, max_sessions_per_user, and %d sessions' files daemon-wide: further sessions are relayed by their shims)", relayEndWait, maxSessions, maxClientFiles)
	}
	return "passed sockets never wait in the kernel (MSG_DONTWAIT); passed pipes rely on O_NONBLOCK, which the client shares and can clear again to keep its own session from ending (pipes take RWF_NOWAIT from Linux 6.4)"
}

func (d *Daemon) addSession(s *session) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return false
	}
	d.sessions[s.id] = s
	return true
}

// liveSessions is a copy of the sessions now live, to act on each
// without holding the daemon's lock.
func (d *Daemon) liveSessions() []*session {
	d.mu.Lock()
	defer d.mu.Unlock()
	live := make([]*session, 0, len(d.sessions))
	for _, s := range d.sessions {
		live = append(live, s)
	}
	return live
}

func (d *Daemon) removeSession(s *session) {
	d.mu.Lock()
	delete(d.sessions, s.id)
	d.mu.Unlock()
	d.forgetPinsOfRemovedServer(s.pinKey)
}

// SessionCount returns the number of live sessions.
func (d *Daemon) SessionCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}

// agentRules turns [agents.*] into identity rules.
func (d *Daemon) agentRules() []identity.Rule {
	var rules []identity.Rule
	for _, name := range sortedKeys2(d.conf().Agents) {
		a := d.conf().Agents[name]
		r := identity.Rule{Name: name, Exe: a.Exe, SHA256: a.SHA256, Script: a.Script, ScriptSHA256: a.ScriptSHA256}
		for _, u := range a.UIDs {
			r.UIDs = append(r.UIDs, uint32(u))
		}
		rules = append(rules, r)
	}
	return rules
}

func sortedKeys2[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// consentChanged wakes the sessions a change may concern.
func (d *Daemon) consentChanged(user, agent, server string) {
	d.consents.InvalidateFor(user, agent, server)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.sessions {
		if s.user == user && s.agent == agent && s.server == server {
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " ("); i > 0 {
		return s[:i]
	}
	return s
}

// updateConsentGauge counts the active consents.
func (d *Daemon) updateConsentGauge() {
	if n, err := d.consents.Store().CountActive(context.Background(), "", 0); err == nil {
		d.metrics.ConsentsActive.Set(float64(n))
	}
}

// ServeMetrics starts the Prometheus listener when one is configured.
//
// An address it cannot listen on does not stop the daemon: any local user
// can bind a port first (the default is an unprivileged one), and a
// daemon that exits for it leaves every server down (found by a red-team
// helper). It says so, in the log and in status, and tries again every
// metricsRetry until it listens or ctx ends.
func (d *Daemon) ServeMetrics(ctx context.Context) error {
	want := d.conf().Daemon.MetricsAddress
	if want == "" {
		return nil
	}
	listen := func() error {
		addr, err := d.metrics.Serve(ctx, want, d.log)
		if err != nil {
			return err
		}
		d.metricsAddr.Store(addr.String())
		d.log.Info("metrics listening", "address", addr.String())
		return nil
	}
	err := listen()
	if err == nil {
		return nil
	}
	d.metricsAddr.Store("not listening: " + err.Error() + "; tried again every " + metricsRetry.String())
	d.log.Error("METRICS NOT SERVED: cannot listen on metrics_address; mcpcaged runs on without metrics and tries again (another process may hold the port: see ss -ltnp)", "address", want, "err", err, "retry", metricsRetry)
	go every(ctx, metricsRetry, func() bool { return listen() == nil })
	return nil
}

// every calls f each period until f reports it is done or ctx ends.
func every(ctx context.Context, period time.Duration, f func() (done bool)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if f() {
				return
			}
		}
	}
}

// metricsRetry is how often a metrics listener that failed is tried
// again.
const metricsRetry = 10 * time.Second

// conf returns the configuration in force.
func (d *Daemon) conf() *config.Config { return d.cfg.Load() }

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
