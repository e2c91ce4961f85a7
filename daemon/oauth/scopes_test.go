package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// An agent held to scopes keeps a sign-in only when the scopes it was
// granted are known. Found by a red-team helper: the agent's client is
// given the authorization link in-band and can widen its scope; an
// authorization server that then leaves scope out of its token answer
// (RFC 6749 §5.1 allows it when it is what was asked) left a grant that
// said "read" and a token that held admin.
func TestAgentSignInNeedsTheGrantedScopes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(m map[string]any) // the token answer, rewritten
		wantErr   string
		wantToken bool
	}{
		{"scope left out", func(m map[string]any) { delete(m, "scope") }, "did not say which scopes it granted", false},
		{"the widened scope said", func(m map[string]any) { m["scope"] = "read write admin" }, "", false},
		{"the scope asked for said", func(m map[string]any) { m["scope"] = "read" }, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAuthServer(t)
			s.as.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/token" {
					s.serveAS(w, r)
					return
				}
				rec := httptest.NewRecorder()
				s.serveAS(rec, r)
				var m map[string]any
				_ = json.Unmarshal(rec.Body.Bytes(), &m)
				tc.answer(m)
				writeDoc(w, rec.Code, m)
			})
			m, _ := newManager(t)
			ctx := context.Background()
			tg := s.target(t)
			tg.Scopes = []string{"read"} // [agents.claude] scopes = { demo = ["read"] }
			authURL, state, err := m.Begin(ctx, LoginRequest{UID: 1000, User: "alice", Agent: "claude", RedirectURI: redirect, Target: tg})
			if err != nil {
				t.Fatal(err)
			}
			u := mustURL(t, authURL) // the agent widens the link before the browser opens it
			q := u.Query()
			q.Set("scope", "read write admin")
			u.RawQuery = q.Encode()
			code, _ := authorize(t, u.String())
			_, err = m.Finish(ctx, 1000, state, Answer{Code: code, IssuerUnknown: true})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Finish = %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := m.Authorizer(1000, "demo", s.resource(), "claude", []string{"read"}, ActorClaims{}, testHTTP(t))
			tok, err := a.Token(ctx)
			if got := err == nil && tok != ""; got != tc.wantToken {
				t.Fatalf("agent claude (scopes [read]) gets a token: %v (err %v), want %v", got, err, tc.wantToken)
			}
		})
	}
}

func TestGrantedScopes(t *testing.T) {
	jwt := func(claims string) string {
		return "h." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".s"
	}
	for _, tc := range []struct {
		name  string
		tok   *oauth2.Token
		want  string
		known bool
	}{
		{"the answer's scope", (&oauth2.Token{AccessToken: "opaque"}).WithExtra(map[string]any{"scope": "a b"}), "a b", true},
		{"an opaque token, no scope", &oauth2.Token{AccessToken: "opaque"}, "", false},
		{"a JWT's scope", &oauth2.Token{AccessToken: jwt(`{"scope":"a b"}`)}, "a b", true},
		{"a JWT's scp list", &oauth2.Token{AccessToken: jwt(`{"scp":["a","b"]}`)}, "a b", true},
		{"a JWT's scp string", &oauth2.Token{AccessToken: jwt(`{"scp":"a b"}`)}, "a b", true},
		{"a JWT without either", &oauth2.Token{AccessToken: jwt(`{"sub":"alice"}`)}, "", false},
	} {
		got, known := grantedScopes(tc.tok)
		if strings.Join(got, " ") != tc.want || known != tc.known {
			t.Errorf("%s: grantedScopes = %v, %v; want %q, %v", tc.name, got, known, tc.want, tc.known)
		}
	}
}
