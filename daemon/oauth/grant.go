package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/mcpcage/mcpcage/api"
)

// Grant is one user's sign-in to one server, for one agent or for all
// the user's agents (Agent ""). It holds the tokens: it never leaves the
// daemon (see Info for what may).
type Grant struct {
	ID  string `json:"id"` // names the sign-in in audit records
	UID uint32 `json:"uid"`
	// Account is the uid whose bounds the grant counts toward when it is
	// not UID: its owner, for a subordinate uid (LoginRequest.Account).
	Account   uint32 `json:"account,omitempty"`
	User      string `json:"user"`
	Server    string `json:"server"`
	ServerURL string `json:"server_url"` // the url it was made for: used for no other
	Agent     string `json:"agent,omitempty"`
	Issuer    string `json:"issuer"`
	Resource  string `json:"resource"`
	TokenURL  string `json:"token_url"`
	Revoke    string `json:"revocation_url,omitempty"`
	// TokenExchange: the authorization server offers RFC 8693, so agents
	// with scopes of their own get tokens narrowed from this one.
	TokenExchange bool      `json:"token_exchange,omitempty"`
	Client        Client    `json:"client"`
	Scopes        []string  `json:"scopes,omitempty"`
	Subject       string    `json:"subject,omitempty"`
	Obtained      time.Time `json:"obtained"`
	Refreshed     time.Time `json:"refreshed,omitzero"`

	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

// account is the uid g counts toward.
func (g *Grant) account() uint32 {
	if g.Account != 0 {
		return g.Account
	}
	return g.UID
}

// Info is what may be shown of a grant: no token (the API's sign-in).
type Info = api.SignIn

// Info returns what may be shown of g.
func (g *Grant) Info() Info {
	return Info{ID: g.ID, User: g.User, Server: g.Server, Agent: g.Agent, Issuer: g.Issuer, Scopes: g.Scopes,
		Subject: g.Subject, Obtained: g.Obtained, Expiry: g.Expiry, Refreshable: g.RefreshToken != ""}
}

// tokenAnswer is a token endpoint's answer (RFC 6749 §5.1).
type tokenAnswer struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	RefreshToken string          `json:"refresh_token"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
	Scope        string          `json:"scope"`
}

// ErrRefreshRefused says the authorization server refused the refresh
// token (revoked, expired): the user must sign in again.
var ErrRefreshRefused = errors.New("refresh refused")

// refresh trades g's refresh token for new tokens; the request carries
// the resource indicator (RFC 8707 §2.2).
func refresh(ctx context.Context, hc *http.Client, g *Grant) error {
	t, err := postToken(ctx, hc, g, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}, "resource": {g.Resource}}, "refreshing the sign-in")
	if err != nil {
		return err
	}
	if t.TokenType != "" && !strings.EqualFold(t.TokenType, "bearer") {
		return fmt.Errorf("refreshing the sign-in at %s: token type %q is not bearer", hostOf(g.TokenURL), t.TokenType)
	}
	g.AccessToken = t.AccessToken
	if t.RefreshToken != "" {
		g.RefreshToken = t.RefreshToken // rotated
	}
	g.Expiry = expiry(t.ExpiresIn)
	if t.Scope != "" {
		g.Scopes = strings.Fields(t.Scope)
	}
	g.Refreshed = time.Now()
	return nil
}

// tokenRequestTimeout bounds one token request, its answer's body too: a
// refresh holds its grant's lock, which every session of the grant (and
// mcpcage logout) waits for, so an authorization server that sends its
// headers and then trickles the body must not hold them all.
var tokenRequestTimeout = 30 * time.Second

// postToken sends a token request for g's client (a public client names
// itself in the form, a confidential one authenticates with HTTP Basic)
// and reads the answer; a 400 or 401 wraps ErrRefreshRefused. what says
// what the request does, for errors.
func postToken(ctx context.Context, hc *http.Client, g *Grant, form url.Values, what string) (*tokenAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenRequestTimeout)
	defer cancel()
	if g.Client.Secret == "" {
		form.Set("client_id", g.Client.ID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if g.Client.Secret != "" {
		req.SetBasicAuth(url.QueryEscape(g.Client.ID), url.QueryEscape(g.Client.Secret))
	}
	resp, err := noRedirects(hc).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", what, req.URL.Host, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadata))
	if err != nil {
		return nil, fmt.Errorf("%s at %s: reading the answer: %w", what, req.URL.Host, err)
	}
	if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("%w: %s: %s%s", ErrRefreshRefused, what, resp.Status, oauthError(b))
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s at %s: %s%s", what, req.URL.Host, resp.Status, oauthError(b))
	}
	var t tokenAnswer
	if err := json.Unmarshal(b, &t); err != nil || t.AccessToken == "" {
		return nil, fmt.Errorf("%s at %s: no access_token in the answer", what, req.URL.Host)
	}
	return &t, nil
}

// noRedirects is hc following no redirect. Token, registration and
// revocation requests carry credentials in their body (a refresh token,
// a code and its verifier, the token to revoke), which a 307 or 308
// would send again to wherever it points, another origin too.
func noRedirects(hc *http.Client) *http.Client {
	var c http.Client
	if hc != nil {
		c = *hc
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		return fmt.Errorf("%s redirected the request to %s: mcpcage follows no redirect of a token, registration or revocation request (they carry credentials); "+
			"the authorization server's metadata must name the endpoint itself", via[0].URL.Host, req.URL.Host)
	}
	return &c
}

func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Host
	}
	return u
}

// expiry turns expires_in (a number, sometimes a string) into a time;
// zero when absent.
func expiry(raw json.RawMessage) time.Time {
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(n) * time.Second)
}

// subjectOf reads the sub claim of a JWT access token (unverified: shown
// and recorded as the upstream identity, never trusted for a decision);
// "" for opaque tokens.
func subjectOf(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &c) != nil || len(c.Sub) > 256 {
		return ""
	}
	return c.Sub
}

func joinScopes(s []string) string { return strings.Join(s, " ") }

// grantedScopes are the scopes tok was granted, as the token answer says
// (its scope), else as the token itself says when it is a JWT (scope, or
// scp as a list or a string); known is false when neither says.
func grantedScopes(tok *oauth2.Token) (scopes []string, known bool) {
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		return strings.Fields(s), true
	}
	parts := strings.Split(tok.AccessToken, ".")
	if len(parts) != 3 || len(parts[1]) > maxClaimsText {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, false
	}
	var c struct {
		Scope string          `json:"scope"`
		Scp   json.RawMessage `json:"scp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return nil, false
	}
	if c.Scope != "" {
		return strings.Fields(c.Scope), true
	}
	var list []string
	if json.Unmarshal(c.Scp, &list) == nil && len(list) > 0 {
		return list, true
	}
	var one string
	if json.Unmarshal(c.Scp, &one) == nil && one != "" {
		return strings.Fields(one), true
	}
	return nil, false
}

// maxClaimsText bounds the claims of a token read for its scopes.
const maxClaimsText = 64 << 10

// refreshAhead is how long before expiry a token is refreshed: a tenth of
// its life, at least 30 s and at most 5 min, and never more than half of
// it.
func refreshAhead(g *Grant) time.Duration {
	start := g.Obtained
	if !g.Refreshed.IsZero() {
		start = g.Refreshed
	}
	life := g.Expiry.Sub(start)
	return min(max(life/10, 30*time.Second), 5*time.Minute, life/2)
}
