package oauth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/daemon/remote"
)

// testHTTP is the client the daemon would use for a server on
// 127.0.0.1 (any port).
func testHTTP(t *testing.T) *http.Client {
	t.Helper()
	hc, err := remote.NewHTTPClient(remote.ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: []string{"127.0.0.1"}, Server: "demo", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// docServer serves JSON documents by path; {RS} and {AS} in them stand
// for the two test servers' URLs. Other paths are 404.
func docServer(t *testing.T, docs map[string]string, expand func(string) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, expand(doc))
	}))
	t.Cleanup(srv.Close)
	return srv
}

const (
	prmDoc = `{"resource":"{RS}/mcp","authorization_servers":["{AS}"],"scopes_supported":["read","write"]}`
	asDoc  = `{"issuer":"{AS}","authorization_endpoint":"{AS}/authorize","token_endpoint":"{AS}/token",
		"registration_endpoint":"{AS}/register","revocation_endpoint":"{AS}/revoke",
		"code_challenge_methods_supported":["S256"],"token_endpoint_auth_methods_supported":["none"],
		"grant_types_supported":["authorization_code","refresh_token","urn:ietf:params:oauth:grant-type:token-exchange"],
		"scopes_supported":["read","write","admin"]}`
)

func TestDiscover(t *testing.T) {
	// wantResource is the Resource of prmDoc and asDoc.
	wantResource := func(rs, as string) *Resource {
		return &Resource{Resource: rs + "/mcp", Issuer: as, AuthURL: as + "/authorize", TokenURL: as + "/token",
			RegistrationURL: as + "/register", RevocationURL: as + "/revoke", ScopesSupported: []string{"read", "write"},
			AuthMethods: []string{"none"}, TokenExchange: true}
	}
	tests := []struct {
		name string
		// status and challenge of the MCP endpoint's answer to the
		// token-less request (status 0: 401).
		status    int
		challenge string
		rsDocs    map[string]string
		asDocs    map[string]string
		want      func(rs, as string) *Resource
		wantErr   error  // errors.Is
		wantInErr string // in the error's text, {RS} and {AS} expanded
	}{
		{
			name:      "resource_metadata of the challenge",
			challenge: `Bearer resource_metadata="{RS}/prm", scope="read"`,
			rsDocs:    map[string]string{"/prm": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": asDoc},
			want: func(rs, as string) *Resource {
				r := wantResource(rs, as)
				r.ChallengeScope = "read"
				return r
			},
		},
		{
			name:      "path-inserted well-known without resource_metadata",
			challenge: `Bearer realm="mcp"`,
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": asDoc},
			want:      wantResource,
		},
		{
			name:   "root well-known after the path-inserted one, without a challenge",
			rsDocs: map[string]string{"/.well-known/oauth-protected-resource": `{"resource":"{RS}","authorization_servers":["{AS}"]}`},
			asDocs: map[string]string{"/.well-known/oauth-authorization-server": asDoc},
			want: func(rs, as string) *Resource {
				r := wantResource(rs, as)
				r.Resource = rs
				r.ScopesSupported = []string{"read", "write", "admin"} // the authorization server's
				return r
			},
		},
		{
			name:   "issuer with a path: path-inserted authorization server metadata",
			rsDocs: map[string]string{"/.well-known/oauth-protected-resource/mcp": strings.ReplaceAll(prmDoc, `"{AS}"`, `"{AS}/tenant"`)},
			asDocs: map[string]string{"/.well-known/oauth-authorization-server/tenant": strings.ReplaceAll(asDoc, `"{AS}"`, `"{AS}/tenant"`)},
			want: func(rs, as string) *Resource {
				r := wantResource(rs, as)
				r.Issuer = as + "/tenant"
				return r
			},
		},
		{
			name:   "issuer with a path: openid configuration appended",
			rsDocs: map[string]string{"/.well-known/oauth-protected-resource/mcp": strings.ReplaceAll(prmDoc, `"{AS}"`, `"{AS}/tenant"`)},
			asDocs: map[string]string{"/tenant/.well-known/openid-configuration": strings.ReplaceAll(asDoc, `"{AS}"`, `"{AS}/tenant"`)},
			want: func(rs, as string) *Resource {
				r := wantResource(rs, as)
				r.Issuer = as + "/tenant"
				return r
			},
		},
		{
			name:    "a 200 answer asks for no sign-in",
			status:  http.StatusOK,
			wantErr: ErrNoAuth,
		},
		{
			// A server that is down has not said it needs no sign-in.
			name:      "a 503 answer is a failure, not ErrNoAuth",
			status:    http.StatusServiceUnavailable,
			wantInErr: "503",
		},
		{
			name:      "no protected resource metadata",
			wantInErr: "protected resource metadata of 127.0.0.1:",
		},
		{
			name:      "resource_metadata on a host not allowed",
			challenge: `Bearer resource_metadata="https://metadata.example/prm"`,
			wantErr:   remote.ErrHostNotAllowed,
		},
		{
			name:      "resource not covering the server url",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": strings.Replace(prmDoc, "{RS}/mcp", "{RS}/other", 1)},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": asDoc},
			wantInErr: `names resource "{RS}/other", which is not {RS}/mcp`,
		},
		{
			name:      "resource of another origin",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": strings.Replace(prmDoc, "{RS}/mcp", "https://mcp.example/mcp", 1)},
			wantInErr: `names resource "https://mcp.example/mcp"`,
		},
		{
			name:      "no authorization servers",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": `{"resource":"{RS}/mcp","authorization_servers":[]}`},
			wantInErr: "names no authorization server",
		},
		{
			name:      "issuer mismatch",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": strings.Replace(asDoc, `"issuer":"{AS}"`, `"issuer":"https://other.example"`, 1)},
			wantInErr: `names issuer "https://other.example", not "{AS}"`,
		},
		{
			name:      "no S256",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": strings.Replace(asDoc, `["S256"]`, `["plain"]`, 1)},
			wantInErr: "does not offer PKCE with S256",
		},
		{
			name:      "no code_challenge_methods_supported",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": strings.Replace(asDoc, `"code_challenge_methods_supported":["S256"],`, "", 1)},
			wantInErr: "does not offer PKCE with S256",
		},
		{
			name:      "no token endpoint",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": strings.Replace(asDoc, `"token_endpoint":"{AS}/token",`, "", 1)},
			wantInErr: "has no token_endpoint",
		},
		{
			name:      "token endpoint over plain http elsewhere",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": prmDoc},
			asDocs:    map[string]string{"/.well-known/oauth-authorization-server": strings.Replace(asDoc, `"{AS}/token"`, `"http://auth.example/token"`, 1)},
			wantInErr: "plain http is allowed only to loopback addresses",
		},
		{
			name:      "metadata that is not JSON",
			rsDocs:    map[string]string{"/.well-known/oauth-protected-resource/mcp": `<html>`},
			wantInErr: "not JSON metadata",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rsURL, asURL string
			expand := func(s string) string {
				return strings.NewReplacer("{RS}", rsURL, "{AS}", asURL).Replace(s)
			}
			var mu sync.Mutex
			var discovery []string // the token-less requests
			rsDocs := map[string]string{}
			for k, v := range tt.rsDocs {
				rsDocs[k] = v
			}
			docs := docServer(t, rsDocs, expand)
			rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/mcp" {
					docs.Config.Handler.ServeHTTP(w, r)
					return
				}
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				discovery = append(discovery, r.Method+" "+r.Header.Get("Authorization")+string(b))
				mu.Unlock()
				switch {
				case tt.status != 0:
					w.WriteHeader(tt.status)
				default:
					if tt.challenge != "" {
						w.Header().Set("WWW-Authenticate", expand(tt.challenge))
					}
					w.WriteHeader(http.StatusUnauthorized)
				}
			}))
			t.Cleanup(rs.Close)
			as := docServer(t, tt.asDocs, expand)
			rsURL, asURL = rs.URL, as.URL

			got, err := Discover(context.Background(), testHTTP(t), mustURL(t, rs.URL+"/mcp"))
			mu.Lock()
			defer mu.Unlock()
			if len(discovery) != 1 || !strings.HasPrefix(discovery[0], "POST {") {
				t.Errorf("token-less requests = %q, want one POST without Authorization", discovery)
			}
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Discover = %+v, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v does not wrap %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && errors.Is(err, ErrNoAuth) {
					t.Errorf("error %v is ErrNoAuth", err)
				}
				if want := expand(tt.wantInErr); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if diff := cmp.Diff(tt.want(rs.URL, as.URL), got); diff != "" {
				t.Errorf("Discover (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCoversURL(t *testing.T) {
	tests := []struct {
		resource, server string
		want             bool
	}{
		{"https://mcp.example/mcp", "https://mcp.example/mcp", true},
		{"https://mcp.example/mcp/", "https://mcp.example/mcp", true},
		{"https://mcp.example/mcp", "https://mcp.example/mcp/", true},
		{"https://mcp.example", "https://mcp.example/mcp", true},
		{"https://mcp.example/", "https://mcp.example/mcp", true},
		{"https://mcp.example/api", "https://mcp.example/api/mcp", true},
		{"https://MCP.example/mcp", "https://mcp.example/mcp", true},
		{"https://mcp.example/mc", "https://mcp.example/mcp", false},
		{"https://mcp.example/mcp", "https://mcp.example/mcpx", false},
		{"https://mcp.example/mcp/v2", "https://mcp.example/mcp", false},
		{"http://mcp.example/mcp", "https://mcp.example/mcp", false},
		{"https://other.example/mcp", "https://mcp.example/mcp", false},
		{"https://mcp.example:8443/mcp", "https://mcp.example/mcp", false},
		{"", "https://mcp.example/mcp", false},
	}
	for _, tt := range tests {
		if got := coversURL(tt.resource, mustURL(t, tt.server)); got != tt.want {
			t.Errorf("coversURL(%q, %q) = %v, want %v", tt.resource, tt.server, got, tt.want)
		}
	}
}

func TestWellKnown(t *testing.T) {
	tests := []struct {
		name string
		url  string
		doc  string
		root bool
		want []string
	}{
		{"resource with a path", "https://mcp.example/api/mcp", "oauth-protected-resource", true,
			[]string{"https://mcp.example/.well-known/oauth-protected-resource/api/mcp", "https://mcp.example/.well-known/oauth-protected-resource"}},
		{"resource at the root", "https://mcp.example/", "oauth-protected-resource", true,
			[]string{"https://mcp.example/.well-known/oauth-protected-resource"}},
		{"issuer with a path", "https://auth.example/tenant/", "oauth-authorization-server", false,
			[]string{"https://auth.example/.well-known/oauth-authorization-server/tenant"}},
		{"issuer at the root", "https://auth.example", "openid-configuration", false,
			[]string{"https://auth.example/.well-known/openid-configuration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, wellKnown(mustURL(t, tt.url), tt.doc, tt.root)); diff != "" {
				t.Errorf("wellKnown (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDiscoverErrorsHideTheURLsCredential: a server's url may carry a
// credential in its query or its path (/mcp/<key>); errors reach the
// user, logs and audit records (signin.fail), and must not show it,
// though discovery's well-known urls hold the server's path.
func TestDiscoverErrorsHideTheURLsCredential(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close() // nothing listens there now: the request fails
	const key = "s3cr3t0a1b2c3d4e5f6"
	const wellKnown = "/.well-known/oauth-protected-resource"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == wellKnown+"/wrong-resource/"+key:
			_, _ = w.Write([]byte(`{"resource":"https://` + r.Host + `/wrong-resource/` + key + `","authorization_servers":["https://as.example"]}`))
		case r.URL.Path == wellKnown+"/wrong-resource":
			_, _ = w.Write([]byte(`{"resource":"https://elsewhere.example/","authorization_servers":["https://as.example"]}`))
		case r.URL.Path == wellKnown+"/not-json/"+key:
			_, _ = w.Write([]byte(`<html>`))
		case r.URL.Path == wellKnown+"/redirect/"+key:
			http.Redirect(w, r, "http://mcp.example"+strings.TrimPrefix(r.URL.Path, wellKnown), http.StatusFound)
		case r.URL.Path == wellKnown+"/unreachable/"+key:
			http.Redirect(w, r, "http://"+closed+r.URL.Path, http.StatusFound)
		default: // 401 without resource_metadata, and no metadata
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	tests := []struct{ name, url, wantInErr string }{
		{"unreachable", "http://" + closed + "/mcp?api_key=s3cr3t-value", "connection refused"},
		{"a resource that is not the server", srv.URL + "/wrong-resource?api_key=s3cr3t-value", "names resource"},
		{"a key in the path, no metadata", srv.URL + "/mcp/" + key, "answered 401"},
		{"a key in the path, a resource that is not the server", srv.URL + "/wrong-resource/" + key, "names resource"},
		{"a key in the path, metadata that is not JSON", srv.URL + "/not-json/" + key, "not JSON metadata"},
		{"a key in the path, redirected to plain http", srv.URL + "/redirect/" + key, "plain http is allowed only to loopback addresses"},
		{"a key in the path, redirected where nothing listens", srv.URL + "/unreachable/" + key, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			hc, err := remote.NewHTTPClient(remote.ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: []string{"127.0.0.1", "mcp.example"}, Server: "demo", Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Discover(context.Background(), hc, u)
			if err == nil {
				t.Fatal("discovery succeeded")
			}
			t.Log(err)
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("the error shows the url's credential: %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("the error does not say %q", tt.wantInErr)
			}
		})
	}
}
