package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/secrets"
)

// Manager runs sign-ins and keeps grants.
type Manager struct {
	store *secrets.Store

	mu      sync.Mutex
	pending map[string]*pendingLogin // by state
	locks   map[string]*sync.Mutex   // one per grant: refreshes do not race
	cache   map[string]*Grant
	clients map[string]*Client // dynamic registrations by server
}

// NewManager keeps grants in store.
func NewManager(store *secrets.Store) *Manager {
	return &Manager{store: store, pending: map[string]*pendingLogin{}, locks: map[string]*sync.Mutex{},
		cache: map[string]*Grant{}, clients: map[string]*Client{}}
}

// Target is the server a sign-in is for, as the config describes it.
type Target struct {
	Server       string
	URL          *url.URL
	HTTP         *http.Client
	ClientID     string   // configured client id ("" = dynamic registration)
	ClientSecret string   // resolved secret of a configured confidential client
	Scopes       []string // asked for at sign-in (nil: what the server advertises)
}

// LoginRequest starts a sign-in.
type LoginRequest struct {
	UID         uint32
	User        string
	Agent       string // "" signs in for all of the user's agents
	RedirectURI string // the loopback listener of mcpcage login
	Target      Target
}

type pendingLogin struct {
	req      LoginRequest
	res      *Resource
	client   *Client
	verifier string
	scopes   []string
	expires  time.Time
}

// loginTTL bounds how long a started sign-in waits for its code.
const loginTTL = 10 * time.Minute

// maxPending bounds sign-ins waiting at once (per user: 4).
const maxPending, maxPendingPerUser = 256, 4

// Begin discovers the server's authorization server, registers a client
// when needed, and returns the URL the user opens and the state that
// ties the answer to this sign-in.
func (m *Manager) Begin(ctx context.Context, r LoginRequest) (authURL, state string, err error) {
	if err := checkRedirect(r.RedirectURI); err != nil {
		return "", "", err
	}
	res, err := Discover(ctx, r.Target.HTTP, r.Target.URL)
	if err != nil {
		if errors.Is(err, ErrNoAuth) {
			return "", "", fmt.Errorf("%s answered without asking for a sign-in: nothing to do", r.Target.Server)
		}
		return "", "", err
	}
	scopes := r.Target.Scopes
	if scopes == nil && res.ChallengeScope != "" {
		scopes = strings.Fields(res.ChallengeScope)
	} else if scopes == nil {
		scopes = res.ScopesSupported
	}
	client, err := m.client(ctx, r, res, scopes)
	if err != nil {
		return "", "", err
	}
	state = randomString()
	verifier := oauth2.GenerateVerifier()
	cfg := oauthConfig(res, client, r.RedirectURI, scopes)
	authURL = cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", res.Resource))

	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	mine := 0
	for k, p := range m.pending {
		if now.After(p.expires) {
			delete(m.pending, k)
		} else if p.req.UID == r.UID {
			mine++
		}
	}
	if mine >= maxPendingPerUser || len(m.pending) >= maxPending {
		return "", "", errors.New("too many sign-ins waiting: finish or abandon one (they expire after 10 minutes)")
	}
	m.pending[state] = &pendingLogin{req: r, res: res, client: client, verifier: verifier, scopes: scopes, expires: now.Add(loginTTL)}
	return authURL, state, nil
}

// client returns the configured client, or a registration whose redirect
// URIs hold r's.
func (m *Manager) client(ctx context.Context, r LoginRequest, res *Resource, scopes []string) (*Client, error) {
	if r.Target.ClientID != "" {
		return &Client{ID: r.Target.ClientID, Secret: r.Target.ClientSecret}, nil
	}
	key := r.Target.Server + "\x00" + res.Issuer
	m.mu.Lock()
	c := m.clients[key]
	m.mu.Unlock()
	if c != nil && slices.Contains(c.RedirectURIs, r.RedirectURI) {
		return c, nil
	}
	c, err := Register(ctx, r.Target.HTTP, res, r.RedirectURI, scopes)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.clients[key] = c
	m.mu.Unlock()
	return c, nil
}

func oauthConfig(res *Resource, c *Client, redirect string, scopes []string) *oauth2.Config {
	style := oauth2.AuthStyleInParams
	if c.Secret != "" {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{ClientID: c.ID, ClientSecret: c.Secret, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: res.AuthURL, TokenURL: res.TokenURL, AuthStyle: style}}
}

