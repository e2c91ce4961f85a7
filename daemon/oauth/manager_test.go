package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/internal/authanswer"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// redirect is the loopback redirect of the test sign-ins (nothing
// listens: the tests read the authorization server's redirect).
const redirect = "http://127.0.0.1:43210/callback"

// accessToken is a JWT-shaped access token whose subject is sub (the
// signature is not checked by mcpcage, which only shows the subject).
func accessToken(sub string, n int) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(fmt.Sprintf(`{"sub":%q,"n":%d}`, sub, n))) + ".sig"
}

// authCode is what the test authorization server remembers of a code.
type authCode struct {
	clientID, redirect, challenge, resource, scope, state string
}

// exchangeSeen is what the token endpoint verified of an actor token.
type exchangeSeen struct {
	form   url.Values
	claims jwt.Claims
	exe    string
}

// authServer is an MCP server that asks for a sign-in and its
// authorization server: registration (RFC 7591), the authorization
// endpoint, a token endpoint checking PKCE S256 and the resource
// indicator, refresh with optional rotation, token exchange (RFC 8693)
// verifying actor tokens with a JWKS, and revocation.
type authServer struct {
	t   *testing.T
	mcp *httptest.Server // the protected MCP server
	as  *httptest.Server // its authorization server

	mu            sync.Mutex
	registrations []map[string]any
	codes         map[string]authCode
	refresh       map[string]bool // refresh tokens still valid
	rotated       []string        // refresh tokens issued by rotation
	issued        int
	hits          map[string]int // token endpoint requests by grant_type
	forms         []url.Values   // token endpoint requests
	exchanges     []exchangeSeen
	revoked       []url.Values
	mcpHits       int

	// What a test sets.
	rotate          bool                // refresh issues a new refresh token
	refuseRefresh   bool                // refresh answers 400 invalid_grant
	failRefresh     bool                // refresh answers 500
	refuseExchange  bool                // token exchange answers 400 invalid_grant
	expiredUpstream string              // an access token the server no longer takes as a subject
	jwks            *jose.JSONWebKeySet // the actor keys trusted
	actorIssuer     string
	holdRefresh     chan struct{} // when set, a refresh is answered once it is closed
	refreshHeld     chan struct{} // closed when a refresh waits on holdRefresh
	mcpStatus       int           // the MCP server's answer without a token (0: 401)
	issuerInAnswers bool          // metadata: authorization_response_iss_parameter_supported (RFC 9207)
}

func newAuthServer(t *testing.T) *authServer {
	t.Helper()
	s := &authServer{t: t, codes: map[string]authCode{}, refresh: map[string]bool{}, hits: map[string]int{}}
	s.as = httptest.NewServer(http.HandlerFunc(s.serveAS))
	t.Cleanup(s.as.Close)
	s.mcp = httptest.NewServer(http.HandlerFunc(s.serveMCP))
	t.Cleanup(s.mcp.Close)
	return s
}

// resource is the MCP server's URL, its resource indicator.
func (s *authServer) resource() string { return s.mcp.URL + "/mcp" }

