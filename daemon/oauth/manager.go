package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/internal/authanswer"
)

// Manager runs sign-ins and keeps grants.
type Manager struct {
	store *secrets.Store

	mu      sync.Mutex
	pending map[string]*pendingLogin // by state
	locks   map[string]*sync.Mutex   // one per grant: refreshes do not race
	cache   map[string]*Grant
	clients map[string]registration // dynamic registrations by user, server and issuer
	// registered holds, per user, when registrations were made for
	// their sign-ins within the last registrationWindow (see client).
	registered map[uint32][]time.Time
	xs         map[string]*exchanged // tokens narrowed to agents, by grant key
	actor      *Actor                // signs actor tokens; nil: no token exchange
	// keeping serializes the bound's count and the save of new grants
	// (roomToKeep), so that sign-ins ending at once cannot pass it
	// together.
	keeping sync.Mutex
	kept    grantBounds
}

// grantBounds bounds the grants kept (see maxGrantsPerAccount).
type grantBounds struct{ perAccount, all int }

// SetActor makes token exchange available with a's tokens.
func (m *Manager) SetActor(a *Actor) { m.actor = a }

// NewManager keeps grants in store.
func NewManager(store *secrets.Store) *Manager {
	return &Manager{store: store, pending: map[string]*pendingLogin{}, locks: map[string]*sync.Mutex{},
		cache: map[string]*Grant{}, clients: map[string]registration{}, xs: map[string]*exchanged{}, registered: map[uint32][]time.Time{},
		kept: grantBounds{perAccount: maxGrantsPerAccount, all: maxGrants}}
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
	UID uint32
	// Account is the uid whose bounds the sign-in counts toward: its
	// owner when UID is a subordinate uid (/etc/subuid); 0 is UID's own
	// (root owns no account of subordinate uids: see the daemon's
	// account.go).
	Account     uint32
	User        string
	Agent       string // "" signs in for all of the user's agents
	RedirectURI string // the loopback listener of mcpcage login
	Target      Target
}

// account is the uid r counts toward.
func (r LoginRequest) account() uint32 {
	if r.Account != 0 {
		return r.Account
	}
	return r.UID
}

type pendingLogin struct {
	req      LoginRequest
	res      *Resource
	client   *Client
	verifier string
	scopes   []string
	expires  time.Time
}

// The grants kept on root's disk are bounded: a user signs in to a few
// servers, but one with subordinate uids (/etc/subuid) could sign in as
// each of thousands of uids, every sign-in counted toward them, and an
// authorization server chooses how large its tokens are.
const (
	maxGrantsPerAccount = 64       // of one user, their subordinate uids' included
	maxGrants           = 4096     // of all users
	maxGrantBytes       = 64 << 10 // one grant, its tokens included
)

// loginTTL bounds how long a started sign-in waits for its code.
const loginTTL = 10 * time.Minute

// maxPending bounds sign-ins waiting at once (per user: 4).
const maxPending, maxPendingPerUser = 256, 4

// A user's sign-ins may have at most maxRegistrations clients registered
// (RFC 7591) within registrationWindow. A registration's redirect URI
// holds its listener's port, which is new for each mcpcage login, so
// most sign-ins register a client; without a bound, any local user could
// have mcpcaged register clients at an authorization server without end,
// as fast as sign-ins can be started and abandoned.
const (
	maxRegistrations   = 20
	registrationWindow = time.Hour
)

