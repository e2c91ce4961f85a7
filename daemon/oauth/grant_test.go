package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestTokenRequestsAreBounded: an authorization server that answers a
// token request with its headers and then trickles the body must not
// hold the request (and the grant's lock behind it) past the bound, and
// the error says what happened.
func TestTokenRequestsAreBounded(t *testing.T) {
	defer func(d time.Duration) { tokenRequestTimeout = d }(tokenRequestTimeout)
	tokenRequestTimeout = 200 * time.Millisecond
	stalling := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"`))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}))
	defer stalling.Close()
	g := &Grant{TokenURL: stalling.URL + "/token", Client: Client{ID: "c"}}
	done := make(chan error, 1)
	go func() {
		_, err := postToken(context.Background(), stalling.Client(), g, url.Values{"grant_type": {"refresh_token"}}, "refreshing the sign-in")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "reading the answer") {
			t.Fatalf("postToken = %v, want an error reading the stalled answer", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("postToken still waits on an answer that never ends")
	}
}

// TestCredentialRequestsFollowNoRedirect: a token, registration or
// revocation request carries credentials in its body, which a 307 would
// have sent on to another origin (found by a red-team helper): none of
// them follows a redirect, and the error says why.
func TestCredentialRequestsFollowNoRedirect(t *testing.T) {
	var otherHits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		writeDoc(w, http.StatusOK, map[string]any{"access_token": "at", "token_type": "Bearer", "client_id": "c"})
	}))
	defer other.Close()
	var redirects atomic.Int32
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	const refused = "follows no redirect of a token, registration or revocation request"
	tests := []struct {
		name    string
		do      func(ctx context.Context, hc *http.Client, base string) error
		wantErr bool // revocation is best effort: no error
	}{
		{name: "refresh", wantErr: true, do: func(ctx context.Context, hc *http.Client, base string) error {
			return refresh(ctx, hc, &Grant{TokenURL: base + "/token", Client: Client{ID: "c"}, RefreshToken: "rt-secret"})
		}},
		{name: "code exchange", wantErr: true, do: func(ctx context.Context, hc *http.Client, base string) error {
			m, _ := newManager(t)
			m.pending["state"] = &pendingLogin{req: LoginRequest{UID: 1000, RedirectURI: redirect, Target: Target{Server: "demo", URL: mustURL(t, base+"/mcp"), HTTP: hc}},
				res: &Resource{TokenURL: base + "/token", AuthURL: base + "/authorize"}, client: &Client{ID: "c"}, verifier: "verifier", expires: time.Now().Add(time.Minute)}
			_, err := m.Finish(ctx, 1000, "state", Answer{Code: "code-secret", IssuerUnknown: true})
			return err
		}},
		{name: "registration", wantErr: true, do: func(ctx context.Context, hc *http.Client, base string) error {
			_, err := Register(ctx, hc, &Resource{Issuer: base, RegistrationURL: base + "/register"}, redirect, nil)
			return err
		}},
		{name: "revocation", do: func(ctx context.Context, hc *http.Client, base string) error {
			revoke(ctx, hc, &Grant{Revoke: base + "/revoke", Client: Client{ID: "c"}}, "rt-secret", "refresh_token")
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeOther := redirects.Load(), otherHits.Load()
			err := tt.do(context.Background(), testHTTP(t), redirector.URL)
			switch {
			case tt.wantErr && err == nil:
				t.Error("the request succeeded through the redirect")
			case tt.wantErr && !strings.Contains(err.Error(), refused):
				t.Errorf("error %q does not say %q", err, refused)
			case !tt.wantErr && err != nil:
				t.Errorf("error %v", err)
			}
			if redirects.Load() == before {
				t.Error("the request did not reach the redirecting endpoint")
			}
			if n := otherHits.Load() - beforeOther; n != 0 {
				t.Errorf("the redirect's target got %d requests, want none", n)
			}
		})
	}
}
