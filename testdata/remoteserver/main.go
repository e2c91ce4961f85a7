// Command remoteserver is the test stack for mcpcage's remote servers: an
// OAuth 2.1 authorization server and an MCP server behind it that speaks
// streamable HTTP (mark3labs/mcp-go, both protocol eras) and checks every
// bearer token (signature, audience = the resource, expiry, revocation)
// and the scope each tool needs.
//
// The authorization server does what the MCP TypeScript SDK's demo one
// does not: refresh tokens (rotated), revocation, and token exchange
// (RFC 8693) that trusts actor tokens signed by a key set given with
// -actor-jwks and puts the actor in the new token's act claim. It signs
// its JWTs with go-jose. Sign-in approves at once (the test plays the
// browser) as user -subject.
//
// Tools: list_issues (scope read), create_issue (scope write), whoami
// (scope read: the token's sub, scope and act, as the server saw them).
//
// With -iss-param, every answer to an authorization request names the
// authorization server (iss, RFC 9207), and its metadata says so.
//
// Test controls on the authorization server: POST /admin/revoke-all
// revokes every token issued so far; GET /admin/stats counts grants (and
// code_presented: the codes sent to the token endpoint, good or not). On
// the MCP server: POST /admin/forget-sessions ends every MCP session (the
// next request with one of their ids gets 404, as after an idle timeout).
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

var (
	mcpAddr   = flag.String("mcp", "127.0.0.1:0", "MCP server address")
	asAddr    = flag.String("as", "127.0.0.1:0", "authorization server address")
	certFile  = flag.String("cert", "", "TLS certificate (PEM) for both servers; plain http without")
	keyFile   = flag.String("key", "", "TLS key (PEM)")
	ttl       = flag.Duration("ttl", time.Hour, "access token lifetime")
	subject   = flag.String("subject", "alice", "the user every sign-in signs in")
	actorJWKS = flag.String("actor-jwks", "", "JWKS file of trusted actor tokens (token exchange off without)")
	actorIss  = flag.String("actor-issuer", "", "iss of trusted actor tokens")
	host      = flag.String("host", "127.0.0.1", "host name in URLs")
	stateless = flag.Bool("stateless", false, "serve MCP without sessions")
	issParam  = flag.Bool("iss-param", false, "name the issuer in every authorization answer (iss, RFC 9207) and say so in the metadata")
	omitScope = flag.Bool("omit-scope", false, "leave scope out of token answers (RFC 6749 §5.1 allows it when it is the scope asked for); the token itself still says it")
)

