package oauth

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var cryptoSHA256 = crypto.SHA256

// RFC 8693 names.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

// exchanged is a token narrowed to an agent (kept in memory only: it is
// made again from the user's sign-in when it nears its expiry).
type exchanged struct {
	token   string
	expiry  time.Time // at most exchangedLife after issued
	issued  time.Time
	scopes  []string // what the token holds
	subject string
	grant   string   // the ID of the user's grant it was made from
	want    []string // the agent's scopes it was asked for
}

// exchangedLife bounds how long a narrowed token is used, whatever its
// expires_in says (or when it says nothing).
const exchangedLife = 10 * time.Minute

// exchange trades the user's access token for one narrowed to scopes,
// with the agent as actor (RFC 8693 §2.1).
func exchange(ctx context.Context, hc *http.Client, g *Grant, actorToken string, scopes []string) (*exchanged, error) {
	form := url.Values{"grant_type": {grantTokenExchange}, "subject_token": {g.AccessToken}, "subject_token_type": {tokenTypeAccess},
		"actor_token": {actorToken}, "actor_token_type": {tokenTypeJWT}, "resource": {g.Resource},
		"requested_token_type": {tokenTypeAccess}}
	if len(scopes) > 0 {
		form.Set("scope", joinScopes(scopes))
	}
	t, err := postToken(ctx, hc, g, form, "token exchange")
	if err != nil {
		return nil, err
	}
	if t.TokenType != "" && !strings.EqualFold(t.TokenType, "bearer") && !strings.EqualFold(t.TokenType, "N_A") {
		return nil, fmt.Errorf("token exchange at %s: token type %q is not bearer", hostOf(g.TokenURL), t.TokenType)
	}
	now := time.Now()
	exp := expiry(t.ExpiresIn)
	if exp.IsZero() || exp.After(now.Add(exchangedLife)) {
		exp = now.Add(exchangedLife)
	}
	x := &exchanged{token: t.AccessToken, expiry: exp, issued: now, scopes: scopes, subject: subjectOf(t.AccessToken)}
	if t.Scope != "" {
		x.scopes = strings.Fields(t.Scope)
	}
	return x, nil
}
