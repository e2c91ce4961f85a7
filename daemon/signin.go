package daemon

import (
	"context"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/oauth"
	"github.com/mcpcage/mcpcage/internal/authanswer"
)

// signinWait bounds the daemon's part of a sign-in step (discovery,
// registration, the code exchange).
const signinWait = 30 * time.Second

// maxRefusedText bounds why mcpcage login refused an answer, as it
// reaches mcpcaged (its errors, which quote nothing long).
const maxRefusedText = 600

// loginAnswer is the answer mcpcage login hands on: a code, an error
// answer, or one it refused. Its texts are bounded again here: the
// caller is any local program that can reach the socket.
func loginAnswer(req api.Request) oauth.Answer {
	a := oauth.Answer{Code: req.AuthCode, Issuer: req.AuthIssuer, IssuerUnknown: !req.AuthIssuerSent,
		Error: authanswer.OneLine(req.AuthError, authanswer.MaxErrorText)}
	if req.AuthRefused != "" {
		a.Refused = fmt.Errorf("mcpcage login ended the sign-in: %s", authanswer.OneLine(req.AuthRefused, maxRefusedText))
	}
	return a
}

// signinOp runs mcpcage login, logout and tokens for the caller: a user
// signs in for themselves only.
func (d *Daemon) signinOp(ctx context.Context, fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, signinWait)
	defer cancel()
	user := userName(peer.UID)
	switch req.Op {
	case api.OpTokens:
		out, err := d.oauth.List(peer.UID, req.All && peer.UID == 0)
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeInternal, Error: "reading sign-ins: " + err.Error()}, log)
			return
		}
		sort.Slice(out, func(a, b int) bool {
			if out[a].User != out[b].User {
				return out[a].User < out[b].User
			}
			if out[a].Server != out[b].Server {
				return out[a].Server < out[b].Server
			}
			return out[a].Agent < out[b].Agent
		})
		replyData(fw, out, log)
		return
	case api.OpLoginDone:
		g, err := d.oauth.Finish(ctx, peer.UID, req.State, loginAnswer(req))
		if err != nil {
			d.audit.AppendAsync(audit.Record{"type": string(api.RecordSignInFail), "user": user, "reason": err.Error()})
			d.metrics.RemoteSignIns.WithLabelValues("", "failed").Inc()
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
			return
		}
		d.signedIn(g, user, peer.UID, "mcpcage login", log)
		replyData(fw, g.Info(), log)
		return
	}
	srv, ok := d.server(req.Server, peer)
	if !ok {
		reply(fw, api.Reply{Code: api.CodeUnknownServer, Error: unknownServer(req.Server, d.serverNamesFor(peer))}, log)
		return
	}
	if !srv.IsRemote() {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("%s is not a remote server (it has no url): its credentials are secrets (mcpcage secret set)", srv.Name)}, log)
		return
	}
	if srv.Personal {
		// A user's own server is held to today's user_remote_hosts, as
		// its sessions are: an administrator who narrowed it keeps the
		// daemon from signing in (discovery, registration) there too.
		if err := d.checkUserRemote(srv); err != nil {
			reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
			return
		}
	}
	agent, scopes, err := d.signinAgent(req.Agent, srv)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
		return
	}
	hc, err := d.remoteClient(srv, peer)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: err.Error()}, log)
		return
	}
	switch req.Op {
	case api.OpLogin:
		t, err := d.signinTarget(srv, scopes)
		if err == nil {
			t.HTTP = hc
			var authURL, state string
			authURL, state, err = d.oauth.Begin(ctx, oauth.LoginRequest{UID: peer.UID, Account: peer.account().uid, User: user, Agent: agent, RedirectURI: req.Redirect, Target: t})
			if err == nil {
				log.Info("sign-in started", "user", user, "server", srv.Name, "agent", agent)
				replyData(fw, api.LoginStart{URL: authURL, State: state, Server: srv.Name, TakesEndings: true}, log)
				return
			}
		}
		d.metrics.RemoteSignIns.WithLabelValues(metrics.Server(srv.Name, srv.Personal), "failed").Inc()
		d.audit.AppendAsync(audit.Record{"type": string(api.RecordSignInFail), "user": user, "server": srv.Name, "agent": agent, "reason": err.Error()})
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("cannot sign in to %s: %v", srv.Name, err)}, log)
	case api.OpLogout:
		had, err := d.oauth.Remove(ctx, hc, peer.UID, srv.Name, agent)
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeInternal, Error: err.Error()}, log)
			return
		}
		if !had {
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("you are not signed in to %s%s", srv.Name, forAgent(agent))}, log)
			return
		}
		if err := d.audit.Append(audit.Record{"type": string(api.RecordSignOut), "user": user, "uid": peer.UID, "server": srv.Name, "agent": agent}); err != nil {
			log.Error("sign-out not recorded in the audit log", "err", err)
		}
		log.Info("signed out of remote server", "user", user, "server", srv.Name, "agent", agent)
		reply(fw, api.Reply{OK: true}, log)
	}
}