// Finish exchanges the code the redirect brought for tokens and keeps
// them as the caller's grant. Only the user who began the sign-in can
// finish it.
func (m *Manager) Finish(ctx context.Context, uid uint32, state, code string) (*Grant, error) {
	m.mu.Lock()
	p := m.pending[state]
	if p != nil && p.req.UID == uid {
		delete(m.pending, state) // single use
	}
	m.mu.Unlock()
	if p == nil || p.req.UID != uid || time.Now().After(p.expires) {
		return nil, errors.New("no sign-in of yours is waiting for that answer (it expired after 10 minutes, or was finished): run mcpcage login again")
	}
	cfg := oauthConfig(p.res, p.client, p.req.RedirectURI, p.scopes)
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, p.req.Target.HTTP), code,
		oauth2.VerifierOption(p.verifier), oauth2.SetAuthURLParam("resource", p.res.Resource))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("the authorization server refused the code: %s %s", re.ErrorCode, re.ErrorDescription)
		}
		return nil, fmt.Errorf("exchanging the code: %w", err)
	}
	if !strings.EqualFold(tok.Type(), "bearer") {
		return nil, fmt.Errorf("the authorization server issued a %q token; MCP needs a bearer token", tok.TokenType)
	}
	g := &Grant{ID: randomString()[:16], UID: uid, User: p.req.User, Server: p.req.Target.Server, Agent: p.req.Agent,
		Issuer: p.res.Issuer, Resource: p.res.Resource, TokenURL: p.res.TokenURL, Revoke: p.res.RevocationURL, Client: *p.client,
		Scopes: p.scopes, Obtained: time.Now(), AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		g.Scopes = strings.Fields(s)
	}
	g.Subject = subjectOf(tok.AccessToken)
	if err := m.save(g); err != nil {
		return nil, err
	}
	return g, nil
}

// checkRedirect accepts only a loopback http redirect (RFC 8252 §7.3).
func checkRedirect(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Port() == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("redirect %q: must be http://127.0.0.1:PORT/PATH", s)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "::1" {
		return fmt.Errorf("redirect %q: must be on 127.0.0.1 or [::1]", s)
	}
	return nil
}

// key names a grant in the store: the uid, then server and agent
// hex-encoded (names may hold '.', '-', '_').
func key(uid uint32, server, agent string) string {
	return fmt.Sprintf("u%d_%s", uid, hex.EncodeToString([]byte(server+"\x00"+agent)))
}

func (m *Manager) lock(k string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[k] = l
	}
	return l
}

func (m *Manager) save(g *Grant) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	k := key(g.UID, g.Server, g.Agent)
	if err := m.store.Set(k, string(b)); err != nil {
		return fmt.Errorf("keeping the sign-in: %w", err)
	}
	m.mu.Lock()
	c := *g
	m.cache[k] = &c
	m.mu.Unlock()
	return nil
}

// load returns a copy of the grant, or nil.
func (m *Manager) load(uid uint32, server, agent string) (*Grant, error) {
	k := key(uid, server, agent)
	m.mu.Lock()
	if g := m.cache[k]; g != nil {
		c := *g
		m.mu.Unlock()
		return &c, nil
	}
	m.mu.Unlock()
	v, err := m.store.Get(k)
	if errors.Is(err, secrets.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return nil, fmt.Errorf("stored sign-in unreadable: %w", err)
	}
	m.mu.Lock()
	c := g
	m.cache[k] = &c
	m.mu.Unlock()
	return &g, nil
}

// Remove forgets a grant and asks the authorization server to revoke
// its tokens (RFC 7009) when it offers revocation; it reports whether
// there was one.
func (m *Manager) Remove(ctx context.Context, hc *http.Client, uid uint32, server, agent string) (bool, error) {
	k := key(uid, server, agent)
	l := m.lock(k)
	l.Lock()
	defer l.Unlock()
	g, err := m.load(uid, server, agent)
	if err != nil || g == nil {
		return false, err
	}
	if g.Revoke != "" && hc != nil {
		for _, t := range []struct{ tok, hint string }{{g.RefreshToken, "refresh_token"}, {g.AccessToken, "access_token"}} {
			if t.tok != "" {
				revoke(ctx, hc, g, t.tok, t.hint)
			}
		}
	}
	m.mu.Lock()
	delete(m.cache, k)
	m.mu.Unlock()
	if err := m.store.Remove(k); err != nil && !errors.Is(err, secrets.ErrNotFound) {
		return true, err
	}
	return true, nil
}

