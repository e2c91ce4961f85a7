package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/sandbox"
)

// handle serves one connection: one request, then either a reply or a
// session.
func (d *Daemon) handle(ctx context.Context, c *net.UnixConn) {
	defer d.containRequest(d.log)         // first: it runs once the rest are done
	closeConn := func() { _ = c.Close() } // a no-op once serveRun closed it
	defer func() { closeConn() }()
	// A connection made before the listener refused files (systemd's
	// backlog while the daemon started) may carry some already; they are
	// dropped when the connection is closed, which can wait on a pipe's
	// lock (passrights.go).
	early := takesFiles(c)
	refuseFiles(c)
	peer, err := peerOf(c)
	if err != nil {
		d.log.Warn("rejecting connection without peer credentials", "err", err)
		return
	}
	d.chargeTo(&peer)
	if early {
		// It holds one of its user's session slots until it is closed,
		// off this goroutine: the bound serveRun keeps for a session's
		// files.
		if release, err := d.sessionSlots.takeUpTo(peer.account(), d.conf().Daemon.MaxSessionsPerUser); err == nil {
			closeConn = func() {
				go func() {
					defer release()
					_ = c.Close()
				}()
			}
		}
	}
	// The peer as it is now, at accept: its pid may be reused before its
	// request arrives.
	if peer.PidFD, err = peerPidfd(c); err != nil && !errors.Is(err, errNoPeerPidfd) {
		d.log.Warn("rejecting connection without a peer pidfd", "err", err)
		return
	}
	if peer.PidFD != nil {
		defer func() { _ = peer.PidFD.Close() }()
	}
	log := d.log.With(append([]any{"peer_pid", peer.PID, "peer_uid", peer.UID}, peer.account().logAttrs()...)...)
	// Replies are written with a deadline: a client that sends a request
	// and never reads its answer must not keep the answer, a goroutine
	// and a descriptor for good (found by a red-team helper: 40 such
	// connections asking for large consent lists took 2 GB). Sessions
	// write their own frames (OpRun, below).
	fw := api.NewFrameWriter(deadlineWriter{c})
	pending, err := d.pending.take(peer.account())
	if err != nil {
		d.pending.refused(log, "connection refused", err)
		reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, log)
		return
	}
	defer pending() // released as soon as the request is in, below
	_ = c.SetReadDeadline(time.Now().Add(requestWait))
	first, fds, err := readFirst(c)
	if err != nil {
		log.Debug("connection closed before a request", "err", err)
		return
	}
	fr := api.NewFrameReader(io.MultiReader(bytes.NewReader(first), c))
	t, payload, err := fr.Next()
	if err != nil {
		closeRefused(fds)
		log.Debug("connection closed before a request", "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pending()
	if len(fds) > 0 {
		// Files nobody asked for (a kernel without SO_PASSRIGHTS lets
		// them through, see passrights.go): a session's come when the
		// daemon asks.
		closeRefused(fds)
	}
	var req api.Request
	if t != api.FrameRequest || json.Unmarshal(payload, &req) != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: "malformed request: is this mcpcage CLI from the same release as mcpcaged?"}, log)
		return
	}
	if req.Version != api.Version {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("protocol version %d is not supported by mcpcaged %s (want %d): use the mcpcage CLI from the same release", req.Version, Version, api.Version)}, log)
		return
	}
	if field, n := req.Oversized(); field != "" {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("the request's %s is %d bytes, more than any name takes (at most %d)", field, n, api.MaxIdentifier)}, log)
		return
	}
	switch req.Op {
	case api.OpRun, api.OpAudit, api.OpTrace:
		// Bounded by their own slots (sessions, audit queries, followers).
	default:
		release, err := d.answering.take(peer.account())
		if err != nil {
			d.answering.refused(log, "request refused", err, "op", req.Op)
			reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, log)
			return
		}
		defer release()
	}
	failpointPanic("op", string(req.Op))
	switch req.Op {
	case api.OpRun:
		d.serveRun(ctx, c, fr, api.NewFrameWriter(c), peer, req, log)
	case api.OpStatus:
		replyData(fw, d.status(ctx, peer), log)
	case api.OpServers:
		whose, err := d.peerOfUser(peer, req.User, "list another user's servers")
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
			return
		}
		list := d.serverList(whose)
		if whose.UID != peer.UID {
			d.scrubForOthers(whose.UID, list)
		}
		replyData(fw, list, log)
	case api.OpServerSpec:
		d.serverSpec(fw, peer, req.Server, log)
	case api.OpGrant, api.OpRevoke, api.OpConsent, api.OpConsents, api.OpSessions:
		d.consentOp(ctx, fw, peer, req, log)
	case api.OpServerAdd, api.OpServerRm:
		d.serverOp(fw, peer, req, log)
	case api.OpPins, api.OpPinApprove:
		d.pinOp(fw, peer, req, log)
	case api.OpPending, api.OpAnswer:
		d.pendingOp(fw, peer, req, log)
	case api.OpAudit:
		d.auditQuery(ctx, c, api.NewFrameWriter(c), peer, req.Audit) // streams set their own deadlines
	case api.OpTrace:
		d.trace(ctx, c, api.NewFrameWriter(c), peer, req, log)
	case api.OpSecretSet, api.OpSecretRm, api.OpSecretList:
		d.secretOp(fw, peer, req, log)
	case api.OpLogin, api.OpLoginDone, api.OpLogout, api.OpTokens:
		d.signinOp(ctx, fw, peer, req, log)
	case api.OpJWKS:
		d.jwksOp(fw, log)
	case api.OpDigest:
		d.digestOp(fw, peer, req, log)
	default:
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("unknown operation %q", req.Op)}, log)
	}
}