const (
	grantExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	typeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	typeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

type claims struct {
	jwt.Claims
	Scope string         `json:"scope,omitempty"`
	Act   map[string]any `json:"act,omitempty"`
	Kind  string         `json:"kind"` // access or refresh
}

type client struct {
	ID       string   `json:"client_id"`
	Redirect []string `json:"redirect_uris"`
}

type code struct {
	client, redirect, challenge, resource, scope string
	expires                                      time.Time
}

type authServer struct {
	issuer, resource string
	key              ed25519.PrivateKey
	mu               sync.Mutex
	clients          map[string]*client
	codes            map[string]*code
	revoked          map[string]bool // jti
	used             map[string]bool // refresh jti already rotated
	revokedBefore    time.Time
	stats            map[string]int
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	mcpL, err := net.Listen("tcp", *mcpAddr)
	check(err)
	asL, err := net.Listen("tcp", *asAddr)
	check(err)
	scheme := "http"
	if *certFile != "" {
		scheme = "https"
	}
	mcpURL := fmt.Sprintf("%s://%s:%d/mcp", scheme, *host, mcpL.Addr().(*net.TCPAddr).Port)
	issuer := fmt.Sprintf("%s://%s:%d", scheme, *host, asL.Addr().(*net.TCPAddr).Port)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	check(err)
	as := &authServer{issuer: issuer, resource: mcpURL, key: key, clients: map[string]*client{}, codes: map[string]*code{},
		revoked: map[string]bool{}, used: map[string]bool{}, stats: map[string]int{}}
	go serve(asL, as.routes())
	go serve(mcpL, mcpRoutes(as, mcpURL))
	fmt.Printf("MCP %s\nAS %s\n", mcpURL, issuer)
	select {}
}

func serve(l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if *certFile != "" {
		check(srv.ServeTLS(l, *certFile, *keyFile))
	}
	check(srv.Serve(l))
}

func check(err error) {
	if err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthErr(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func randomID() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (as *authServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		grants := []string{"authorization_code", "refresh_token"}
		if *actorJWKS != "" {
			grants = append(grants, grantExchange)
		}
		writeJSON(w, 200, map[string]any{"issuer": as.issuer, "authorization_endpoint": as.issuer + "/authorize",
			"token_endpoint": as.issuer + "/token", "registration_endpoint": as.issuer + "/register", "revocation_endpoint": as.issuer + "/revoke",
			"code_challenge_methods_supported": []string{"S256"}, "grant_types_supported": grants, "response_types_supported": []string{"code"},
			"token_endpoint_auth_methods_supported": []string{"none"}, "scopes_supported": []string{"read", "write"},
			"authorization_response_iss_parameter_supported": *issParam})
	})
	mux.HandleFunc("POST /register", func(w http.ResponseWriter, r *http.Request) {
		var c client
		if json.NewDecoder(r.Body).Decode(&c) != nil || len(c.Redirect) == 0 {
			oauthErr(w, 400, "invalid_client_metadata", "redirect_uris required")
			return
		}
		c.ID = randomID()
		as.mu.Lock()
		as.clients[c.ID] = &c
		as.stats["register"]++
		as.mu.Unlock()
		writeJSON(w, 201, map[string]any{"client_id": c.ID, "redirect_uris": c.Redirect, "token_endpoint_auth_method": "none"})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		as.mu.Lock()
		c := as.clients[q.Get("client_id")]
		as.mu.Unlock()
		if c == nil || !slices.Contains(c.Redirect, q.Get("redirect_uri")) {
			http.Error(w, "unknown client or unregistered redirect_uri", 400)
			return
		}
		// The answer's parameters are added to the redirect URI's own
		// query, which is kept (RFC 6749 §3.1.2).
		answer := func(v url.Values) {
			to, err := url.Parse(q.Get("redirect_uri"))
			if err != nil {
				http.Error(w, "redirect_uri: "+err.Error(), 400)
				return
			}
			keep := to.Query()
			v.Set("state", q.Get("state"))
			if *issParam {
				v.Set("iss", as.issuer)
			}
			for k, vs := range v {
				keep[k] = append(keep[k], vs...)
			}
			to.RawQuery = keep.Encode()
			http.Redirect(w, r, to.String(), http.StatusFound)
		}
		fail := func(e string) { answer(url.Values{"error": {e}}) }
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
			fail("invalid_request")
			return
		}
		if q.Get("resource") != as.resource {
			fail("invalid_target")
			return
		}
		id := randomID()
		as.mu.Lock()
		as.codes[id] = &code{client: c.ID, redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), resource: q.Get("resource"),
			scope: q.Get("scope"), expires: time.Now().Add(time.Minute)}
		as.mu.Unlock()
		answer(url.Values{"code": {id}})
	})
	mux.HandleFunc("POST /token", as.token)
	mux.HandleFunc("POST /revoke", func(w http.ResponseWriter, r *http.Request) {
		if c, err := as.verify(r.FormValue("token"), ""); err == nil {
			as.mu.Lock()
			as.revoked[c.ID] = true
			as.stats["revoke"]++
			as.mu.Unlock()
		}
		w.WriteHeader(200)
	})
	mux.HandleFunc("POST /admin/revoke-all", func(w http.ResponseWriter, r *http.Request) {
		as.mu.Lock()
		as.revokedBefore = time.Now()
		as.mu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, r *http.Request) {
		as.mu.Lock()
		defer as.mu.Unlock()
		writeJSON(w, 200, as.stats)
	})
	return mux
}

func (as *authServer) issue(w http.ResponseWriter, sub, scope string, act map[string]any, withRefresh bool) {
	now := time.Now()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: as.key}, nil)
	check(err)
	at := claims{Claims: jwt.Claims{Issuer: as.issuer, Subject: sub, Audience: jwt.Audience{as.resource}, IssuedAt: jwt.NewNumericDate(now),
		Expiry: jwt.NewNumericDate(now.Add(*ttl)), ID: randomID()}, Scope: scope, Act: act, Kind: "access"}
	access, err := jwt.Signed(sig).Claims(at).Serialize()
	check(err)
	out := map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": int(ttl.Seconds()), "scope": scope,
		"issued_token_type": typeAccess}
	if *omitScope {
		delete(out, "scope")
	}
	if withRefresh {
		rt := claims{Claims: jwt.Claims{Issuer: as.issuer, Subject: sub, Audience: jwt.Audience{as.issuer}, IssuedAt: jwt.NewNumericDate(now),
			Expiry: jwt.NewNumericDate(now.Add(24 * time.Hour)), ID: randomID()}, Scope: scope, Kind: "refresh"}
		refresh, err := jwt.Signed(sig).Claims(rt).Serialize()
		check(err)
		out["refresh_token"] = refresh
	}
	writeJSON(w, 200, out)
}