// Begin discovers the server's authorization server, registers a client
// when needed, and returns the URL the user opens and the state that
// ties the answer to this sign-in.
func (m *Manager) Begin(ctx context.Context, r LoginRequest) (authURL, state string, err error) {
	if err := checkRedirect(r.RedirectURI); err != nil {
		return "", "", err
	}
	// The bound first: a user at it makes no request to the servers.
	m.mu.Lock()
	err = m.roomToBegin(r.account(), time.Now())
	m.mu.Unlock()
	if err != nil {
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
	if err := m.roomToBegin(r.account(), now); err != nil { // again: others may have begun meanwhile
		return "", "", err
	}
	m.pending[state] = &pendingLogin{req: r, res: res, client: client, verifier: verifier, scopes: scopes, expires: now.Add(loginTTL)}
	return authURL, state, nil
}

// roomToBegin drops the expired sign-ins and says whether account (a
// uid with its subordinate uids) may begin another one. m.mu is held.
func (m *Manager) roomToBegin(account uint32, now time.Time) error {
	mine := 0
	for k, p := range m.pending {
		if now.After(p.expires) {
			delete(m.pending, k)
		} else if p.req.account() == account {
			mine++
		}
	}
	if mine >= maxPendingPerUser || len(m.pending) >= maxPending {
		return errors.New("too many sign-ins waiting: finish or abandon one (they expire after 10 minutes)")
	}
	return nil
}

// takeRegistration counts a registration for uid's sign-in, or says when
// the next one may be made. m.mu is held.
func (m *Manager) takeRegistration(uid uint32, server string, now time.Time) error {
	recent := slices.DeleteFunc(m.registered[uid], func(t time.Time) bool { return now.Sub(t) >= registrationWindow })
	if len(recent) >= maxRegistrations {
		m.registered[uid] = recent
		wait := recent[0].Add(registrationWindow).Sub(now).Round(time.Minute)
		return fmt.Errorf("your sign-ins have registered %d clients at authorization servers in the last %s (each mcpcage login registers one, RFC 7591), "+
			"the most mcpcaged makes for one user: try again in %s, or have the administrator configure a client_id for %s", len(recent), registrationWindow, max(wait, time.Minute), server)
	}
	m.registered[uid] = append(recent, now)
	if len(m.registered) > maxPending { // users with nothing recent go
		for u, ts := range m.registered {
			if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= registrationWindow {
				delete(m.registered, u)
			}
		}
	}
	return nil
}

// registration is a dynamic registration kept for the user's sign-ins to
// come: one with the same redirect URI uses it again.
type registration struct {
	client *Client
	added  time.Time
}

// maxClients bounds the registrations kept (the oldest goes first): one
// serves only its user's next sign-ins on the same redirect.
const maxClients = 256

// client returns the configured client, or a registration whose redirect
// URIs hold r's.
func (m *Manager) client(ctx context.Context, r LoginRequest, res *Resource, scopes []string) (*Client, error) {
	if r.Target.ClientID != "" {
		return &Client{ID: r.Target.ClientID, Secret: r.Target.ClientSecret}, nil
	}
	key := fmt.Sprintf("%d\x00%s\x00%s", r.UID, r.Target.Server, res.Issuer)
	m.mu.Lock()
	c := m.clients[key].client
	if c != nil && slices.Contains(c.RedirectURIs, r.RedirectURI) {
		m.mu.Unlock()
		return c, nil
	}
	err := m.takeRegistration(r.account(), r.Target.Server, time.Now())
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c, err = Register(ctx, r.Target.HTTP, res, r.RedirectURI, scopes)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.keepClient(key, c, time.Now())
	m.mu.Unlock()
	return c, nil
}

// keepClient keeps c under key, the oldest registration going when
// maxClients are kept. m.mu is held.
func (m *Manager) keepClient(key string, c *Client, now time.Time) {
	if _, ok := m.clients[key]; !ok && len(m.clients) >= maxClients {
		oldest := ""
		for k, r := range m.clients {
			if oldest == "" || r.added.Before(m.clients[oldest].added) {
				oldest = k
			}
		}
		delete(m.clients, oldest)
	}
	m.clients[key] = registration{client: c, added: now}
}

func oauthConfig(res *Resource, c *Client, redirect string, scopes []string) *oauth2.Config {
	style := oauth2.AuthStyleInParams
	if c.Secret != "" {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{ClientID: c.ID, ClientSecret: c.Secret, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: res.AuthURL, TokenURL: res.TokenURL, AuthStyle: style}}
}

// Answer is what the authorization server's redirect brought back to a
// sign-in's loopback listener.
type Answer struct {
	Code string
	// Issuer is the answer's iss parameter (RFC 9207), nil when it had
	// none.
	Issuer *string
	// IssuerUnknown: the caller could not say whether the answer had an
	// issuer (an mcpcage login older than the daemon).
	IssuerUnknown bool
	// Error is an error answer's text (authanswer.Answer.Error; Code is
	// then empty). Finish spends the sign-in and returns it, once the
	// answer's issuer is the sign-in's own.
	Error string
	// Refused: the listener refused the answer (authanswer.Parse), for
	// this reason. Finish spends the sign-in and returns it.
	Refused error
}

// ErrSignInRefused says the authorization server answered the sign-in
// with an error (the user declined, or may not sign in there).
var ErrSignInRefused = errors.New("the authorization server refused the sign-in")

// maxIssuerShown bounds an issuer quoted in an error (the answer's comes
// from whoever sent the browser to the listener; the server's from its
// metadata).
const maxIssuerShown = 200

// shown is an issuer as an error quotes it: bounded, in quotes.
func shown(iss string) string {
	return strconv.Quote(authanswer.OneLine(iss, maxIssuerShown))
}

// checkIssuer refuses an answer from another authorization server than
// the one the sign-in went to (RFC 9207): a server the user also signs in
// to that sends the browser on to another one, whose answer then reaches
// this sign-in's listener, would otherwise be sent that other server's
// code (with the verifier) at its own token endpoint: the mix-up attack.
// An answer without iss is refused when the server says it always names
// itself; the comparison is exact, as RFC 9207 asks.
func checkIssuer(res *Resource, a Answer) error {
	switch {
	case a.IssuerUnknown && res.IssuerInAnswers:
		return fmt.Errorf("authorization server %s names itself in every answer (RFC 9207), but this mcpcage command is older than mcpcaged "+
			"and does not hand on which server answered: refused, and its code was sent nowhere; update mcpcage (one package holds both) and run mcpcage login again", shown(res.Issuer))
	case a.IssuerUnknown:
		return nil // as before RFC 9207: nothing to compare
	case a.Issuer != nil && *a.Issuer != res.Issuer:
		return fmt.Errorf("the answer comes from authorization server %s, but this sign-in went to %s: refused, and nothing was sent to a token endpoint "+
			"(an answer from another server than the one asked is how a mix-up attack steals a sign-in, RFC 9207); "+
			"if you did not expect to sign in at %s, do not use the link again", shown(*a.Issuer), shown(res.Issuer), shown(*a.Issuer))
	case a.Issuer == nil && res.IssuerInAnswers:
		return fmt.Errorf("authorization server %s says it names itself in every answer (RFC 9207), but this answer names no server: refused, "+
			"and nothing was sent to a token endpoint; run mcpcage login again, and open the link you are given", shown(res.Issuer))
	}
	return nil
}

// Finish exchanges the code the redirect brought for tokens and keeps
// them as the caller's grant. Only the user who began the sign-in can
// finish it, and only with an answer of the authorization server it went
// to (checkIssuer). Every answer spends the sign-in: a refused one, an
// error answer (checked against the issuer too, RFC 9207 §2.4: another
// server's error is not this sign-in's end, but it is not trusted to go
// on either) and a code that cannot be exchanged.
func (m *Manager) Finish(ctx context.Context, uid uint32, state string, a Answer) (*Grant, error) {
	m.mu.Lock()
	p := m.pending[state]
	if p != nil && p.req.UID == uid {
		delete(m.pending, state) // single use
	}
	m.mu.Unlock()
	if p == nil || p.req.UID != uid || time.Now().After(p.expires) {
		return nil, errors.New("no sign-in of yours is waiting for that answer (it expired after 10 minutes, or was finished): run mcpcage login again")
	}
	if a.Refused != nil {
		return nil, a.Refused
	}
	if err := checkIssuer(p.res, a); err != nil {
		return nil, err
	}
	switch {
	case a.Error == "" && a.Code == "", a.Error == authanswer.NoCode:
		return nil, errors.New(authanswer.NoCode + ": refused")
	case a.Error != "":
		return nil, fmt.Errorf("%w: %s", ErrSignInRefused, authanswer.OneLine(a.Error, authanswer.MaxErrorText))
	}
	cfg := oauthConfig(p.res, p.client, p.req.RedirectURI, p.scopes)
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, noRedirects(p.req.Target.HTTP)), a.Code,
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
	g := &Grant{ID: randomString()[:16], UID: uid, User: p.req.User, Server: p.req.Target.Server, ServerURL: p.req.Target.URL.String(), Agent: p.req.Agent,
		Issuer: p.res.Issuer, Resource: p.res.Resource, TokenURL: p.res.TokenURL, Revoke: p.res.RevocationURL, Client: *p.client,
		TokenExchange: p.res.TokenExchange, Scopes: p.scopes, Obtained: time.Now(), AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}
	if granted, known := grantedScopes(tok); known {
		g.Scopes = granted
	} else if p.req.Agent != "" {
		// RFC 6749 §5.1: no scope means the scope of the authorization
		// request, which whoever held its link could have widened (the
		// agent's client is given it in-band): an agent held to scopes
		// must not keep a token of unknown reach (found by a red-team
		// helper).
		return nil, fmt.Errorf("the authorization server did not say which scopes it granted (no scope in its token answer, and the token does not say), so mcpcaged cannot hold agent %s to its scopes (%s): the sign-in is not kept; sign in for yourself (mcpcage login %s), or have the administrator drop the agent's scopes for %s",
			p.req.Agent, joinScopes(p.scopes), p.req.Target.Server, p.req.Target.Server)
	}
	g.Subject = subjectOf(tok.AccessToken)
	g.Account = p.req.Account
	// Under the grant's lock: a refresh of the grant this one replaces
	// holds it from its load to its save, and would otherwise save the
	// old grant over the new one. The grant's lock before keeping: a
	// refresh takes only the grant's.
	k := key(g.UID, g.Server, g.Agent)
	l := m.lock(k)
	l.Lock()
	defer l.Unlock()
	m.keeping.Lock()
	defer m.keeping.Unlock()
	if err := m.roomToKeep(k, g.account()); err != nil {
		return nil, err
	}
	if err := m.save(g); err != nil {
		return nil, err
	}
	return g, nil
}