// revoke is best effort: the grant is forgotten either way.
func revoke(ctx context.Context, hc *http.Client, g *Grant, tok, hint string) {
	form := url.Values{"token": {tok}, "token_type_hint": {hint}}
	if g.Client.Secret == "" {
		form.Set("client_id", g.Client.ID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.Revoke, strings.NewReader(form.Encode()))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if g.Client.Secret != "" {
		req.SetBasicAuth(url.QueryEscape(g.Client.ID), url.QueryEscape(g.Client.Secret))
	}
	if resp, err := hc.Do(req); err == nil {
		_ = resp.Body.Close()
	}
}

// List returns the grants of uid (all users' when all is set).
func (m *Manager) List(uid uint32, all bool) ([]Info, error) {
	names, err := m.store.Names()
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("u%d_", uid)
	var out []Info
	for _, n := range names {
		if !all && !strings.HasPrefix(n, prefix) {
			continue
		}
		v, err := m.store.Get(n)
		if err != nil {
			continue
		}
		var g Grant
		if json.Unmarshal([]byte(v), &g) != nil {
			continue
		}
		out = append(out, g.Info())
	}
	return out, nil
}

// Authorizer gives a session the user's tokens for server and agent.
// wantScopes, when set (the agent's scopes for the server), must cover
// the grant's: a broader sign-in is not used for a narrowed agent.
func (m *Manager) Authorizer(uid uint32, server, agent string, wantScopes []string, hc *http.Client) *Authorizer {
	return &Authorizer{m: m, uid: uid, server: server, agent: agent, want: wantScopes, hc: hc}
}

// Authorizer implements remote.Authorizer for one session.
type Authorizer struct {
	m      *Manager
	uid    uint32
	server string
	agent  string
	want   []string
	hc     *http.Client
}

// Grant returns what may be shown of the grant the session uses (nil
// when the user has not signed in).
func (a *Authorizer) Grant() *Info {
	g, err := a.m.load(a.uid, a.server, a.agent)
	if err != nil || g == nil {
		return nil
	}
	i := g.Info()
	return &i
}

func (a *Authorizer) signIn(why string) error {
	cmd := "mcpcage login " + a.server
	if a.agent != "" {
		cmd += " --agent " + a.agent
	}
	return &remote.SignInError{Msg: fmt.Sprintf("%s needs you to sign in%s: run `%s`", a.server, why, cmd)}
}

// Token returns the access token, refreshed ahead of expiry; "" when the
// user has not signed in.
func (a *Authorizer) Token(ctx context.Context) (string, error) {
	g, err := a.m.load(a.uid, a.server, a.agent)
	if err != nil {
		return "", err
	}
	if g == nil {
		return "", nil // asked for without a token: the server may need none (a 401 asks for the sign-in)
	}
	if a.want != nil {
		for _, s := range g.Scopes {
			if !slices.Contains(a.want, s) {
				return "", a.signIn(fmt.Sprintf(" again: the sign-in holds scope %q, which agent %s may no longer use", s, a.agent))
			}
		}
	}
	if g.Expiry.IsZero() || time.Until(g.Expiry) > refreshAhead(g) {
		return g.AccessToken, nil
	}
	return a.renew(ctx, g.AccessToken)
}

// Renew refreshes after the server refused refused (401).
func (a *Authorizer) Renew(ctx context.Context, refused string) (string, error) {
	return a.renew(ctx, refused)
}

func (a *Authorizer) renew(ctx context.Context, stale string) (string, error) {
	l := a.m.lock(key(a.uid, a.server, a.agent))
	l.Lock()
	defer l.Unlock()
	g, err := a.m.load(a.uid, a.server, a.agent)
	if err != nil {
		return "", err
	}
	if g == nil {
		if a.agent != "" {
			return "", a.signIn(" for agent " + a.agent + " (the agent has its own scopes for this server)")
		}
		return "", a.signIn("")
	}
	if g.AccessToken != stale && (g.Expiry.IsZero() || time.Until(g.Expiry) > refreshAhead(g)) {
		return g.AccessToken, nil // another session refreshed it meanwhile
	}
	if g.RefreshToken == "" {
		return "", a.signIn(" again: the sign-in expired")
	}
	if err := refresh(ctx, a.hc, g); err != nil {
		if errors.Is(err, ErrRefreshRefused) {
			return "", a.signIn(" again: the authorization server refused to refresh the sign-in (revoked or expired)")
		}
		if time.Now().Before(g.Expiry) {
			return g.AccessToken, nil // still valid: refresh again next time
		}
		return "", err
	}
	if err := a.m.save(g); err != nil {
		return "", err
	}
	return g.AccessToken, nil
}

func randomString() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
