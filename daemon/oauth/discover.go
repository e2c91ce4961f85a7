package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/remote"
)

// Resource is what discovery learned about a protected MCP server.
type Resource struct {
	Resource        string   `json:"resource"` // the RFC 8707 resource indicator
	Issuer          string   `json:"issuer"`   // the authorization server
	AuthURL         string   `json:"authorization_endpoint"`
	TokenURL        string   `json:"token_endpoint"`
	RegistrationURL string   `json:"registration_endpoint,omitempty"`
	RevocationURL   string   `json:"revocation_endpoint,omitempty"`
	ScopesSupported []string `json:"scopes_supported,omitempty"`
	// ChallengeScope is the scope the 401 asked for, if any.
	ChallengeScope string `json:"challenge_scope,omitempty"`
	// AuthMethods are the token endpoint's client authentication methods.
	AuthMethods []string `json:"token_endpoint_auth_methods,omitempty"`
	// TokenExchange: the authorization server offers RFC 8693.
	TokenExchange bool `json:"token_exchange,omitempty"`
	// IssuerInAnswers: the authorization server names itself (iss) in
	// every answer to an authorization request (RFC 9207).
	IssuerInAnswers bool `json:"authorization_response_iss_parameter_supported,omitempty"`
}

// ErrNoAuth says the server answered without asking for a token.
var ErrNoAuth = errors.New("the server does not ask for a sign-in")

// maxMetadata bounds a metadata document.
const maxMetadata = 256 << 10