// replyWriteWait bounds each write of an answer to a request: a client
// that does not read it within that time loses it.
const replyWriteWait = 30 * time.Second

// deadlineWriter writes to a connection with replyWriteWait for each
// write.
type deadlineWriter struct{ c *net.UnixConn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.c.SetWriteDeadline(time.Now().Add(replyWriteWait)); err != nil {
		return 0, err
	}
	return w.c.Write(p)
}

// traceBuffer is how many events a trace reader may fall behind before
// it misses some (and is told how many).
const traceBuffer = 4096

// requestWait is how long a new connection has to send its request.
const requestWait = 10 * time.Second

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5; the generic value, x86_64 and
// arm64 alike), which golang.org/x/sys does not name yet.
const soPeerPidfd = 77

// errNoPeerPidfd: the kernel predates SO_PEERPIDFD.
var errNoPeerPidfd = errors.New("the kernel has no SO_PEERPIDFD (Linux 6.5)")

// peerPidfd returns a pidfd of the process that connected c, as it was
// when it connected: it names that process even after its pid is reused.
func peerPidfd(c *net.UnixConn) (*os.File, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var serr error
	if err := raw.Control(func(s uintptr) { fd, serr = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, soPeerPidfd) }); err != nil {
		return nil, err
	}
	switch {
	case errors.Is(serr, unix.ENOPROTOOPT):
		return nil, errNoPeerPidfd
	case serr != nil:
		return nil, fmt.Errorf("SO_PEERPIDFD: %w", serr)
	}
	return os.NewFile(uintptr(fd), "peer-pidfd"), nil
}

// peerPidfdNote says, for status, how a shim connection's process is
// pinned.
var peerPidfdNote = sync.OnceValue(func() string {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "peer pidfd: unknown (" + err.Error() + ")"
	}
	defer func() { _ = unix.Close(fds[0]); _ = unix.Close(fds[1]) }()
	fd, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, soPeerPidfd)
	if err != nil {
		return "peer pidfd unavailable (" + err.Error() + ", Linux 6.5 has it): the shim's pid is read at connect and pinned only when its request arrives, so it could in principle be reused in between"
	}
	_ = unix.Close(fd)
	return "the shim is pinned by a pidfd taken at connect (SO_PEERPIDFD)"
})

// agentOf identifies the program that started the shim on the other end
// of a connection: through the pidfd taken at connect where the kernel
// gave one, else by the pid it reported then.
func (d *Daemon) agentOf(peer Peer) (identity.Process, error) {
	rule := d.shimRule()
	if peer.PidFD != nil {
		return d.hasher.AgentOf(int(peer.PidFD.Fd()), rule)
	}
	return d.hasher.Agent(int(peer.PID), rule)
}

