package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/oauth"
	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/sandbox"
)

// serverHandle is the server a session runs against: a sandboxed process
// (*sandbox.Instance) or the bridge to a remote server.
type serverHandle interface {
	Exited() <-chan struct{}
	ExitCode() (uint32, error)
	Stop(ctx context.Context, grace time.Duration)
	Kill(ctx context.Context)
	Remove(ctx context.Context) error
	Limits() sandbox.Limits
	Lost() error
}

// remoteServer is a session's bridge to a remote server and the sign-in
// it uses.
type remoteServer struct {
	conn  *remote.Conn
	auth  *oauth.Authorizer
	url   *url.URL
	grant string // the agent whose sign-in the session uses ("" = the user's)

	mu          sync.Mutex // the in-band sign-in (see inbandSignIn)
	link        string
	linkID      string
	linkExpires time.Time
}

func (r *remoteServer) Exited() <-chan struct{} { return r.conn.Exited() }

func (r *remoteServer) ExitCode() (uint32, error) {
	select {
	case <-r.conn.Exited():
	default:
		return 0, fmt.Errorf("still connected")
	}
	if r.conn.Failure() != "" {
		return 1, nil
	}
	return 0, nil
}

func (r *remoteServer) Stop(_ context.Context, grace time.Duration) { r.conn.Stop(grace) }
func (r *remoteServer) Kill(context.Context)                        { r.conn.Kill() }
func (r *remoteServer) Remove(context.Context) error                { return nil }
func (r *remoteServer) Limits() sandbox.Limits                      { return sandbox.Limits{} }
func (r *remoteServer) Lost() error                                 { return nil }

// gone explains the end of the remote server's messages.
func (r *remoteServer) gone() string {
	if f := r.conn.Failure(); f != "" {
		return f
	}
	return "the connection to the remote MCP server ended"
}

// remoteClients caches one HTTP client per remote server definition, so
// sessions of a server share connections; a reload that changes the
// definition makes a new one.
type remoteClients struct {
	mu sync.Mutex
	m  map[string]*http.Client // by what the client is made of
}

// remoteClient is the HTTP client of a remote server's definition, which
// resolves names with the daemon's dns_servers and private_domains.
// remoteClient is the HTTP client of srv's traffic; user is whose
// session or sign-in it is for (a user's own server's connections are
// checked against its owner: remote.ClientOptions.Owner).
func (d *Daemon) remoteClient(srv *config.Server, user Peer) (*http.Client, error) {
	dc := d.conf().Daemon
	var owner *remote.Owner
	var local []uint32 // nil: any
	if srv.Personal {
		owner = &remote.Owner{UID: user.UID, GID: user.GID}
	} else {
		var err error
		if local, err = localUsers(srv); err != nil {
			return nil, err
		}
	}
	return d.remotes.get(srv, owner, local, dc.DNSServers, dc.PrivateDomains)
}

// localUsers are the uids srv's local_users name ([0] when unset; nil
// for "*": any).
func localUsers(srv *config.Server) ([]uint32, error) {
	if len(srv.LocalUsers) == 0 {
		return []uint32{0}, nil
	}
	var uids []uint32
	for _, name := range srv.LocalUsers {
		if name == config.AnyLocalUser {
			return nil, nil
		}
		uid, ok, err := uidOfName(name)
		if n, nerr := strconv.ParseUint(name, 10, 32); nerr == nil { // a uid
			uid, ok, err = uint32(n), true, nil
		}
		switch {
		case err != nil:
			return nil, fmt.Errorf("local_users %q of server %s: %w", name, srv.Name, err)
		case !ok:
			return nil, fmt.Errorf("local_users of server %s names %q, no user of this host (a build without cgo reads only /etc/passwd: name a user of a directory service by its uid)", srv.Name, name)
		}
		uids = append(uids, uid)
	}
	return uids, nil
}

func (rc *remoteClients) get(srv *config.Server, owner *remote.Owner, local []uint32, dnsServers, privateDomains []string) (*http.Client, error) {
	// By what the client is made of: a user's own server is a new
	// definition at every look-up, and a client per look-up would keep
	// its idle connections open for each.
	// The CA file by its content: a bundle rotated and reloaded is trusted
	// at once.
	ownerKey := fmt.Sprintf("admin:%v:%v", local == nil, local)
	if owner != nil {
		ownerKey = fmt.Sprintf("%d:%d", owner.UID, owner.GID)
	}
	key := strings.Join([]string{srv.Name, ownerKey, strings.Join(srv.RemoteHosts(), ","), srv.CAFile, fileDigest(srv.CAFile), time.Duration(srv.Timeout).String(),
		strings.Join(dnsServers, ","), strings.Join(privateDomains, ",")}, "\x00")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if c := rc.m[key]; c != nil {
		return c, nil
	}
	c, err := remote.NewHTTPClient(remote.ClientOptions{Hosts: srv.RemoteHosts(), CAFile: srv.CAFile,
		Timeout: time.Duration(srv.Timeout), Server: srv.Name, DNSServers: dnsServers, PrivateDomains: privateDomains, Owner: owner, LocalUIDs: local, AnyLocalUser: owner == nil && local == nil})
	if err != nil {
		return nil, err
	}
	if rc.m == nil || len(rc.m) >= maxRemoteClients {
		for _, old := range rc.m {
			old.CloseIdleConnections() // sessions using it keep theirs
		}
		rc.m = map[string]*http.Client{} // definitions of past configs are dropped
	}
	rc.m[key] = c
	return c, nil
}