// Discover asks the server for a token-less answer and follows its 401 to
// the protected-resource and authorization-server metadata.
func Discover(ctx context.Context, hc *http.Client, server *url.URL) (*Resource, error) {
	body := []byte(`{"jsonrpc":"2.0","id":"mcpcage-discovery","method":"ping"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking %s: %w", server.Host, redactedErr(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("asking %s: it answered %s; try again later", server.Host, resp.Status)
	case resp.StatusCode != http.StatusUnauthorized:
		return nil, ErrNoAuth
	}
	ch := remote.ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	var prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	}
	var candidates []string
	if u := ch.Params["resource_metadata"]; u != "" {
		candidates = append(candidates, u)
	} else {
		candidates = wellKnown(server, "oauth-protected-resource", true)
	}
	from, err := fetchFirst(ctx, hc, candidates, &prm)
	if err != nil {
		return nil, fmt.Errorf("protected resource metadata of %s: %w", server.Host, err)
	}
	if prm.Resource == "" || !coversURL(prm.Resource, server) {
		return nil, fmt.Errorf("protected resource metadata at %s names resource %q, which is not %s", from, shownURL(prm.Resource), config.RedactURL(server))
	}
	if len(prm.AuthorizationServers) == 0 {
		return nil, fmt.Errorf("protected resource metadata at %s names no authorization server", from)
	}
	issuer, err := url.Parse(prm.AuthorizationServers[0])
	if err != nil || issuer.Host == "" {
		return nil, fmt.Errorf("protected resource metadata at %s names an invalid authorization server %q", from, prm.AuthorizationServers[0])
	}
	var as struct {
		Issuer                string   `json:"issuer"`
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		TokenEndpoint         string   `json:"token_endpoint"`
		RegistrationEndpoint  string   `json:"registration_endpoint"`
		RevocationEndpoint    string   `json:"revocation_endpoint"`
		ScopesSupported       []string `json:"scopes_supported"`
		CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
		AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
		GrantTypes            []string `json:"grant_types_supported"`
		IssuerInAnswers       bool     `json:"authorization_response_iss_parameter_supported"`
	}
	cands := append(wellKnown(issuer, "oauth-authorization-server", false), wellKnown(issuer, "openid-configuration", false)...)
	if p := strings.TrimSuffix(issuer.Path, "/"); p != "" {
		cands = append(cands, issuer.Scheme+"://"+issuer.Host+p+"/.well-known/openid-configuration")
	}
	from, err = fetchFirst(ctx, hc, cands, &as)
	if err != nil {
		return nil, fmt.Errorf("authorization server metadata of %s: %w", issuer.Host, err)
	}
	if strings.TrimSuffix(as.Issuer, "/") != strings.TrimSuffix(issuer.String(), "/") {
		return nil, fmt.Errorf("authorization server metadata at %s names issuer %q, not %q", from, as.Issuer, issuer)
	}
	if !slices.Contains(as.CodeChallengeMethods, "S256") {
		return nil, fmt.Errorf("authorization server %s does not offer PKCE with S256 (code_challenge_methods_supported), which MCP requires: mcpcage will not sign in there", issuer.Host)
	}
	for _, e := range []struct{ name, v string }{{"authorization_endpoint", as.AuthorizationEndpoint}, {"token_endpoint", as.TokenEndpoint}} {
		if e.v == "" {
			return nil, fmt.Errorf("authorization server metadata at %s has no %s", from, e.name)
		}
	}
	for _, e := range []string{as.AuthorizationEndpoint, as.TokenEndpoint, as.RegistrationEndpoint, as.RevocationEndpoint} {
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		if err != nil {
			return nil, fmt.Errorf("authorization server metadata at %s: %w", from, err)
		}
		if err := remote.CheckScheme(u); err != nil {
			return nil, fmt.Errorf("authorization server metadata at %s: %w", from, err)
		}
	}
	scopes := prm.ScopesSupported
	if len(scopes) == 0 {
		scopes = as.ScopesSupported
	}
	return &Resource{Resource: prm.Resource, Issuer: as.Issuer, AuthURL: as.AuthorizationEndpoint, TokenURL: as.TokenEndpoint,
		RegistrationURL: as.RegistrationEndpoint, RevocationURL: as.RevocationEndpoint, ScopesSupported: scopes,
		ChallengeScope: ch.Params["scope"], AuthMethods: as.AuthMethods, TokenExchange: slices.Contains(as.GrantTypes, grantTokenExchange),
		IssuerInAnswers: as.IssuerInAnswers}, nil
}

// wellKnown lists the well-known URLs of doc for u: with u's path
// inserted after the well-known segment, then (for resources) at the root.
func wellKnown(u *url.URL, doc string, root bool) []string {
	base := u.Scheme + "://" + u.Host + "/.well-known/" + doc
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	var out []string
	if p != "" {
		out = append(out, base+p)
	}
	if root || p == "" {
		out = append(out, base)
	}
	return out
}

// coversURL reports whether resource names the server: same origin, and
// the server's path within the resource's.
func coversURL(resource string, server *url.URL) bool {
	r, err := url.Parse(resource)
	if err != nil {
		return false
	}
	if !strings.EqualFold(r.Scheme, server.Scheme) || !strings.EqualFold(r.Host, server.Host) {
		return false
	}
	rp := strings.TrimSuffix(r.Path, "/")
	return rp == "" || server.Path == rp || strings.HasPrefix(server.Path, rp+"/") || strings.TrimSuffix(server.Path, "/") == rp
}

// fetchFirst GETs each candidate until one answers 200 with JSON that
// decodes into v; it returns the URL that did, as errors show it
// (config.RedactURL: a candidate holds the server's path, which may hold
// a credential, and errors reach the user and the audit log).
func fetchFirst(ctx context.Context, hc *http.Client, candidates []string, v any) (string, error) {
	var errs []error
	for _, c := range candidates {
		u, err := url.Parse(c)
		if err != nil {
			errs = append(errs, errors.New("resource_metadata is not a url"))
			continue
		}
		shown := config.RedactURL(u)
		if err := remote.CheckScheme(u); err != nil {
			errs = append(errs, err)
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", shown, redactedErr(err)))
			continue
		}
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			errs = append(errs, redactedErr(err))
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadata))
		_ = resp.Body.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", shown, redactedErr(err)))
			continue
		}
		if resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Errorf("%s answered %s", shown, resp.Status))
			continue
		}
		if err := json.Unmarshal(b, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: not JSON metadata: %w", shown, err))
			continue
		}
		return shown, nil
	}
	return "", errors.Join(errs...)
}

// shownURL is s as errors show it (config.RedactURL): a resource
// indicator is usually the server's url.
func shownURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(not a url)"
	}
	return config.RedactURL(u)
}

// redactedErr is err with the url an *url.Error quotes (the request's,
// or the last redirect's) as config.RedactURL shows it.
func redactedErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = shownURL(ue.URL)
	}
	return err
}