// roomToKeep says whether a sign-in of account may be kept under key k:
// one that replaces the grant under k always may; a new one within
// maxGrantsPerAccount and maxGrants (m.kept).
func (m *Manager) roomToKeep(k string, account uint32) error {
	names, err := m.store.Names()
	if err != nil {
		return fmt.Errorf("counting the sign-ins kept: %w", err)
	}
	total, mine := 0, 0
	for _, n := range names {
		if n == k {
			return nil
		}
		v, err := m.store.Get(n)
		var g Grant
		if !strings.HasPrefix(n, "u") || err != nil || json.Unmarshal([]byte(v), &g) != nil {
			continue // not a grant (the actor's key), or gone since
		}
		total++
		if g.account() == account {
			mine++
		}
	}
	switch {
	case mine >= m.kept.perAccount:
		return fmt.Errorf("you keep %d sign-ins (your subordinate uids' included), the most one user may: the new one is not kept; remove some with mcpcage logout SERVER, then sign in again", mine)
	case total >= m.kept.all:
		return fmt.Errorf("mcpcaged keeps %d sign-ins of all users, the most it keeps: the new one is not kept; ask the administrator (sign-ins of removed users or servers can be dropped)", total)
	}
	return nil
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

// key names a grant in the store: the uid, then a digest of server and
// agent (names may hold '.', '-', '_' and be long; a store name is short).
func key(uid uint32, server, agent string) string {
	sum := sha256.Sum256([]byte(server + "\x00" + agent))
	return fmt.Sprintf("u%d_%s", uid, hex.EncodeToString(sum[:16]))
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
	if len(b) > maxGrantBytes {
		return fmt.Errorf("keeping the sign-in: its tokens from %s take %d bytes, more than the %d mcpcaged keeps of one sign-in", shown(g.Issuer), len(b), maxGrantBytes)
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
	if resp, err := noRedirects(hc).Do(req); err == nil {
		_ = resp.Body.Close()
	}
}

// RemoveServer forgets every grant of uid for server (all agents), and
// revokes them where the authorization server offers it: a server a
// user removes takes its sign-ins along, so a server given that name
// later never receives them.
func (m *Manager) RemoveServer(ctx context.Context, hc *http.Client, uid uint32, server string) error {
	infos, err := m.List(uid, false)
	if err != nil {
		return err
	}
	for _, i := range infos {
		if i.Server == server {
			if _, err := m.Remove(ctx, hc, uid, server, i.Agent); err != nil {
				return err
			}
		}
	}
	return nil
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
// With agent set (the agent has scopes of its own for the server:
// wantScopes), the session uses the agent's own sign-in, or else a token
// exchanged from the user's for one narrowed to the agent (RFC 8693),
// never the user's broader token itself. who describes the agent in
// actor tokens.
// serverURL is the server's url now: a grant made for another url (the
// name was given to another server since) is not used.
func (m *Manager) Authorizer(uid uint32, server, serverURL, agent string, wantScopes []string, who ActorClaims, hc *http.Client) *Authorizer {
	return &Authorizer{m: m, uid: uid, server: server, url: serverURL, agent: agent, want: wantScopes, who: who, hc: hc}
}

// Authorizer implements remote.Authorizer for one session.
type Authorizer struct {
	m      *Manager
	uid    uint32
	server string
	url    string
	agent  string
	want   []string
	who    ActorClaims
	hc     *http.Client

	mu    sync.Mutex
	via   Via  // how the last token was obtained
	moved bool // a grant was found for another url of the server
}

// load returns the grant of agent ("" = the user's) for this server's
// url; nil when there is none, or it was made for another url.
func (a *Authorizer) load(agent string) (*Grant, error) {
	g, err := a.m.load(a.uid, a.server, agent)
	if err != nil || g == nil {
		return nil, err
	}
	if g.ServerURL != a.url {
		a.mu.Lock()
		a.moved = true
		a.mu.Unlock()
		return nil, nil
	}
	return g, nil
}

// Via says which credential a session's requests carry.
type Via string

// Credentials a session uses.
const (
	ViaNone      Via = ""               // no sign-in yet
	ViaUser      Via = "user-signin"    // the user's own sign-in
	ViaAgent     Via = "agent-signin"   // the agent's own sign-in (mcpcage login --agent)
	ViaExchanged Via = "token-exchange" // the user's token exchanged for one narrowed to the agent
)

// Used reports how the last token was obtained and what may be shown of
// the grant behind it (nil when none).
func (a *Authorizer) Used() (Via, *Info) {
	a.mu.Lock()
	via := a.via
	a.mu.Unlock()
	agent := a.agent
	if via == ViaExchanged || via == ViaUser || (via == ViaNone && agent == "") {
		agent = ""
	}
	g, err := a.load(agent)
	if err != nil || g == nil {
		return via, nil
	}
	i := g.Info()
	if via == ViaExchanged {
		a.m.mu.Lock()
		if x := a.m.xs[key(a.uid, a.server, a.agent)]; x != nil {
			i.Scopes, i.Subject, i.Expiry = x.scopes, orString(x.subject, i.Subject), x.expiry
		}
		a.m.mu.Unlock()
		i.Agent = a.agent
	}
	return via, &i
}

// Planned says which credential the session's requests will carry, and
// what may be shown of the grant behind it, before any was used.
func (a *Authorizer) Planned() (Via, *Info) {
	via := ViaNone
	if a.agent != "" {
		if g, err := a.load(a.agent); err == nil && g != nil {
			via = ViaAgent
		} else if ug, err := a.load(""); err == nil && ug != nil && ug.TokenExchange && a.m.actor != nil {
			via = ViaExchanged
		}
	} else if g, err := a.load(""); err == nil && g != nil {
		via = ViaUser
	}
	a.used(via)
	return a.Used()
}

func orString(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func (a *Authorizer) used(v Via) {
	a.mu.Lock()
	a.via = v
	a.mu.Unlock()
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
	return a.token(ctx, "", false)
}

// Renew refreshes after the server refused refused (401).
func (a *Authorizer) Renew(ctx context.Context, refused string) (string, error) {
	tok, err := a.token(ctx, refused, true)
	if err == nil && tok == "" {
		a.mu.Lock()
		moved := a.moved
		a.mu.Unlock()
		if moved {
			return "", a.signIn(" again: your sign-in was made for another url of " + a.server + " (its url changed since)")
		}
		if a.agent != "" {
			return "", a.signIn(" for agent " + a.agent + " (the agent has scopes of its own for this server, and its authorization server offers no token exchange from your sign-in)")
		}
		return "", a.signIn("")
	}
	return tok, err
}

func (a *Authorizer) token(ctx context.Context, refused string, renew bool) (string, error) {
	if a.agent == "" {
		tok, err := a.own(ctx, "", refused, renew)
		if tok != "" {
			a.used(ViaUser)
		}
		return tok, err
	}
	g, err := a.load(a.agent)
	if err != nil {
		return "", err
	}
	if g != nil {
		for _, s := range g.Scopes {
			if !slices.Contains(a.want, s) {
				return "", a.signIn(fmt.Sprintf(" again: the sign-in holds scope %q, which agent %s may no longer use", s, a.agent))
			}
		}
		tok, err := a.own(ctx, a.agent, refused, renew)
		if tok != "" {
			a.used(ViaAgent)
		}
		return tok, err
	}
	tok, err := a.exchanged(ctx, refused, renew)
	if tok != "" {
		a.used(ViaExchanged)
	}
	return tok, err
}

// own returns the token of a stored grant (the user's, or the agent's),
// refreshed ahead of expiry, or after the server refused it.
func (a *Authorizer) own(ctx context.Context, agent, refused string, renew bool) (string, error) {
	g, err := a.load(agent)
	if err != nil || g == nil {
		return "", err
	}
	if !renew && (g.Expiry.IsZero() || time.Until(g.Expiry) > refreshAhead(g)) {
		return g.AccessToken, nil
	}
	l := a.m.lock(key(a.uid, a.server, agent))
	l.Lock()
	defer l.Unlock()
	if g, err = a.load(agent); err != nil || g == nil {
		return "", err
	}
	fresh := g.Expiry.IsZero() || time.Until(g.Expiry) > refreshAhead(g)
	if fresh && (!renew || g.AccessToken != refused) {
		return g.AccessToken, nil // another session refreshed it meanwhile
	}
	if g.RefreshToken == "" {
		return "", a.signIn(" again: the sign-in expired")
	}
	if err := refresh(ctx, a.hc, g); err != nil {
		if errors.Is(err, ErrRefreshRefused) {
			return "", a.signIn(" again: the authorization server refused to refresh the sign-in (revoked or expired)")
		}
		if !renew && time.Now().Before(g.Expiry) {
			return g.AccessToken, nil // still valid: refresh again next time
		}
		return "", err
	}
	if err := a.m.save(g); err != nil {
		return "", err
	}
	return g.AccessToken, nil
}

// exchanged returns a token narrowed to the agent, exchanged from the
// user's; "" when the user has not signed in or exchange is unavailable.
func (a *Authorizer) exchanged(ctx context.Context, refused string, renew bool) (string, error) {
	k := key(a.uid, a.server, a.agent)
	ug, err := a.load("")
	if err != nil || ug == nil || !ug.TokenExchange || a.m.actor == nil || len(a.want) == 0 {
		return "", err
	}
	// A narrowed token serves only the sign-in it was made from, for the
	// scopes the agent has now (a new sign-in, a logout or a reload that
	// narrows the agent make a new one).
	a.m.mu.Lock()
	x := a.m.xs[k]
	a.m.mu.Unlock()
	if x != nil && x.grant == ug.ID && slices.Equal(x.want, a.want) && !(renew && x.token == refused) && time.Until(x.expiry) > aheadOf(x.issued, x.expiry) {
		return x.token, nil
	}
	l := a.m.lock(k + "#x")
	l.Lock()
	defer l.Unlock()
	var user string
	for attempt := 0; ; attempt++ {
		user, err = a.own(ctx, "", user, attempt > 0)
		if err != nil || user == "" {
			return "", err
		}
		if ug, err = a.load(""); err != nil || ug == nil {
			return "", err
		}
		who := a.who
		who.Agent = a.agent
		act, err := a.m.actor.Token(who, ug.Issuer)
		if err != nil {
			return "", err
		}
		x, err = exchange(ctx, a.hc, ug, act, a.want)
		if err == nil {
			for _, s := range x.scopes {
				if !slices.Contains(a.want, s) {
					return "", fmt.Errorf("the authorization server of %s issued agent %s scope %q beyond the %s it asked for: the token is not used", a.server, a.agent, s, strings.Join(a.want, " "))
				}
			}
			x.grant, x.want = ug.ID, slices.Clone(a.want)
		}
		if errors.Is(err, ErrRefreshRefused) && attempt == 0 {
			continue // the user's token may have expired upstream: refresh it once
		}
		if errors.Is(err, ErrRefreshRefused) {
			return "", a.signIn(fmt.Sprintf(" again: the authorization server refused to narrow your sign-in to agent %s (%v)", a.agent, err))
		}
		if err != nil {
			return "", err
		}
		a.m.mu.Lock()
		a.m.xs[k] = x
		a.m.mu.Unlock()
		return x.token, nil
	}
}

func aheadOf(issued, exp time.Time) time.Duration {
	return refreshAhead(&Grant{Obtained: issued, Expiry: exp})
}

func randomString() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