func (s *authServer) serveMCP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/oauth-protected-resource/mcp":
		writeDoc(w, http.StatusOK, map[string]any{"resource": s.resource(), "authorization_servers": []string{s.as.URL},
			"scopes_supported": []string{"read", "write"}})
	case "/mcp":
		s.mu.Lock()
		s.mcpHits++
		status := s.mcpStatus
		s.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata=%q, scope="read"`, s.mcp.URL+"/.well-known/oauth-protected-resource/mcp"))
		w.WriteHeader(http.StatusUnauthorized)
	default:
		http.NotFound(w, r)
	}
}

func writeDoc(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthErr(w http.ResponseWriter, code, why string) {
	writeDoc(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": why})
}

func (s *authServer) serveAS(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/oauth-authorization-server":
		writeDoc(w, http.StatusOK, map[string]any{"issuer": s.as.URL, "authorization_endpoint": s.as.URL + "/authorize",
			"token_endpoint": s.as.URL + "/token", "registration_endpoint": s.as.URL + "/register", "revocation_endpoint": s.as.URL + "/revoke",
			"code_challenge_methods_supported": []string{"S256"}, "token_endpoint_auth_methods_supported": []string{"none"},
			"grant_types_supported":                          []string{"authorization_code", "refresh_token", grantTokenExchange},
			"authorization_response_iss_parameter_supported": s.issuerInAnswers})
	case "/register":
		var meta map[string]any
		if err := json.NewDecoder(r.Body).Decode(&meta); err != nil {
			writeDoc(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata"})
			return
		}
		s.mu.Lock()
		s.registrations = append(s.registrations, meta)
		id := fmt.Sprintf("client-%d", len(s.registrations))
		s.mu.Unlock()
		writeDoc(w, http.StatusCreated, map[string]any{"client_id": id, "redirect_uris": meta["redirect_uris"]})
	case "/authorize":
		q := r.URL.Query()
		if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" {
			http.Error(w, "bad authorization request: "+q.Encode(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.issued++
		code := fmt.Sprintf("code-%d", s.issued)
		s.codes[code] = authCode{clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"),
			resource: q.Get("resource"), scope: q.Get("scope"), state: q.Get("state")}
		s.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"code": {code}, "state": {q.Get("state")}}.Encode(), http.StatusFound)
	case "/token":
		s.token(w, r)
	case "/revoke":
		_ = r.ParseForm()
		s.mu.Lock()
		s.revoked = append(s.revoked, r.PostForm)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func (s *authServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErr(w, "invalid_request", err.Error())
		return
	}
	f := r.PostForm
	s.mu.Lock()
	if hold := s.holdRefresh; hold != nil && f.Get("grant_type") == "refresh_token" {
		s.holdRefresh = nil // once
		close(s.refreshHeld)
		s.mu.Unlock()
		<-hold
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.hits[f.Get("grant_type")]++
	s.forms = append(s.forms, f)
	if f.Get("resource") != s.resource() {
		oauthErr(w, "invalid_target", "resource "+f.Get("resource"))
		return
	}
	s.issued++
	answer := map[string]any{"access_token": accessToken("alice", s.issued), "token_type": "Bearer", "expires_in": 3600}
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := s.codes[f.Get("code")]
		delete(s.codes, f.Get("code"))
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !ok:
			oauthErr(w, "invalid_grant", "unknown code")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			oauthErr(w, "invalid_grant", "PKCE verifier does not match the S256 challenge")
			return
		case f.Get("client_id") != c.clientID || f.Get("redirect_uri") != c.redirect || c.resource != s.resource():
			oauthErr(w, "invalid_grant", "client, redirect or resource differ from the authorization request")
			return
		}
		rt := fmt.Sprintf("rt-%d", s.issued)
		s.refresh[rt] = true
		answer["refresh_token"] = rt
		answer["scope"] = c.scope
	case "refresh_token":
		switch {
		case s.failRefresh:
			writeDoc(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
			return
		case s.refuseRefresh || !s.refresh[f.Get("refresh_token")]:
			oauthErr(w, "invalid_grant", "refresh token revoked")
			return
		}
		if s.rotate {
			delete(s.refresh, f.Get("refresh_token"))
			rt := fmt.Sprintf("rt-%d", s.issued)
			s.refresh[rt] = true
			s.rotated = append(s.rotated, rt)
			answer["refresh_token"] = rt
		}
	case grantTokenExchange:
		seen, err := s.verifyExchange(f)
		if err != nil {
			oauthErr(w, "invalid_grant", err.Error())
			return
		}
		s.exchanges = append(s.exchanges, seen)
		if s.refuseExchange || f.Get("subject_token") == s.expiredUpstream {
			oauthErr(w, "invalid_grant", "no delegation to that agent, or the subject token expired")
			return
		}
		answer = map[string]any{"access_token": fmt.Sprintf("xt-%d", s.issued), "token_type": "N_A",
			"issued_token_type": tokenTypeAccess, "expires_in": 600, "scope": f.Get("scope")}
	default:
		oauthErr(w, "unsupported_grant_type", f.Get("grant_type"))
		return
	}
	writeDoc(w, http.StatusOK, answer)
}

// verifyExchange checks an RFC 8693 request: the actor token's signature
// against the trusted key set, its claims, the token types.
func (s *authServer) verifyExchange(f url.Values) (exchangeSeen, error) {
	seen := exchangeSeen{form: f}
	if s.jwks == nil {
		return seen, errors.New("no actor keys trusted")
	}
	if f.Get("subject_token_type") != tokenTypeAccess || f.Get("actor_token_type") != tokenTypeJWT {
		return seen, errors.New("token types")
	}
	tok, err := jwt.ParseSigned(f.Get("actor_token"), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return seen, fmt.Errorf("actor token: %w", err)
	}
	var extra struct {
		Exe string `json:"mcpcage_exe"`
	}
	if err := tok.Claims(s.jwks, &seen.claims, &extra); err != nil {
		return seen, fmt.Errorf("actor token signature: %w", err)
	}
	if err := seen.claims.Validate(jwt.Expected{Issuer: s.actorIssuer, AnyAudience: jwt.Audience{s.as.URL}, Time: time.Now()}); err != nil {
		return seen, fmt.Errorf("actor token claims: %w", err)
	}
	seen.exe = extra.Exe
	return seen, nil
}

// snapshot returns what the server saw, under its lock.
func (s *authServer) snapshot(f func(s *authServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// newManager is a Manager keeping grants in a temporary store.
func newManager(t *testing.T) (*Manager, *secrets.Store) {
	t.Helper()
	store, err := secrets.Open(filepath.Join(t.TempDir(), "oauth"))
	if err != nil {
		t.Fatal(err)
	}
	return NewManager(store), store
}

func (s *authServer) target(t *testing.T) Target {
	return Target{Server: "demo", URL: mustURL(t, s.resource()), HTTP: testHTTP(t)}
}

// authorize plays the browser: it opens authURL and returns the code and
// state the authorization server redirects to redirect with.
func authorize(t *testing.T, authURL string) (code, state string) {
	t.Helper()
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(authURL)
	if err != nil {
		t.Fatalf("authorization request: %v", err)
	}
	_ = resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorization answer %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirect {
		t.Fatalf("redirected to %s, want %s", got, redirect)
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

func TestManagerSignIn(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	ctx := context.Background()

	authURL, state, err := m.Begin(ctx, LoginRequest{UID: 1000, User: "alice", RedirectURI: redirect, Target: s.target(t)})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	au := mustURL(t, authURL)
	q := au.Query()
	gotQuery := map[string]string{"endpoint": au.Scheme + "://" + au.Host + au.Path}
	for _, k := range []string{"response_type", "client_id", "redirect_uri", "code_challenge_method", "state", "resource", "scope"} {
		gotQuery[k] = q.Get(k)
	}
	wantQuery := map[string]string{"endpoint": s.as.URL + "/authorize", "response_type": "code", "client_id": "client-1",
		"redirect_uri": redirect, "code_challenge_method": "S256", "state": state, "resource": s.resource(), "scope": "read"}
	if diff := cmp.Diff(wantQuery, gotQuery); diff != "" {
		t.Errorf("authorization URL (-want +got):\n%s", diff)
	}
	if len(q.Get("code_challenge")) != 43 {
		t.Errorf("code_challenge %q is not a base64url SHA-256", q.Get("code_challenge"))
	}
	s.snapshot(func(s *authServer) {
		if len(s.registrations) != 1 {
			t.Fatalf("%d registrations, want 1", len(s.registrations))
		}
		reg := s.registrations[0]
		if fmt.Sprint(reg["redirect_uris"]) != "["+redirect+"]" || reg["token_endpoint_auth_method"] != "none" ||
			fmt.Sprint(reg["grant_types"]) != "[authorization_code refresh_token]" {
			t.Errorf("registration = %v", reg)
		}
	})

	code, _ := authorize(t, authURL)
	if _, err := m.Finish(ctx, 1001, state, Answer{Code: code}); err == nil || !strings.Contains(err.Error(), "no sign-in of yours is waiting") {
		t.Fatalf("Finish by another user = %v, want refused", err)
	}
	g, err := m.Finish(ctx, 1000, state, Answer{Code: code})
	if err != nil {
		t.Fatalf("Finish by the user who began: %v", err)
	}
	if _, err := m.Finish(ctx, 1000, state, Answer{Code: code}); err == nil {
		t.Fatal("a second Finish of the same sign-in succeeded")
	}

	want := Grant{UID: 1000, User: "alice", Server: "demo", ServerURL: s.resource(), Issuer: s.as.URL, Resource: s.resource(), TokenURL: s.as.URL + "/token",
		Revoke: s.as.URL + "/revoke", TokenExchange: true, Client: Client{ID: "client-1", RedirectURIs: []string{redirect}, Registered: true},
		Scopes: []string{"read"}, Subject: "alice", AccessToken: accessToken("alice", 2), RefreshToken: "rt-2"}
	ignore := cmp.FilterPath(func(p cmp.Path) bool {
		switch p.Last().String() {
		case ".ID", ".Obtained", ".Expiry":
			return true
		}
		return false
	}, cmp.Ignore())
	if diff := cmp.Diff(want, *g, ignore); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}
	if time.Until(g.Expiry) < 59*time.Minute || g.ID == "" {
		t.Errorf("grant expiry %v, id %q", g.Expiry, g.ID)
	}
	s.snapshot(func(s *authServer) {
		f := s.forms[len(s.forms)-1]
		if f.Get("grant_type") != "authorization_code" || f.Get("code_verifier") == "" || f.Get("resource") != s.resource() {
			t.Errorf("code exchange form = %v", f)
		}
	})

	infos, err := m.List(1000, false)
	if err != nil {
		t.Fatal(err)
	}
	wantInfo := []Info{{ID: g.ID, User: "alice", Server: "demo", Issuer: s.as.URL, Scopes: []string{"read"}, Subject: "alice",
		Obtained: g.Obtained, Expiry: g.Expiry, Refreshable: true}}
	if diff := cmp.Diff(wantInfo, infos, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	b, _ := json.Marshal(infos)
	if strings.Contains(string(b), g.AccessToken) || strings.Contains(string(b), g.RefreshToken) {
		t.Errorf("List shows a token: %s", b)
	}
	if others, _ := m.List(1001, false); len(others) != 0 {
		t.Errorf("List of another user = %v, want none", others)
	}
	if all, _ := m.List(0, true); len(all) != 1 {
		t.Errorf("List of all users = %v, want the one grant", all)
	}

	// Remove revokes both tokens and forgets the grant.
	had, err := m.Remove(ctx, testHTTP(t), 1000, "demo", "")
	if err != nil || !had {
		t.Fatalf("Remove = %v, %v", had, err)
	}
	s.snapshot(func(s *authServer) {
		var revoked []string
		for _, f := range s.revoked {
			revoked = append(revoked, f.Get("token_type_hint")+"="+f.Get("token"))
		}
		if diff := cmp.Diff([]string{"refresh_token=rt-2", "access_token=" + g.AccessToken}, revoked); diff != "" {
			t.Errorf("revoked (-want +got):\n%s", diff)
		}
	})
	if infos, _ := m.List(1000, false); len(infos) != 0 {
		t.Errorf("List after Remove = %v", infos)
	}
	if had, err := m.Remove(ctx, nil, 1000, "demo", ""); had || err != nil {
		t.Errorf("second Remove = %v, %v; want nothing to remove", had, err)
	}
}

func TestManagerFinishRefusedCode(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	authURL, state, err := m.Begin(context.Background(), LoginRequest{UID: 1000, User: "alice", RedirectURI: redirect, Target: s.target(t)})
	if err != nil {
		t.Fatal(err)
	}
	authorize(t, authURL)
	_, err = m.Finish(context.Background(), 1000, state, Answer{Code: "code-forged"})
	if err == nil || !strings.Contains(err.Error(), "the authorization server refused the code: invalid_grant") {
		t.Fatalf("Finish with a forged code = %v", err)
	}
	if infos, _ := m.List(1000, false); len(infos) != 0 {
		t.Errorf("a refused code left a grant: %v", infos)
	}
}

// TestManagerFinishChecksTheIssuer: an answer that names another
// authorization server than the one the sign-in went to (RFC 9207), or
// none when the server says it always names itself, is refused before
// its code goes anywhere: the mix-up attack, where another server's code
// reaching this sign-in's listener would be sent, with the verifier, to
// this server's token endpoint. The comparison is exact. An answer the
// listener refused (a repeated parameter), or one an older mcpcage login
// could not say the issuer of when the server always names itself, is
// refused too, and spends the sign-in.
func TestManagerFinishChecksTheIssuer(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name            string
		issuerInAnswers bool
		iss             func(as string) *string
		unknown         bool   // an older mcpcage login, which does not hand iss on
		listener        error  // the listener refused the answer
		errAnswer       string // an error answer's text (no code is sent, unless withCode)
		withCode        bool   // a code beside the error (a crafted request)
		refused         string // "" when the sign-in must succeed
	}{
		{"names this server", true, func(as string) *string { return str(as) }, false, nil, "", false, ""},
		{"names this server, unasked", false, func(as string) *string { return str(as) }, false, nil, "", false, ""},
		{"names none, as it says it never does", false, func(string) *string { return nil }, false, nil, "", false, ""},
		{"names another server", true, func(string) *string { return str("https://honest.example") }, false, nil, "", false, `comes from authorization server "https://honest.example"`},
		{"names another server, unasked", false, func(string) *string { return str("https://honest.example") }, false, nil, "", false, "mix-up attack"},
		{"names this server with a slash more", true, func(as string) *string { return str(as + "/") }, false, nil, "", false, "but this sign-in went to"},
		{"names an empty server", false, func(string) *string { return str("") }, false, nil, "", false, `comes from authorization server ""`},
		{"names none, though it says it always does", true, func(string) *string { return nil }, false, nil, "", false, "this answer names no server"},
		{"names a huge server", false, func(string) *string { return str(strings.Repeat("x", 100000)) }, false, nil, "", false, `"` + strings.Repeat("x", maxIssuerShown) + `..."`},
		{"an older mcpcage login, a server that names itself", true, func(string) *string { return nil }, true, nil, "", false, "this mcpcage command is older than mcpcaged"},
		{"an older mcpcage login, a server that does not say", false, func(string) *string { return nil }, true, nil, "", false, ""},
		{"refused by the listener", false, func(as string) *string { return str(as) }, false, errors.New(`the answer gives "iss" 2 times: refused`), "", false, `"iss" 2 times`},
		{"an error answer from this server", true, func(as string) *string { return str(as) }, false, nil, "access_denied the user said no", false, "refused the sign-in: access_denied the user said no"},
		{"an error answer naming no server", false, func(string) *string { return nil }, false, nil, "access_denied", false, "refused the sign-in: access_denied"},
		{"an error answer from another server", false, func(string) *string { return str("https://honest.example") }, false, nil, "access_denied", false, "mix-up attack"},
		{"an error answer naming none, though the server always does", true, func(string) *string { return nil }, false, nil, "access_denied", false, "this answer names no server"},
		{"an error answer with a code beside it", true, func(as string) *string { return str(as) }, false, nil, "access_denied", true, "refused the sign-in: access_denied"},
		{"neither a code nor an error", false, func(as string) *string { return str(as) }, false, nil, authanswer.NoCode, false, authanswer.NoCode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAuthServer(t)
			s.issuerInAnswers = tc.issuerInAnswers
			m, _ := newManager(t)
			ctx := context.Background()
			authURL, state, err := m.Begin(ctx, LoginRequest{UID: 1000, User: "alice", RedirectURI: redirect, Target: s.target(t)})
			if err != nil {
				t.Fatal(err)
			}
			code, _ := authorize(t, authURL)
			a := Answer{Code: code, Issuer: tc.iss(s.as.URL), IssuerUnknown: tc.unknown, Refused: tc.listener}
			if tc.errAnswer != "" {
				a.Error = tc.errAnswer
				if !tc.withCode {
					a.Code = ""
				}
			}
			g, err := m.Finish(ctx, 1000, state, a)
			if tc.refused == "" {
				if err != nil || g == nil {
					t.Fatalf("Finish = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("Finish = %v, want refused with %q", err, tc.refused)
			}
			if len(err.Error()) > 2*maxIssuerShown+1000 {
				t.Errorf("the refusal quotes %d bytes", len(err.Error()))
			}
			s.snapshot(func(s *authServer) {
				if n := s.hits["authorization_code"]; n != 0 {
					t.Errorf("the code was sent to the token endpoint %d times", n)
				}
			})
			if _, err := m.Finish(ctx, 1000, state, Answer{Code: code, Issuer: str(s.as.URL)}); err == nil || !strings.Contains(err.Error(), "no sign-in of yours is waiting") {
				t.Errorf("the refused sign-in could still be finished: %v", err)
			}
		})
	}
}

func TestManagerBeginLimits(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	ctx := context.Background()
	begin := func(uid uint32, redirect string) error {
		_, _, err := m.Begin(ctx, LoginRequest{UID: uid, User: "u", RedirectURI: redirect, Target: s.target(t)})
		return err
	}
	for i := range maxPendingPerUser {
		if err := begin(1000, redirect); err != nil {
			t.Fatalf("Begin %d: %v", i+1, err)
		}
	}
	if err := begin(1000, redirect); err == nil || !strings.Contains(err.Error(), "too many sign-ins waiting") {
		t.Fatalf("Begin beyond the per-user bound = %v", err)
	}
	// A subordinate uid of the user (/etc/subuid) counts as the user.
	if _, _, err := m.Begin(ctx, LoginRequest{UID: 100003, Account: 1000, User: "uid:100003", RedirectURI: redirect, Target: s.target(t)}); err == nil || !strings.Contains(err.Error(), "too many sign-ins waiting") {
		t.Fatalf("Begin by a subordinate uid of a user at the bound = %v", err)
	}
	if err := begin(1001, redirect); err != nil {
		t.Fatalf("another user's Begin: %v", err)
	}
	// One registration served all of a user's; another user, or another
	// redirect, needs another.
	if err := begin(1002, "http://[::1]:5555/cb"); err != nil {
		t.Fatalf("Begin with another redirect: %v", err)
	}
	s.snapshot(func(s *authServer) {
		if len(s.registrations) != 3 {
			t.Errorf("%d registrations, want 3 (one per user and redirect)", len(s.registrations))
		}
	})
}

// A user's sign-ins register at most maxRegistrations clients within
// the window, however fast they are begun and ended; a user at the bound
// of waiting sign-ins makes no request to the servers at all.
func TestManagerBoundsRegistrations(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	ctx := context.Background()
	begin := func(uid uint32, port int) (string, error) {
		_, state, err := m.Begin(ctx, LoginRequest{UID: uid, User: "u", RedirectURI: fmt.Sprintf("http://127.0.0.1:%d/callback", port), Target: s.target(t)})
		return state, err
	}
	registrations := func() (n int) {
		s.snapshot(func(s *authServer) { n = len(s.registrations) })
		return n
	}
	// Each on a new port, as mcpcage login listens: each registers, and
	// is abandoned at once (its listener refused the answer).
	for i := range maxRegistrations {
		state, err := begin(1000, 40000+i)
		if err != nil {
			t.Fatalf("sign-in %d: %v", i+1, err)
		}
		if _, err := m.Finish(ctx, 1000, state, Answer{Refused: errors.New("abandoned")}); err == nil {
			t.Fatal("an abandoned sign-in was finished")
		}
	}
	if n := registrations(); n != maxRegistrations {
		t.Fatalf("%d registrations for %d sign-ins", n, maxRegistrations)
	}
	_, err := begin(1000, 50000)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("registered %d clients", maxRegistrations)) || !strings.Contains(err.Error(), "configure a client_id for demo") {
		t.Fatalf("a sign-in beyond the registrations' bound = %v", err)
	}
	if n := registrations(); n != maxRegistrations {
		t.Fatalf("%d registrations after the refusal, want %d", n, maxRegistrations)
	}
	// The last client's redirect needs no new registration; another user
	// has a budget of their own.
	if _, err := begin(1000, 40000+maxRegistrations-1); err != nil {
		t.Fatalf("a sign-in on the registered redirect: %v", err)
	}
	if _, err := begin(1001, 50001); err != nil {
		t.Fatalf("another user's sign-in: %v", err)
	}
	if n := registrations(); n != maxRegistrations+1 {
		t.Fatalf("%d registrations, want %d", n, maxRegistrations+1)
	}

	// At the bound of waiting sign-ins: refused before any request.
	for i := range maxPendingPerUser {
		if _, err := begin(1002, 50002); err != nil {
			t.Fatalf("waiting sign-in %d: %v", i+1, err)
		}
	}
	var hits int
	s.snapshot(func(s *authServer) { hits = s.mcpHits })
	if _, err := begin(1002, 50002); err == nil || !strings.Contains(err.Error(), "too many sign-ins waiting") {
		t.Fatalf("a sign-in beyond the waiting bound = %v", err)
	}
	s.snapshot(func(s *authServer) {
		if s.mcpHits != hits {
			t.Errorf("a refused sign-in sent %d requests to the MCP server", s.mcpHits-hits)
		}
	})
}

func TestManagerBeginRefusals(t *testing.T) {
	tests := []struct {
		name      string
		redirect  string
		mcpStatus int
		wantInErr string
		wantHits  int // requests that reached the MCP server
	}{
		{name: "redirect not on loopback", redirect: "http://localhost:8080/cb", wantInErr: "must be on 127.0.0.1 or [::1]"},
		{name: "redirect over https", redirect: "https://127.0.0.1:8080/cb", wantInErr: "must be http://127.0.0.1:PORT/PATH"},
		{name: "server asks for no sign-in", redirect: redirect, mcpStatus: http.StatusOK,
			wantInErr: "demo answered without asking for a sign-in: nothing to do", wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			s.mcpStatus = tt.mcpStatus
			m, _ := newManager(t)
			_, _, err := m.Begin(context.Background(), LoginRequest{UID: 1000, User: "alice", RedirectURI: tt.redirect, Target: s.target(t)})
			if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("Begin = %v, want an error saying %q", err, tt.wantInErr)
			}
			s.snapshot(func(s *authServer) {
				if s.mcpHits != tt.wantHits {
					t.Errorf("%d requests reached the MCP server, want %d", s.mcpHits, tt.wantHits)
				}
			})
		})
	}
}

func TestCheckRedirect(t *testing.T) {
	tests := []struct {
		uri string
		ok  bool
	}{
		{"http://127.0.0.1:43210/callback", true},
		{"http://127.0.0.1:43210/", true},
		{"http://127.0.0.1:43210", true},
		{"http://[::1]:43210/callback", true},
		{"http://127.0.0.1/callback", false},
		{"http://localhost:43210/callback", false},
		{"http://127.0.0.2:43210/callback", false},
		{"http://[::2]:43210/callback", false},
		{"https://127.0.0.1:43210/callback", false},
		{"http://127.0.0.1:43210/callback?x=1", false},
		{"http://127.0.0.1:43210/callback#frag", false},
		{"http://evil.example:43210/callback", false},
		{"http://127.0.0.1.evil.example:43210/", false},
		{"127.0.0.1:43210/callback", false},
		{"", false},
	}
	for _, tt := range tests {
		if err := checkRedirect(tt.uri); (err == nil) != tt.ok {
			t.Errorf("checkRedirect(%q) = %v, want accepted %v", tt.uri, err, tt.ok)
		}
	}
}

// Info is what leaves the daemon: it has no field a token could be in.
func TestInfoHoldsNoSecret(t *testing.T) {
	typ := reflect.TypeFor[Info]()
	for i := range typ.NumField() {
		name := strings.ToLower(typ.Field(i).Name)
		for _, bad := range []string{"token", "secret", "client", "code", "verifier"} {
			if strings.Contains(name, bad) {
				t.Errorf("Info has field %s", typ.Field(i).Name)
			}
		}
	}
	g := Grant{ID: "g1", AccessToken: "at-secret", RefreshToken: "rt-secret", Client: Client{ID: "c", Secret: "cs-secret"}}
	b, err := json.Marshal(g.Info())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secret") {
		t.Errorf("Info of a grant shows a secret: %s", b)
	}
}

// saveGrant stores a grant as a finished sign-in would, for the
// authorization server s.
func saveGrant(t *testing.T, m *Manager, s *authServer, g Grant) {
	t.Helper()
	g.UID, g.User, g.Server = 1000, "alice", "demo"
	g.Issuer, g.Resource, g.TokenURL = s.as.URL, s.resource(), s.as.URL+"/token"
	if g.ServerURL == "" {
		g.ServerURL = s.resource()
	}
	g.Client = Client{ID: "client-1", Registered: true}
	if g.ID == "" {
		g.ID = "grant-" + g.Agent
	}
	if g.RefreshToken != "" {
		s.mu.Lock()
		s.refresh[g.RefreshToken] = true
		s.mu.Unlock()
	}
	if err := m.save(&g); err != nil {
		t.Fatal(err)
	}
}

func TestAuthorizerToken(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name          string
		grant         Grant
		refuseRefresh bool
		failRefresh   bool
		want          string // the token; "refreshed" for a new one
		wantInErr     string // the *remote.SignInError's message
		wantRefreshes int
	}{
		{name: "fresh token used as it is",
			grant: Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now, Expiry: now.Add(time.Hour)},
			want:  "at-stored"},
		{name: "token without expiry used as it is",
			grant: Grant{AccessToken: "at-stored", Obtained: now.Add(-48 * time.Hour)},
			want:  "at-stored"},
		{name: "token near expiry refreshed ahead",
			grant: Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)},
			want:  "refreshed", wantRefreshes: 1},
		{name: "expired token refreshed",
			grant: Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Hour)},
			want:  "refreshed", wantRefreshes: 1},
		{name: "refused refresh asks for a sign-in",
			grant:         Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)},
			refuseRefresh: true, wantRefreshes: 1,
			wantInErr: "demo needs you to sign in again: the authorization server refused to refresh the sign-in (revoked or expired): run `mcpcage login demo`"},
		{name: "failed refresh keeps a token still valid",
			grant:       Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)},
			failRefresh: true, want: "at-stored", wantRefreshes: 1},
		{name: "expiry without a refresh token asks for a sign-in",
			grant:     Grant{AccessToken: "at-stored", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)},
			wantInErr: "demo needs you to sign in again: the sign-in expired: run `mcpcage login demo`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			s.refuseRefresh, s.failRefresh = tt.refuseRefresh, tt.failRefresh
			m, _ := newManager(t)
			saveGrant(t, m, s, tt.grant)
			a := m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t))
			tok, err := a.Token(context.Background())
			if tt.wantInErr != "" {
				var si *remote.SignInError
				if !errors.As(err, &si) || si.Msg != tt.wantInErr {
					t.Errorf("Token = %q, %v; want a *remote.SignInError %q", tok, err, tt.wantInErr)
				}
			} else if err != nil {
				t.Fatalf("Token: %v", err)
			}
			var refreshes []url.Values
			s.snapshot(func(s *authServer) {
				for _, f := range s.forms {
					if f.Get("grant_type") == "refresh_token" {
						refreshes = append(refreshes, f)
					}
				}
				if tt.want == "refreshed" {
					tt.want = accessToken("alice", s.issued)
				}
			})
			if tt.wantInErr == "" && tok != tt.want {
				t.Errorf("Token = %q, want %q", tok, tt.want)
			}
			if len(refreshes) != tt.wantRefreshes {
				t.Fatalf("%d refreshes, want %d", len(refreshes), tt.wantRefreshes)
			}
			for _, f := range refreshes {
				if f.Get("refresh_token") != "rt-1" || f.Get("resource") != s.resource() || f.Get("client_id") != "client-1" {
					t.Errorf("refresh form = %v", f)
				}
			}
			if tt.wantInErr == "" && tt.wantRefreshes == 1 && !tt.failRefresh {
				// Refreshed once: the next call uses the new token as it is.
				if again, err := a.Token(context.Background()); err != nil || again != tok {
					t.Errorf("Token after the refresh = %q, %v; want %q", again, err, tok)
				}
				s.snapshot(func(s *authServer) {
					if s.hits["refresh_token"] != 1 {
						t.Errorf("%d refreshes after a second Token, want 1", s.hits["refresh_token"])
					}
				})
			}
		})
	}
}

// A sign-in is for the url it was made for: a server given the name of
// another later does not receive it.
func TestAuthorizerGrantForAnotherURL(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	now := time.Now()
	saveGrant(t, m, s, Grant{ServerURL: "https://old.example/mcp", AccessToken: "at-old-server", Obtained: now, Expiry: now.Add(time.Hour)})
	a := m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t))
	if tok, err := a.Token(context.Background()); tok != "" || err != nil {
		t.Errorf("Token = %q, %v; want no token", tok, err)
	}
	var si *remote.SignInError
	if _, err := a.Renew(context.Background(), ""); !errors.As(err, &si) || !strings.Contains(si.Msg, "made for another url of demo") {
		t.Errorf("Renew = %v, want a *remote.SignInError about the url", err)
	}
	if via, info := a.Planned(); via != ViaNone || info != nil {
		t.Errorf("Planned = %q, %+v; want none", via, info)
	}
}

func TestAuthorizerRotationKept(t *testing.T) {
	s := newAuthServer(t)
	s.rotate = true
	m, store := newManager(t)
	now := time.Now()
	saveGrant(t, m, s, Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)})
	tok, err := m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t)).Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Another daemon run (a new Manager on the same store) renews with the
	// rotated refresh token: rt-1 is no longer valid upstream.
	a := NewManager(store).Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t))
	renewed, err := a.Renew(context.Background(), tok)
	if err != nil {
		t.Fatalf("Renew with the rotated refresh token: %v", err)
	}
	if renewed == tok {
		t.Errorf("Renew returned the refused token")
	}
	s.snapshot(func(s *authServer) {
		var sent []string
		for _, f := range s.forms {
			sent = append(sent, f.Get("refresh_token"))
		}
		if diff := cmp.Diff([]string{"rt-1", s.rotated[0]}, sent); diff != "" {
			t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
		}
	})
}

func TestAuthorizerRenew(t *testing.T) {
	tests := []struct {
		name          string
		refused       func(stored string) string
		wantRefreshes int
		wantSame      bool // the stored token comes back
	}{
		{name: "the refused token is refreshed although fresh", refused: func(stored string) string { return stored }, wantRefreshes: 1},
		{name: "a token refreshed meanwhile is not refreshed again", refused: func(string) string { return "at-older" }, wantSame: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			m, _ := newManager(t)
			saveGrant(t, m, s, Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: time.Now(), Expiry: time.Now().Add(time.Hour)})
			a := m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t))
			tok, err := a.Renew(context.Background(), tt.refused("at-stored"))
			if err != nil {
				t.Fatal(err)
			}
			if (tok == "at-stored") != tt.wantSame {
				t.Errorf("Renew = %q", tok)
			}
			s.snapshot(func(s *authServer) {
				if s.hits["refresh_token"] != tt.wantRefreshes {
					t.Errorf("%d refreshes, want %d", s.hits["refresh_token"], tt.wantRefreshes)
				}
			})
		})
	}
}

func TestAuthorizerRefreshesOnceForConcurrentCalls(t *testing.T) {
	s := newAuthServer(t)
	s.rotate = true // a second refresh with rt-1 would be refused
	m, _ := newManager(t)
	now := time.Now()
	saveGrant(t, m, s, Grant{AccessToken: "at-stored", RefreshToken: "rt-1", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)})
	hc := testHTTP(t)
	const callers = 16
	toks := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			// Each session has its own Authorizer; they share the Manager.
			toks[i], errs[i] = m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, hc).Token(context.Background())
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || toks[i] != toks[0] || toks[i] == "at-stored" {
			t.Errorf("caller %d: Token = %q, %v; want the one refreshed token %q", i, toks[i], errs[i], toks[0])
		}
	}
	s.snapshot(func(s *authServer) {
		if s.hits["refresh_token"] != 1 {
			t.Errorf("%d refreshes for %d concurrent calls, want 1", s.hits["refresh_token"], callers)
		}
	})
}

func TestAuthorizerAgentSignIn(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		agentGrant []string // the agent's sign-in's scopes; nil: none
		wantScopes []string
		want       string
		wantInErr  string
		wantVia    Via
	}{
		{name: "agent sign-in within the agent's scopes", agentGrant: []string{"read"}, wantScopes: []string{"read", "write"},
			want: "at-agent", wantVia: ViaAgent},
		{name: "agent sign-in holding a scope the agent may no longer use", agentGrant: []string{"read", "admin"}, wantScopes: []string{"read"},
			wantInErr: "demo needs you to sign in again: the sign-in holds scope \"admin\", which agent claude may no longer use: run `mcpcage login demo --agent claude`"},
		{name: "no agent sign-in and no token exchange: never the user's token", wantScopes: []string{"read"},
			wantVia: ViaNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			m, _ := newManager(t)
			// The user's own, broader sign-in, without token exchange.
			saveGrant(t, m, s, Grant{AccessToken: "at-user", Scopes: []string{"read", "write", "admin"}, Obtained: now, Expiry: now.Add(time.Hour)})
			if tt.agentGrant != nil {
				saveGrant(t, m, s, Grant{Agent: "claude", AccessToken: "at-agent", Scopes: tt.agentGrant, Obtained: now, Expiry: now.Add(time.Hour)})
			}
			a := m.Authorizer(1000, "demo", s.resource(), "claude", tt.wantScopes, ActorClaims{}, testHTTP(t))
			if via, _ := a.Planned(); tt.wantInErr == "" && via != tt.wantVia {
				t.Errorf("Planned = %q, want %q", via, tt.wantVia)
			}
			tok, err := a.Token(context.Background())
			if tt.wantInErr != "" {
				var si *remote.SignInError
				if !errors.As(err, &si) || si.Msg != tt.wantInErr {
					t.Fatalf("Token = %q, %v; want a *remote.SignInError %q", tok, err, tt.wantInErr)
				}
				return
			}
			if err != nil || tok != tt.want {
				t.Fatalf("Token = %q, %v; want %q", tok, err, tt.want)
			}
			if via, info := a.Used(); via != tt.wantVia || (via == ViaAgent && (info == nil || info.Agent != "claude")) {
				t.Errorf("Used = %q, %+v", via, info)
			}
			if tt.want == "" {
				var si *remote.SignInError
				_, err := a.Renew(context.Background(), "")
				if !errors.As(err, &si) || !strings.Contains(si.Msg, "run `mcpcage login demo --agent claude`") {
					t.Errorf("Renew = %v, want a *remote.SignInError naming the agent's login", err)
				}
			}
		})
	}
}

func TestLoadActorKeepsItsKey(t *testing.T) {
	keys, err := secrets.Open(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	var sets []string
	for range 2 {
		actor, err := LoadActor(keys, "https://mcpcage.test/daemon")
		if err != nil {
			t.Fatal(err)
		}
		j, err := actor.JWKS()
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, string(j))
	}
	if sets[0] != sets[1] {
		t.Errorf("a second LoadActor made another key:\n%s\n%s", sets[0], sets[1])
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(sets[0]), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID == "" || set.Keys[0].Algorithm != "EdDSA" || !set.Keys[0].IsPublic() {
		t.Errorf("JWKS = %s (%v), want one public EdDSA key with a kid", sets[0], err)
	}
}

func TestAuthorizerTokenExchange(t *testing.T) {
	tests := []struct {
		name string
		// expiredUpstream: the user's stored token, still fresh by its
		// expiry, is no longer taken as a subject token.
		expiredUpstream bool
		refuseExchange  bool
		wantInErr       string
		wantHits        map[string]int // token endpoint requests by grant_type
	}{
		{name: "user's token narrowed to the agent",
			wantHits: map[string]int{grantTokenExchange: 1}},
		{name: "subject token expired upstream: refreshed once, then exchanged", expiredUpstream: true,
			wantHits: map[string]int{grantTokenExchange: 2, "refresh_token": 1}},
		{name: "exchange refused", refuseExchange: true,
			wantInErr: "demo needs you to sign in again: the authorization server refused to narrow your sign-in to agent claude"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			s.refuseExchange = tt.refuseExchange
			if tt.expiredUpstream {
				s.expiredUpstream = "at-user"
			}
			m, _ := newManager(t)
			trustActor(t, m, s)

			now := time.Now()
			saveGrant(t, m, s, Grant{AccessToken: "at-user", RefreshToken: "rt-1", TokenExchange: true,
				Scopes: []string{"read", "write"}, Obtained: now, Expiry: now.Add(time.Hour)})
			a := m.Authorizer(1000, "demo", s.resource(), "claude", []string{"read"}, ActorClaims{Exe: "/usr/bin/claude", SHA256: "ab12", User: "alice"}, testHTTP(t))
			if via, _ := a.Planned(); via != ViaExchanged {
				t.Errorf("Planned = %q, want %q", via, ViaExchanged)
			}
			tok, err := a.Token(context.Background())
			if tt.wantInErr != "" {
				var si *remote.SignInError
				if !errors.As(err, &si) || !strings.Contains(si.Msg, tt.wantInErr) {
					t.Fatalf("Token = %q, %v; want a *remote.SignInError %q", tok, err, tt.wantInErr)
				}
				return
			}
			s.snapshot(func(s *authServer) {
				if diff := cmp.Diff(tt.wantHits, s.hits); diff != "" {
					t.Errorf("token endpoint requests (-want +got):\n%s", diff)
				}
			})
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if !strings.HasPrefix(tok, "xt-") {
				t.Fatalf("Token = %q, want the exchanged token (never the user's)", tok)
			}
			s.snapshot(func(s *authServer) {
				if len(s.exchanges) == 0 {
					t.Fatal("no token exchange")
				}
				x := s.exchanges[len(s.exchanges)-1]
				subject := "at-user"
				if tt.expiredUpstream {
					subject = accessToken("alice", s.issued-1) // the refreshed one
				}
				got := map[string]string{}
				for _, k := range []string{"grant_type", "subject_token", "subject_token_type", "actor_token_type", "requested_token_type", "scope", "resource", "client_id"} {
					got[k] = x.form.Get(k)
				}
				want := map[string]string{"grant_type": grantTokenExchange, "subject_token": subject, "subject_token_type": tokenTypeAccess,
					"actor_token_type": tokenTypeJWT, "requested_token_type": tokenTypeAccess, "scope": "read", "resource": s.resource(), "client_id": "client-1"}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("exchange form (-want +got):\n%s", diff)
				}
				if x.claims.Subject != "claude" || x.exe != "/usr/bin/claude" || x.claims.Expiry.Time().After(time.Now().Add(6*time.Minute)) {
					t.Errorf("actor token claims = %+v, exe %q", x.claims, x.exe)
				}
			})
			// Kept: the next call sends no request.
			if again, err := a.Token(context.Background()); err != nil || again != tok {
				t.Errorf("second Token = %q, %v; want %q", again, err, tok)
			}
			via, info := a.Used()
			if via != ViaExchanged || info == nil || info.Agent != "claude" || !slices.Equal(info.Scopes, []string{"read"}) {
				t.Errorf("Used = %q, %+v", via, info)
			}
			// Refused upstream: exchanged again.
			renewed, err := a.Renew(context.Background(), tok)
			if err != nil || renewed == tok || !strings.HasPrefix(renewed, "xt-") {
				t.Errorf("Renew = %q, %v; want a new exchanged token", renewed, err)
			}
			s.snapshot(func(s *authServer) {
				if s.hits[grantTokenExchange] != tt.wantHits[grantTokenExchange]+1 {
					t.Errorf("%d exchanges after Renew, want %d", s.hits[grantTokenExchange], tt.wantHits[grantTokenExchange]+1)
				}
			})
		})
	}
}

// trustActor gives m an actor key (in a store of its own) and makes s
// trust it.
func trustActor(t *testing.T, m *Manager, s *authServer) {
	t.Helper()
	keys, err := secrets.Open(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	actor, err := LoadActor(keys, "https://mcpcage.test/daemon")
	if err != nil {
		t.Fatal(err)
	}
	jwksJSON, err := actor.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON, &set); err != nil {
		t.Fatalf("JWKS: %v\n%s", err, jwksJSON)
	}
	s.mu.Lock()
	s.jwks, s.actorIssuer = &set, "https://mcpcage.test/daemon"
	s.mu.Unlock()
	m.SetActor(actor)
}

// A token exchanged for an agent is kept in memory; it must not outlive
// what it was made from: the agent's scopes in the config, the user's
// sign-in.
func TestAuthorizerExchangedTokenFollowsItsSources(t *testing.T) {
	tests := []struct {
		name  string
		later func(t *testing.T, m *Manager) (wantScopes []string)
		// wantScope is the scope of a new exchange; "" when none may happen.
		wantScope string
	}{
		{
			name:      "agent's scopes narrowed by a config reload",
			later:     func(*testing.T, *Manager) []string { return []string{"read"} },
			wantScope: "read",
		},
		{
			name: "user signed out",
			later: func(t *testing.T, m *Manager) []string {
				if had, err := m.Remove(context.Background(), nil, 1000, "demo", ""); err != nil || !had {
					t.Fatalf("Remove = %v, %v", had, err)
				}
				return []string{"read", "write"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAuthServer(t)
			m, _ := newManager(t)
			trustActor(t, m, s)
			now := time.Now()
			saveGrant(t, m, s, Grant{AccessToken: "at-user", RefreshToken: "rt-1", TokenExchange: true,
				Scopes: []string{"read", "write"}, Obtained: now, Expiry: now.Add(time.Hour)})
			hc := testHTTP(t)
			first, err := m.Authorizer(1000, "demo", s.resource(), "claude", []string{"read", "write"}, ActorClaims{}, hc).Token(context.Background())
			if err != nil || first == "" {
				t.Fatalf("first session's Token = %q, %v", first, err)
			}
			want := tt.later(t, m)
			// A session that starts afterwards.
			tok, _ := m.Authorizer(1000, "demo", s.resource(), "claude", want, ActorClaims{}, hc).Token(context.Background())
			if tok == first {
				t.Errorf("a later session got the token exchanged for the first (%q)", first)
			}
			s.snapshot(func(s *authServer) {
				var scopes []string
				for _, x := range s.exchanges {
					scopes = append(scopes, x.form.Get("scope"))
				}
				wantScopes := []string{"read write"}
				if tt.wantScope != "" {
					wantScopes = append(wantScopes, tt.wantScope)
				}
				if diff := cmp.Diff(wantScopes, scopes); diff != "" {
					t.Errorf("scopes of the exchanges (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// The sign-ins kept are bounded per user, their subordinate uids'
// counted as theirs, and in all; a sign-in that replaces one kept is
// always kept; one grant's size is bounded.
func TestManagerBoundsKeptGrants(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	m.kept = grantBounds{perAccount: 8, all: 16} // the same code as 64 and 4096, in less time
	ctx := context.Background()
	signIn := func(uid, account uint32, server string) error {
		tg := s.target(t)
		tg.Server = server
		authURL, _, err := m.Begin(ctx, LoginRequest{UID: uid, Account: account, User: "u", RedirectURI: redirect, Target: tg})
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
		code, state := authorize(t, authURL)
		_, err = m.Finish(ctx, uid, state, Answer{Code: code})
		return err
	}
	keep := func(uid, account uint32, server string) {
		t.Helper()
		if err := m.save(&Grant{UID: uid, Account: account, User: "u", Server: server, AccessToken: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	// Alice (1000) keeps one sign-in of her own, and her subordinate
	// uids the rest of her share.
	if err := signIn(1000, 0, "demo"); err != nil {
		t.Fatalf("a first sign-in: %v", err)
	}
	for i := range m.kept.perAccount - 1 {
		keep(uint32(100000+i), 1000, "demo")
	}
	tests := []struct {
		name          string
		uid, account  uint32
		server, error string
	}{
		{"a new sign-in of a user at the bound", 1000, 0, "other", "you keep 8 sign-ins"},
		{"a new sign-in of a subordinate uid of that user", 100500, 1000, "demo", "you keep 8 sign-ins"},
		{"the same sign-in again (it replaces the one kept)", 1000, 0, "demo", ""},
		{"another user's", 1001, 0, "demo", ""},
	}
	for _, tt := range tests {
		err := signIn(tt.uid, tt.account, tt.server)
		if (tt.error == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.error)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.error)
		}
	}
	// All users' sign-ins.
	for i := range m.kept.all - m.kept.perAccount - 1 {
		keep(uint32(200000+i), 0, "demo")
	}
	if err := signIn(1002, 0, "demo"); err == nil || !strings.Contains(err.Error(), "keeps 16 sign-ins of all users") {
		t.Errorf("a sign-in beyond all users' bound: %v", err)
	}
	// One grant's size.
	if err := m.save(&Grant{UID: 1001, Server: "demo", AccessToken: strings.Repeat("x", maxGrantBytes)}); err == nil || !strings.Contains(err.Error(), "more than the 65536") {
		t.Errorf("a grant over the size bound: %v", err)
	}
}

// TestSignInDuringARefreshIsKept: a refresh of the stored grant in flight
// while the user signs in again must not overwrite the new sign-in with
// the old grant it refreshed (Finish saves under the grant's lock, which
// the refresh holds from its load to its save).
func TestSignInDuringARefreshIsKept(t *testing.T) {
	s := newAuthServer(t)
	m, _ := newManager(t)
	ctx := context.Background()
	now := time.Now()
	saveGrant(t, m, s, Grant{ID: "grant-old", AccessToken: "at-old", RefreshToken: "rt-old", Obtained: now.Add(-time.Hour), Expiry: now.Add(10 * time.Second)})
	release := make(chan struct{})
	s.snapshot(func(s *authServer) { s.holdRefresh, s.refreshHeld = release, make(chan struct{}) })
	held := s.refreshHeld

	refreshed := make(chan error, 1)
	go func() {
		_, err := m.Authorizer(1000, "demo", s.resource(), "", nil, ActorClaims{}, testHTTP(t)).Token(ctx)
		refreshed <- err
	}()
	<-held // the refresh holds the grant's lock, its answer held back

	authURL, state, err := m.Begin(ctx, LoginRequest{UID: 1000, User: "alice", RedirectURI: redirect, Target: s.target(t)})
	if err != nil {
		t.Fatal(err)
	}
	code, _ := authorize(t, authURL)
	type finished struct {
		g   *Grant
		err error
	}
	done := make(chan finished, 1)
	go func() {
		g, err := m.Finish(ctx, 1000, state, Answer{Code: code})
		done <- finished{g, err}
	}()
	// The refresh is let go once the sign-in has saved (before the fix) or
	// waits for the grant's lock (after it).
	var fin *finished
	testenv.WaitFor(t, "the sign-in to finish or to wait for the grant's lock", 10*time.Second, func() (bool, string) {
		select {
		case f := <-done:
			fin = &f
			return true, ""
		default:
		}
		return finishWaitsForALock(), "neither"
	})
	close(release)
	if err := <-refreshed; err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fin == nil {
		f := <-done
		fin = &f
	}
	if fin.err != nil {
		t.Fatalf("Finish: %v", fin.err)
	}
	kept, err := NewManager(m.store).load(1000, "demo", "")
	if err != nil || kept == nil {
		t.Fatalf("load: %v %v", kept, err)
	}
	if kept.ID != fin.g.ID || kept.AccessToken != fin.g.AccessToken {
		t.Errorf("kept grant %s (token %s), want the new sign-in %s (token %s): the refresh of the old grant overwrote it", kept.ID, kept.AccessToken, fin.g.ID, fin.g.AccessToken)
	}
}

// finishWaitsForALock: a goroutine is in Manager.Finish, waiting for a
// mutex.
func finishWaitsForALock() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*Manager).Finish(") && strings.Contains(g, "sync.(*Mutex).Lock") {
			return true
		}
	}
	return false
}