// shimRule is what the process that connects as a shim must be.
func (d *Daemon) shimRule() identity.ShimRule {
	return identity.ShimRule{Paths: d.shimLookup(), Launchers: d.conf().Daemon.AllowShimLaunchers}
}

// shimLookup is the mcpcage files a shim may run: shim_paths, else the
// one next to mcpcaged (a build tree), else where the packages put it.
func (d *Daemon) shimLookup() []string {
	if ps := d.conf().Daemon.ShimPaths; len(ps) > 0 {
		return ps
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "mcpcage"); fileExists(p) {
			return []string{p}
		}
	}
	return []string{"/usr/bin/mcpcage"}
}

func reply(fw *api.FrameWriter, r api.Reply, log *slog.Logger) {
	b, _ := json.Marshal(r)
	if err := fw.Write(api.FrameReply, b); err != nil {
		log.Debug("write reply", "err", err)
	}
}

func replyData(fw *api.FrameWriter, data any, log *slog.Logger) {
	b, err := json.Marshal(data)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: "encode reply: " + err.Error()}, log)
		return
	}
	reply(fw, api.Reply{OK: true, Data: b}, log)
}

func (d *Daemon) status(ctx context.Context, peer Peer) api.Status {
	cd := "connected"
	if v, err := d.launcher.Version(ctx); err != nil {
		cd = "unreachable: " + err.Error()
	} else {
		cd = "connected (containerd " + v + ", namespace " + d.conf().Daemon.ContainerdNamespace + ")"
	}
	var ks *api.KernelStatus
	if d.cage != nil {
		ks = &api.KernelStatus{CgroupParent: filepath.Join(d.cgroupRoot, d.conf().Daemon.ContainerdNamespace)}
		ks.Sessions, ks.EgressEntries, ks.DenyEntries = d.cage.Counts()
		ks.LostRingbuf, ks.LostThrottled, _ = d.cage.Lost()
		ks.Observing = d.cage.Observing()
		ks.ObserverLinger = d.cage.ObserverLinger().String()
	}
	auditErr := ""
	if err := d.audit.Healthy(); err != nil {
		auditErr = err.Error()
	}
	return api.Status{
		AuditLog:     d.conf().Daemon.AuditLog,
		AuditRecords: d.audit.Count(),
		AuditError:   auditErr,
		Metrics:      metricsStatus(d),
		Kernel:       ks,
		Warm:         d.warm.status(peer, d.isAdmin(peer)),
		Version:      Version,
		Uptime:       time.Since(d.started).Round(time.Second).String(),
		Containerd:   cd,
		Sessions:     d.SessionCount(),
		Servers:      d.conf().ServerNames(),
		ConfigPath:   d.conf().Path,
		Enforcement:  d.enforcement(),

		AgentIdentity: d.agentIdentity(),
		PtraceScope:   ptraceScope(),
	}
}

// peerOfUser is the peer whose things a request of peer's for user name
// is about: peer itself for "" or its own name; another user's only for
// an administrator (what: what the request would do, for the refusal).
func (d *Daemon) peerOfUser(peer Peer, name, what string) (Peer, error) {
	if name == "" || name == userName(peer.UID) {
		return peer, nil
	}
	if !d.isAdmin(peer) {
		return Peer{}, fmt.Errorf("only root and the admin group may %s", what)
	}
	uid, known, err := uidOfName(name)
	if err != nil {
		return Peer{}, err
	}
	if !known {
		return Peer{}, fmt.Errorf("no user %q", name)
	}
	other := Peer{UID: uid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if gid, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			other.GID = uint32(gid) // the group its sessions get (a preview shows it)
		}
	}
	return other, nil
}

// scrubForOthers hides, in a list of user uid's servers shown to an
// administrator, what a user's definition may carry of their credentials
// (found by a red-team helper: a token on the command line, an API key
// in the environment, which the server.add record already scrubs): the
// command and arguments as that record has them, and every environment
// value that is not a reference to a secret. The definition's digest
// still pins them all.
func (d *Daemon) scrubForOthers(uid uint32, list []api.ServerInfo) {
	own := dirValues(filepath.Join(d.userSecretsRoot(), strconv.FormatUint(uint64(uid), 10)))
	others := append(own, d.secretValues()...)
	for i := range list {
		s := &list[i]
		if s.Owner == "" {
			continue // the administrator's own
		}
		s.Command = audit.ScrubArgv(s.Command, 0, nil, others)
		s.Args = audit.ScrubArgv(s.Args, 0, nil, others)
		for j, kv := range s.Env {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.HasPrefix(v, "secret:") {
				s.Env[j] = fmt.Sprintf("%s=[%d bytes, shown to its user only]", k, len(v))
			}
		}
	}
}