// fileDigest is the SHA-256 of file's content ("" for none; the error
// when it cannot be read, which building the client then reports).
func fileDigest(file string) string {
	if file == "" {
		return ""
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maxRemoteClients bounds the cached clients (of past configs' and
// users' definitions too).
const maxRemoteClients = 256

// grantAgent is the agent whose sign-in a session of agent uses for srv
// ("" = the user's own) and the scopes that bind it (nil = none).
func (d *Daemon) grantAgent(agent string, srv *config.Server) (string, []string) {
	if a := d.conf().Agents[agent]; a != nil {
		if scopes, ok := a.Scopes[srv.Name]; ok {
			return agent, scopes
		}
	}
	return "", nil
}

// checkUserRemote refuses a user's remote server whose hosts the
// administrator does not allow ([daemon] user_remote_hosts).
func (d *Daemon) checkUserRemote(srv *config.Server) error {
	if !srv.IsRemote() {
		return nil
	}
	dc := &d.conf().Daemon
	for _, h := range srv.RemoteHosts() {
		if !dc.UserRemoteHostAllowed(h) {
			return fmt.Errorf("remote servers of your own may not reach %s on this host ([daemon] user_remote_hosts = %q): ask your administrator", h, dc.UserRemoteHosts)
		}
	}
	return nil
}

// startRemote connects the session to its remote server: the bridge is
// the relay's server, with the user's (or the agent's) sign-in.
func (d *Daemon) startRemote(s *session) error {
	srv := s.srv
	u, err := url.Parse(srv.URL)
	if err != nil {
		return fmt.Errorf("url of [servers.%s]: %w", srv.Name, err)
	}
	if srv.Personal {
		if err := d.checkUserRemote(srv); err != nil {
			return err
		}
	}
	hc, err := d.remoteClient(srv, s.peer)
	if err != nil {
		return err
	}
	grantAgent, scopes := d.grantAgent(s.agent, srv)
	auth := d.oauth.Authorizer(s.peer.UID, srv.Name, srv.URL, grantAgent, scopes,
		oauth.ActorClaims{Exe: s.agentP.Exe, SHA256: s.agentP.SHA256, User: s.user}, hc)
	upstream := d.metrics.RemoteRequests
	latency := d.metrics.RemoteLatency.WithLabelValues(s.serverLabel)
	conn := remote.New(remote.Options{URL: u, Server: srv.Name, HTTP: hc, Auth: auth,
		SignInLink:      func(ctx context.Context) (string, string, error) { return d.inbandSignIn(ctx, s) },
		MaxMessageBytes: int64(d.conf().Daemon.MaxMessageBytes), Logger: s.log,
		OnUpstream: func(_ string, status int, took time.Duration) {
			upstream.WithLabelValues(s.serverLabel, strconv.Itoa(status/100)+"xx").Inc()
			latency.Observe(took.Seconds())
		},
		OnInternalError: func() {
			d.metrics.InternalErrors.WithLabelValues(internalInSession).Inc()
			s.endForBug()
		}})
	s.remote = &remoteServer{conn: conn, auth: auth, url: u, grant: grantAgent}
	s.handle = s.remote
	if err := d.audit.Append(s.remoteStartRecord()); err != nil {
		conn.Kill()
		return err
	}
	s.relay.AttachServer(conn, conn.Out())
	return nil
}

// upstream describes the remote side of a session for records: where,
// and whose sign-in (never a token).
func (s *session) upstream() map[string]any {
	r := s.remote
	up := map[string]any{"url": s.srv.URLForRecords()}
	if r.grant != "" {
		up["signin_agent"] = r.grant
	}
	via, g := r.auth.Planned()
	if via != oauth.ViaNone {
		up["via"] = string(via)
	}
	if g != nil {
		up["signin"] = g.ID
		up["issuer"] = g.Issuer
		up["scopes"] = g.Scopes
		if g.Subject != "" {
			up["subject"] = g.Subject
		}
		if via == oauth.ViaExchanged {
			up["act"] = s.agent
		}
	} else {
		up["signin"] = nil
	}
	return up
}

// remoteStartRecord: who connected to which remote server, on whose
// sign-in.
func (s *session) remoteStartRecord() audit.Record {
	return s.record(api.RecordSessionStart, audit.Record{
		"agent_detail":     agentDetail(s.agentP),
		"delegator":        s.delegator(),
		"remote":           s.upstream(),
		"default_decision": string(s.policy.d.conf().Decision(s.srv)),
		"stdio":            string(s.stdio),
	})
}

// announceRemote counts and logs a session with a remote server.
func (d *Daemon) announceRemote(s *session) {
	d.metrics.SessionsTotal.WithLabelValues(s.serverLabel, metrics.Agent(s.agent)).Inc()
	s.log.Info("session started", "agent_exe", s.agentP.Exe, "agent_sha256", s.agentP.SHA256, "agent_uid", s.agentP.UID,
		"remote", s.srv.URLForRecords(), "signin_agent", s.remote.grant, "stdio", s.stdio)
}