// signedIn counts, records and logs a finished sign-in.
func (d *Daemon) signedIn(g *oauth.Grant, user string, uid uint32, via string, log *slog.Logger) {
	_, admins := d.conf().Servers[g.Server] // else the user's own
	d.metrics.RemoteSignIns.WithLabelValues(metrics.Server(g.Server, !admins), "ok").Inc()
	if err := d.audit.Append(audit.Record{"type": string(api.RecordSignIn), "user": user, "uid": uid, "server": g.Server,
		"agent": g.Agent, "signin": g.ID, "issuer": g.Issuer, "resource": g.Resource, "scopes": g.Scopes, "subject": g.Subject,
		"client_id": g.Client.ID, "expiry": g.Expiry, "via": via}); err != nil {
		log.Error("sign-in not recorded in the audit log", "err", err)
	}
	log.Info("signed in to remote server", "user", user, "server", g.Server, "agent", g.Agent, "signin", g.ID, "scopes", strings.Join(g.Scopes, " "), "via", via)
}

// inbandAnswerRefused says why an answer brought to an in-band sign-in's
// listener at local does not count ("" when it does): it must come by GET
// from a program of the sign-in's user uid, not from mcpcaged.
func inbandAnswerRefused(req *http.Request, local string, uid uint32) string {
	peer, err := loopbackPeerOf(req.RemoteAddr, local)
	if err != nil {
		return "mcpcaged cannot tell whose program brought this answer: " + err.Error()
	}
	if peer.uid != uid {
		return fmt.Sprintf("this answer came from a program of uid %d, not of the user this sign-in is for", peer.uid)
	}
	own, err := ownSocket(peer.inode)
	if err != nil {
		return "mcpcaged cannot tell whether it brought this answer itself: " + err.Error()
	}
	if own {
		return "this answer came from mcpcaged itself (a remote server's url names this sign-in's link)"
	}
	if req.Method != http.MethodGet {
		return fmt.Sprintf("this answer came by %s; a browser brings it by GET", req.Method)
	}
	return ""
}

// inbandWait bounds an in-band sign-in (its link and listener).
const inbandWait = 10 * time.Minute

// maxInbandRefusals bounds the refused answers an in-band link's
// listener records.
const maxInbandRefusals = 5