func (d *Daemon) serverList(peer Peer) []api.ServerInfo {
	var out []api.ServerInfo
	for _, name := range d.serverNamesFor(peer) {
		s, _ := d.server(name, peer)
		owner := ""
		if _, admin := d.conf().Servers[name]; !admin {
			owner = userName(peer.UID)
		}
		if s.IsRemote() {
			out = append(out, api.ServerInfo{Name: name, Owner: owner, URL: s.URLForRecords(), Network: "remote", Definition: s.Definition}) // a url may carry a credential
			continue
		}
		info := api.ServerInfo{Name: name, Owner: owner, Command: s.Command, Image: s.Image, Args: s.Args, Workdir: s.Workdir,
			Network: s.Network, Memory: int64(s.Memory), Pids: s.Pids, CPUs: s.CPUs, Seccomp: s.Seccomp, Definition: s.Definition}
		if p, err := d.sandboxParams(context.Background(), "preview", s, peer, paramsOptions{}); err == nil {
			info.User = fmt.Sprintf("%d:%d", p.UID, p.GID)
			info.Landlock = p.Landlock != nil
			for _, m := range p.Mounts {
				mode := "ro"
				if m.Writable {
					mode = "rw"
				}
				info.Mounts = append(info.Mounts, m.Source+":"+m.Target+":"+mode)
			}
			info.Hidden = p.Hidden
			for _, k := range sortedKeys(p.Env) {
				info.Env = append(info.Env, k+"="+p.Env[k])
			}
		} else {
			info.User = "error: " + err.Error()
		}
		out = append(out, info)
	}
	return out
}

// serverSpec answers with the OCI spec a session of the caller would get,
// secrets shown by reference only.
func (d *Daemon) serverSpec(fw *api.FrameWriter, peer Peer, name string, log *slog.Logger) {
	srv, ok := d.server(name, peer)
	if !ok {
		reply(fw, api.Reply{Code: api.CodeUnknownServer, Error: unknownServer(name, d.serverNamesFor(peer))}, log)
		return
	}
	if srv.IsRemote() {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("%s is a remote server (%s): it has no sandbox", srv.Name, srv.URLForRecords())}, log)
		return
	}
	p, err := d.sandboxParams(context.Background(), "0000000000000000", srv, peer, paramsOptions{resolveImage: true})
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeLaunchFailed, Error: err.Error()}, log)
		return
	}
	spec, err := sandbox.BuildSpec(p)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeLaunchFailed, Error: err.Error()}, log)
		return
	}
	replyData(fw, spec, log)
}