// verify checks a token this server issued: signature, not revoked, not
// expired, of kind ("" = any).
func (as *authServer) verify(tok, kind string) (*claims, error) {
	t, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, err
	}
	var c claims
	if err := t.Claims(as.key.Public(), &c); err != nil {
		return nil, err
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: as.issuer, Time: time.Now()}, 0); err != nil {
		return nil, err
	}
	if kind != "" && c.Kind != kind {
		return nil, fmt.Errorf("not a %s token", kind)
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.revoked[c.ID] || !c.IssuedAt.Time().After(as.revokedBefore) {
		return nil, fmt.Errorf("revoked")
	}
	return &c, nil
}

func (as *authServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErr(w, 400, "invalid_request", err.Error())
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		as.count("code_presented") // whatever becomes of it: a code this server was sent
		as.mu.Lock()
		c := as.codes[f.Get("code")]
		delete(as.codes, f.Get("code"))
		as.mu.Unlock()
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case c == nil || time.Now().After(c.expires) || c.client != f.Get("client_id") || c.redirect != f.Get("redirect_uri"):
			oauthErr(w, 400, "invalid_grant", "unknown code, client or redirect")
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			oauthErr(w, 400, "invalid_grant", "PKCE verification failed")
		case f.Get("resource") != c.resource:
			oauthErr(w, 400, "invalid_target", "resource differs from the authorization request")
		default:
			as.count("authorization_code")
			as.issue(w, *subject, c.scope, nil, true)
		}
	case "refresh_token":
		c, err := as.verify(f.Get("refresh_token"), "refresh")
		if err != nil {
			oauthErr(w, 400, "invalid_grant", "refresh token: "+err.Error())
			return
		}
		if f.Get("resource") != as.resource {
			oauthErr(w, 400, "invalid_target", "resource must be "+as.resource)
			return
		}
		as.mu.Lock()
		reused := as.used[c.ID]
		as.used[c.ID] = true
		as.mu.Unlock()
		if reused {
			oauthErr(w, 400, "invalid_grant", "refresh token already used (rotation)")
			return
		}
		as.count("refresh_token")
		as.issue(w, c.Subject, c.Scope, nil, true)
	case grantExchange:
		as.exchange(w, f.Get("subject_token"), f.Get("subject_token_type"), f.Get("actor_token"), f.Get("actor_token_type"), f.Get("scope"), f.Get("resource"))
	default:
		oauthErr(w, 400, "unsupported_grant_type", f.Get("grant_type"))
	}
}

func (as *authServer) count(k string) {
	as.mu.Lock()
	as.stats[k]++
	as.mu.Unlock()
}

// exchange narrows the subject token to scope, with the actor the
// trusted actor token names (RFC 8693).
func (as *authServer) exchange(w http.ResponseWriter, subjectTok, subjectType, actorTok, actorType, scope, resource string) {
	if *actorJWKS == "" {
		oauthErr(w, 400, "unsupported_grant_type", "token exchange is off")
		return
	}
	sub, err := as.verify(subjectTok, "access")
	if err != nil || subjectType != typeAccess {
		oauthErr(w, 400, "invalid_grant", fmt.Sprintf("subject token: %v", err))
		return
	}
	if resource != as.resource {
		oauthErr(w, 400, "invalid_target", "resource must be "+as.resource)
		return
	}
	b, err := os.ReadFile(*actorJWKS)
	check(err)
	var set jose.JSONWebKeySet
	check(json.Unmarshal(b, &set))
	t, err := jwt.ParseSigned(actorTok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil || actorType != typeJWT || len(t.Headers) == 0 {
		oauthErr(w, 400, "invalid_request", "actor token: not a signed JWT")
		return
	}
	keys := set.Key(t.Headers[0].KeyID)
	if len(keys) == 0 {
		oauthErr(w, 400, "invalid_grant", "actor token: unknown key "+t.Headers[0].KeyID)
		return
	}
	var act struct {
		jwt.Claims
		Exe string `json:"mcpcage_exe"`
	}
	if err := t.Claims(keys[0].Key, &act); err != nil {
		oauthErr(w, 400, "invalid_grant", "actor token: "+err.Error())
		return
	}
	if err := act.ValidateWithLeeway(jwt.Expected{Issuer: *actorIss, AnyAudience: jwt.Audience{as.issuer}, Time: time.Now()}, 0); err != nil {
		oauthErr(w, 400, "invalid_grant", "actor token: "+err.Error())
		return
	}
	have := strings.Fields(sub.Scope)
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(have, s) {
			oauthErr(w, 400, "invalid_scope", "scope "+s+" exceeds the subject token's")
			return
		}
	}
	if scope == "" {
		scope = sub.Scope
	}
	as.count("token_exchange")
	as.issue(w, sub.Subject, scope, map[string]any{"sub": act.Subject, "iss": act.Issuer}, false)
}

