package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Client is an OAuth client registration.
type Client struct {
	ID           string   `json:"client_id"`
	Secret       string   `json:"client_secret,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	Registered   bool     `json:"registered"` // by dynamic registration (else configured)
}

// maxRegistration bounds a registration's answer: a client's metadata,
// of which mcpcage keeps the id and the secret.
const maxRegistration = 16 << 10

// Register registers mcpcage as a public client with redirectURI (RFC
// 7591). The client returned holds what sign-ins use: its id, its secret
// (if the server gave one) and redirectURI.
func Register(ctx context.Context, hc *http.Client, r *Resource, redirectURI string, scopes []string) (*Client, error) {
	if r.RegistrationURL == "" {
		return nil, fmt.Errorf("authorization server %s offers no dynamic client registration: set client_id in the server's config", r.Issuer)
	}
	meta := map[string]any{
		"client_name":                "mcpcage",
		"redirect_uris":              []string{redirectURI},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
	if len(scopes) > 0 {
		meta["scope"] = joinScopes(scopes)
	}
	body, _ := json.Marshal(meta)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.RegistrationURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := noRedirects(hc).Do(req)
	if err != nil {
		return nil, fmt.Errorf("client registration at %s: %w", r.RegistrationURL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistration+1))
	if err != nil {
		return nil, fmt.Errorf("client registration at %s: reading the answer: %w", r.RegistrationURL, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("client registration at %s: %s%s", r.RegistrationURL, resp.Status, oauthError(b))
	}
	if len(b) > maxRegistration {
		return nil, fmt.Errorf("client registration at %s: the answer is larger than %d KiB, which no registration needs: refused; "+
			"have the administrator configure a client_id for the server instead", r.RegistrationURL, maxRegistration>>10)
	}
	var c Client
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" {
		return nil, fmt.Errorf("client registration at %s: no client_id in the answer", r.RegistrationURL)
	}
	return &Client{ID: c.ID, Secret: c.Secret, RedirectURIs: []string{redirectURI}, Registered: true}, nil
}

// oauthError renders an RFC 6749 error body as ": error (description)".
func oauthError(b []byte) string {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		return ""
	}
	if e.Description != "" {
		return fmt.Sprintf(": %s (%s)", e.Error, e.Description)
	}
	return ": " + e.Error
}