// inbandSignIn starts the sign-in a client that declared URL-mode
// elicitation shows its user as a link: the redirect comes back to a
// loopback listener of the daemon's own (RFC 8252), bound to this
// session's user like mcpcage login's. One at a time per session; the
// same link is given again while it is pending.
func (d *Daemon) inbandSignIn(ctx context.Context, s *session) (string, string, error) {
	r := s.remote
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return "", "", err // the session ended while this request waited
	}
	if r.link != "" && time.Now().Before(r.linkExpires) {
		return r.link, r.linkID, nil
	}
	srv := s.srv
	hc, err := d.remoteClient(srv, s.peer)
	if err != nil {
		return "", "", err
	}
	agent, scopes := d.grantAgent(s.agent, srv)
	if agent == "" {
		scopes = srv.Scopes
	}
	t, err := d.signinTarget(srv, scopes)
	if err != nil {
		return "", "", err
	}
	t.HTTP = hc
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(ctx, signinWait) // and no longer than the session
	defer cancel()
	authURL, state, err := d.oauth.Begin(ctx, oauth.LoginRequest{UID: s.peer.UID, Account: s.peer.account().uid, User: s.user, Agent: agent,
		RedirectURI: fmt.Sprintf("http://%s/callback", ln.Addr()), Target: t})
	if err != nil {
		_ = ln.Close()
		return "", "", err
	}
	id := newID()
	done := make(chan struct{})
	var once sync.Once
	finish := func() { once.Do(func() { close(done) }) }
	var refusals atomic.Int32
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		a, refused := authanswer.Parse(q)
		if req.URL.Path != "/callback" || !authanswer.Carries(q, state) {
			http.Error(w, "this answer is not for a sign-in mcpcaged is waiting for", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Loopback is every local user's: the link (with its state) is
		// in the command line of the program that opens it, which any
		// user can read, and another user who signs in with it, as
		// themselves, would have this user's agent act in their account.
		// The answer counts only from a browser of the session's user.
		// Nor from mcpcaged itself: another user's remote server whose url
		// names this listener would have the daemon bring the answer, as
		// uid 0 (root's sign-in), and only a browser brings it, with GET.
		if why := inbandAnswerRefused(req, ln.Addr().String(), s.peer.UID); why != "" {
			// Recorded, up to maxInbandRefusals a link: whoever keeps
			// bringing answers with its state (read from a command line)
			// could otherwise add records without end and fill the audit
			// log's disk. The link stays: ending it would let them end
			// every link the user is given.
			n := refusals.Add(1)
			if n > maxInbandRefusals {
				w.WriteHeader(http.StatusForbidden)
				_, _ = fmt.Fprintf(w, "<p>mcpcage: %s. Open the link in your own browser.</p>", html.EscapeString(why))
				return
			}
			if n == maxInbandRefusals {
				why += fmt.Sprintf("; later refused answers to this link are not recorded (%d so far)", maxInbandRefusals)
			}
			s.log.Warn("in-band sign-in answer refused", "server", srv.Name, "reason", why)
			d.audit.AppendAsync(audit.Record{"type": string(api.RecordSignInFail), "user": s.user, "server": srv.Name, "reason": why})
			w.WriteHeader(http.StatusForbidden)
			_, _ = fmt.Fprintf(w, "<p>mcpcage: %s. Open the link in your own browser.</p>", html.EscapeString(why))
			return
		}
		fctx, fcancel := context.WithTimeout(context.Background(), signinWait)
		defer fcancel()
		g, err := d.oauth.Finish(fctx, s.peer.UID, state, oauth.Answer{Code: a.Code, Issuer: a.Issuer, Error: a.Error, Refused: refused})
		if err != nil {
			d.audit.AppendAsync(audit.Record{"type": string(api.RecordSignInFail), "user": s.user, "server": srv.Name, "reason": err.Error()})
			_, _ = fmt.Fprintf(w, "<p>mcpcage: signing in to %s failed: %s</p><p>This link is spent; your client's next request to %s gives a new one.</p>",
				html.EscapeString(srv.Name), html.EscapeString(err.Error()), html.EscapeString(srv.Name))
			// The pending sign-in is spent: the next request of the
			// session gets a new link, not this dead one.
			r.mu.Lock()
			if r.linkID == id {
				r.link = ""
			}
			r.mu.Unlock()
			finish()
			return
		}
		d.signedIn(g, s.user, s.peer.UID, "in-band link", s.log)
		_, _ = fmt.Fprintf(w, "<p>mcpcage: signed in to %s. You can close this tab and go back to your client.</p>", html.EscapeString(srv.Name))
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // the page is the browser's before the listener goes
		}
		r.mu.Lock()
		r.link = ""
		r.mu.Unlock()
		r.conn.ElicitationComplete(id)
		finish()
	})}
	go func() { _ = hs.Serve(ln) }()
	go func() {
		t := time.NewTimer(inbandWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-r.conn.Exited():
		}
		// Shutdown, not Close: a handler still writing its page (the
		// one that finished the sign-in) completes first; Close cut it
		// off, and the browser got no answer.
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := hs.Shutdown(sctx); err != nil {
			_ = hs.Close() // a connection still open after 5 s
		}
		scancel()
		r.mu.Lock()
		if r.linkID == id {
			r.link = ""
		}
		r.mu.Unlock()
	}()
	r.link, r.linkID, r.linkExpires = authURL, id, time.Now().Add(inbandWait)
	s.log.Info("in-band sign-in link offered", "server", srv.Name, "agent", agent)
	return authURL, id, nil
}

func forAgent(agent string) string {
	if agent == "" {
		return ""
	}
	return " for agent " + agent
}

// signinAgent checks the agent a sign-in is for: "" (the user's own) or
// an agent with scopes of its own for srv.
func (d *Daemon) signinAgent(agent string, srv *config.Server) (string, []string, error) {
	if agent == "" {
		return "", srv.Scopes, nil
	}
	a := d.conf().Agents[agent]
	if a == nil {
		return "", nil, fmt.Errorf("no agent %q in the config ([agents.%s])", agent, agent)
	}
	scopes, ok := a.Scopes[srv.Name]
	if !ok {
		return "", nil, fmt.Errorf("agent %s has no scopes of its own for %s ([agents.%s] scopes), so its sessions use your own sign-in: run mcpcage login %s", agent, srv.Name, agent, srv.Name)
	}
	return agent, scopes, nil
}

// signinTarget describes srv for a sign-in.
func (d *Daemon) signinTarget(srv *config.Server, scopes []string) (oauth.Target, error) {
	u, err := url.Parse(srv.URL)
	if err != nil {
		return oauth.Target{}, err
	}
	t := oauth.Target{Server: srv.Name, URL: u, ClientID: srv.ClientID, Scopes: scopes}
	if ref, ok := strings.CutPrefix(srv.ClientSecret, config.SecretPrefix); ok {
		v, err := d.secrets.Get(ref)
		if err != nil {
			return t, fmt.Errorf("client_secret of [servers.%s] names secret %q: %v (mcpcage secret set %s)", srv.Name, ref, err, ref)
		}
		t.ClientSecret = v
	}
	return t, nil
}

// actorIssuer names this daemon in actor tokens: mcpcage on this host.
func actorIssuer() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return "mcpcage:" + h
}

// jwksOp answers mcpcage jwks: the public key authorization servers
// trust for actor tokens (anyone may read it).
func (d *Daemon) jwksOp(fw *api.FrameWriter, log *slog.Logger) {
	b, err := d.actor.JWKS()
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: err.Error()}, log)
		return
	}
	replyData(fw, api.JWKS{Issuer: d.actor.Issuer(), Keys: b}, log)
}