type tokenKey struct{}

// sessions issues MCP session ids and forgets them on request.
type sessions struct {
	mu     sync.Mutex
	live   map[string]bool
	forgot int
}

func (s *sessions) Generate() string {
	id := randomID()
	s.mu.Lock()
	s.live[id] = true
	s.mu.Unlock()
	return id
}

func (s *sessions) Validate(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live[id] {
		return false, fmt.Errorf("unknown session")
	}
	return false, nil
}

func (s *sessions) Terminate(id string) (bool, error) {
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()
	return false, nil
}

func (s *sessions) forget() {
	s.mu.Lock()
	s.live = map[string]bool{}
	s.forgot++
	s.mu.Unlock()
}

// mcpRoutes serves the protected resource metadata and the MCP endpoint
// behind the bearer check.
func mcpRoutes(as *authServer, mcpURL string) http.Handler {
	s := server.NewMCPServer("remote-test-server", "1.0.0", server.WithToolCapabilities(false))
	whoami := func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		c, _ := ctx.Value(tokenKey{}).(*claims)
		b, _ := json.Marshal(map[string]any{"sub": c.Subject, "scope": c.Scope, "act": c.Act})
		return mcp.NewToolResultText(string(b)), nil
	}
	s.AddTool(mcp.NewTool("whoami", mcp.WithDescription("Who the token says is calling.")), whoami)
	s.AddTool(mcp.NewTool("list_issues", mcp.WithDescription("List the issues.")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("issue 1: the printer is on fire"), nil
	})
	s.AddTool(mcp.NewTool("create_issue", mcp.WithDescription("Create an issue."), mcp.WithString("title", mcp.Required())), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("created: " + req.GetString("title", "")), nil
	})
	opts := []server.StreamableHTTPOption{server.WithEndpointPath("/mcp"), server.WithDisableLocalhostProtection(true),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			return context.WithValue(ctx, tokenKey{}, r.Context().Value(tokenKey{}))
		})}
	ids := &sessions{live: map[string]bool{}}
	if *stateless {
		opts = append(opts, server.WithStateLess(true))
	} else {
		opts = append(opts, server.WithSessionIdManager(ids))
	}
	h := server.NewStreamableHTTPServer(s, opts...)
	metaURL := strings.Replace(mcpURL, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/forget-sessions", func(w http.ResponseWriter, r *http.Request) {
		ids.forget()
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"resource": mcpURL, "authorization_servers": []string{as.issuer}, "scopes_supported": []string{"read", "write"}})
	})
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		challenge := fmt.Sprintf(`Bearer resource_metadata=%q`, metaURL)
		if !ok {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "sign in", http.StatusUnauthorized)
			return
		}
		c, err := as.verify(tok, "access")
		if err == nil && !slices.Contains(c.Audience, mcpURL) {
			err = fmt.Errorf("audience %v is not %s", c.Audience, mcpURL)
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", challenge+`, error="invalid_token", error_description="`+strings.ReplaceAll(err.Error(), `"`, "'")+`"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		// The scope a tool needs, from the 2026-07-28 era's Mcp-Name header
		// or the body.
		if r.Method == http.MethodPost && r.Header.Get("Mcp-Method") == "tools/call" {
			need := "read"
			if r.Header.Get("Mcp-Name") == "create_issue" {
				need = "write"
			}
			if !slices.Contains(strings.Fields(c.Scope), need) {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="insufficient_scope", scope=%q, resource_metadata=%q`, need, metaURL))
				http.Error(w, "insufficient scope", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, c)))
	})
	return mux
}