// secretOp manages a secret store: root's requests the administrator's
// (and agents'), anyone else's their own (usersecrets.go).
func (d *Daemon) secretOp(fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	store := d.secrets
	switch {
	case peer.UID != 0 && req.Agent != "":
		reply(fw, api.Reply{Code: api.CodeDenied, Error: "an agent's own secret is the administrator's to set: ask them (sudo mcpcage secret set NAME --agent AGENT)"}, log)
		return
	case peer.UID != 0:
		if req.Op == api.OpSecretSet {
			// Listing and removing stay open: what a subordinate uid
			// stored before can be seen and taken away.
			if err := refuseStore(peer, "secrets", fmt.Sprintf("set it (mcpcage secret set %s)", req.Name)); err != nil {
				log.Info("secret refused", "secret", req.Name, "reason", err)
				reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
				return
			}
		}
		st, err := d.userSecrets(peer.UID, req.Op == api.OpSecretSet)
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
			return
		}
		if st == nil { // the user has no secrets yet
			if req.Op == api.OpSecretList {
				replyData(fw, []string{}, log)
				return
			}
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("secret %s is not set", req.Name)}, log)
			return
		}
		userSecretMu.Lock() // the room check and the write, as one
		defer userSecretMu.Unlock()
		if req.Op == api.OpSecretSet || req.Op == api.OpSecretRm {
			old := sizeOf(st, req.Name)
			if req.Op == api.OpSecretSet {
				err := userSecretRoom(st, req.Name, req.Secret)
				if err == nil {
					if err = d.userSecretsBytes.room(d.userSecretsRoot(), old, len(req.Secret)); err != nil {
						d.secretsFull.warn(log, "secret refused", func() []any { return []any{"secret", req.Name, "reason", err} })
					}
				}
				if err != nil {
					reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
					return
				}
			}
			// Counted as it is once changed, with userSecretMu still
			// held (deferred after its unlock).
			defer func() { d.userSecretsBytes.changed(old, sizeOf(st, req.Name)) }()
		}
		store = st
	case req.Agent != "":
		err := d.checkSecretAgent(req.Agent)
		if err == nil {
			store, err = d.agentSecrets(req.Agent, req.Op == api.OpSecretSet)
		}
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
			return
		}
		if store == nil { // the agent has no secrets of its own
			if req.Op == api.OpSecretList {
				replyData(fw, []string{}, log)
				return
			}
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("agent %s has no secrets of its own", req.Agent)}, log)
			return
		}
	}
	var err error
	switch req.Op {
	case api.OpSecretSet:
		if req.Secret == "" {
			err = fmt.Errorf("empty value: pass the secret on stdin")
		} else {
			err = store.Set(req.Name, req.Secret)
		}
		if err == nil {
			d.flushWarmFor(peer) // prepared with the old value
			log.Info("secret stored", "secret", req.Name, "agent", req.Agent, "user", userName(peer.UID))
		}
	case api.OpSecretRm:
		err = store.Remove(req.Name)
		if err == nil {
			d.flushWarmFor(peer) // prepared with the removed value
			log.Info("secret removed", "secret", req.Name, "agent", req.Agent, "user", userName(peer.UID))
		}
	case api.OpSecretList:
		names, err := store.Names()
		if err == nil {
			replyData(fw, names, log)
			return
		}
	}
	if peer.UID == 0 {
		d.secretsChanged() // users' own values are not in the list
	}
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
		return
	}
	reply(fw, api.Reply{OK: true}, log)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func unknownServer(name string, known []string) string {
	if len(known) == 0 {
		return fmt.Sprintf("no server named %q; no servers are configured: add a [servers.%s] section to the mcpcaged config and restart it", name, name)
	}
	return fmt.Sprintf("no server named %q; configured servers: %s", name, strings.Join(known, ", "))
}

// trace streams kernel events to the caller until it disconnects. Users
// see their own sessions' events; root sees all.
func (d *Daemon) trace(ctx context.Context, c *net.UnixConn, fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	if d.cage == nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: "kernel events are unavailable: " + d.ebpfErr}, log)
		return
	}
	release, err := d.following.take(peer.account())
	if err != nil {
		d.following.refused(log, "trace refused", err)
		reply(fw, api.Reply{Code: api.CodeBusy, Error: err.Error()}, log)
		return
	}
	defer release()
	tr := &tracer{session: req.Session, server: req.Server, uid: peer.UID, root: peer.UID == 0, ch: make(chan []byte, traceBuffer)}
	d.tracers.add(tr)
	defer d.tracers.remove(tr)
	log.Debug("trace started", "session", req.Session, "server", req.Server)
	reply(fw, api.Reply{OK: true}, log)
	gone := clientGone(c)
	send := d.streamSender(c, fw, peer, "trace")
	for {
		select {
		case b := <-tr.ch:
			if err := send(b); err != nil {
				return
			}
		case <-gone:
			return
		case <-ctx.Done():
			return
		}
	}
}

// clientGone is closed when the client of a stream (trace, audit
// --follow) closes its connection; it sends nothing after its request, so
// whatever it does send is discarded.
func clientGone(c *net.UnixConn) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				close(gone)
				return
			}
		}
	}()
	return gone
}

// metricsStatus is where metrics are served, or why they are not ("":
// off).
func metricsStatus(d *Daemon) string {
	a, _ := d.metricsAddr.Load().(string)
	return a
}
