package remote

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// quietTLSServer is a TLS test server that does not log the handshakes
// its tests make fail.
func quietTLSServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestNewHTTPClientHosts(t *testing.T) {
	var targetHits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			targetHits.Add(1)
			_, _ = io.WriteString(w, "ok")
		case "/to-localhost": // the same server under another name
			http.Redirect(w, r, strings.Replace("http://"+r.Host, "127.0.0.1", "localhost", 1)+"/ok", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	port := mustURL(t, srv.URL).Port()

	tests := []struct {
		name      string
		hosts     []string
		url       string
		wantErr   error  // errors.Is
		wantInErr string // in the error's text
		wantHits  int32  // requests that reached /ok
	}{
		{name: "host without port allows any port", hosts: []string{"127.0.0.1"}, url: srv.URL + "/ok", wantHits: 1},
		{name: "host with its port", hosts: []string{hostPort}, url: srv.URL + "/ok", wantHits: 1},
		{name: "host with another port", hosts: []string{"127.0.0.1:1"}, url: srv.URL + "/ok",
			wantErr: ErrHostNotAllowed, wantInErr: hostPort + " is not among the hosts of [servers.demo]"},
		{name: "hosts compared case-insensitively", hosts: []string{"LocalHost"}, url: "http://localhost:" + port + "/ok", wantHits: 1},
		{name: "unlisted host", hosts: []string{"mcp.example.com"}, url: srv.URL + "/ok", wantErr: ErrHostNotAllowed},
		{name: "no hosts", url: srv.URL + "/ok", wantErr: ErrHostNotAllowed},
		{name: "plain http to a non-loopback host", hosts: []string{"mcp.example.com"}, url: "http://mcp.example.com/mcp",
			wantInErr: "plain http is allowed only to loopback addresses; use https"},
		{name: "another scheme", hosts: []string{"127.0.0.1"}, url: "ftp://127.0.0.1/x",
			wantInErr: "the scheme must be https (or http to a loopback address)"},
		{name: "redirect to an unlisted host", hosts: []string{"127.0.0.1"}, url: srv.URL + "/to-localhost",
			wantErr: ErrHostNotAllowed, wantInErr: "localhost:" + port},
		{name: "redirect to a listed host", hosts: []string{"127.0.0.1", "localhost"}, url: srv.URL + "/to-localhost", wantHits: 1},
		{name: "redirect loop", hosts: []string{"127.0.0.1"}, url: srv.URL + "/loop", wantInErr: "more than 5 redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, err := NewHTTPClient(ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: tt.hosts, Server: testServer})
			if err != nil {
				t.Fatalf("NewHTTPClient: %v", err)
			}
			t.Cleanup(hc.CloseIdleConnections)
			before := targetHits.Load()
			resp, err := hc.Get(tt.url)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			wantOK := tt.wantErr == nil && tt.wantInErr == ""
			switch {
			case wantOK && err != nil:
				t.Fatalf("GET %s: %v", tt.url, err)
			case wantOK && resp.StatusCode != http.StatusOK:
				t.Fatalf("GET %s: %s", tt.url, resp.Status)
			case !wantOK && err == nil:
				t.Fatalf("GET %s succeeded, want an error", tt.url)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v does not wrap %v", err, tt.wantErr)
			case tt.wantInErr != "" && !strings.Contains(err.Error(), tt.wantInErr):
				t.Errorf("error %q does not say %q", err, tt.wantInErr)
			}
			if got := targetHits.Load() - before; got != tt.wantHits {
				t.Errorf("%d requests reached the target, want %d", got, tt.wantHits)
			}
		})
	}
}

func TestNewHTTPClientCAFile(t *testing.T) {
	srv := quietTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		caFile    string
		wantNew   error  // errors.Is of NewHTTPClient's error
		wantInNew string // in NewHTTPClient's error
		wantGet   bool   // the GET succeeds
	}{
		{name: "ca_file trusts the server", caFile: caFile(t, srv), wantGet: true},
		{name: "without ca_file the server is not trusted"},
		{name: "missing ca_file", caFile: filepath.Join(dir, "missing.pem"), wantNew: fs.ErrNotExist, wantInNew: "ca_file of [servers.demo]"},
		{name: "ca_file without a certificate", caFile: notPEM, wantInNew: "ca_file of [servers.demo]: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, err := NewHTTPClient(ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: []string{"127.0.0.1"}, CAFile: tt.caFile, Server: testServer})
			if tt.wantNew != nil || tt.wantInNew != "" {
				if err == nil {
					t.Fatal("NewHTTPClient succeeded, want an error")
				}
				if tt.wantNew != nil && !errors.Is(err, tt.wantNew) {
					t.Errorf("error %v does not wrap %v", err, tt.wantNew)
				}
				if !strings.Contains(err.Error(), tt.wantInNew) {
					t.Errorf("error %q does not say %q", err, tt.wantInNew)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewHTTPClient: %v", err)
			}
			t.Cleanup(hc.CloseIdleConnections)
			resp, err := hc.Get(srv.URL)
			if err == nil {
				_ = resp.Body.Close()
			}
			if tt.wantGet && err != nil {
				t.Fatalf("GET: %v", err)
			}
			if !tt.wantGet && err == nil {
				t.Fatal("GET of a server signed by an unknown CA succeeded")
			}
		})
	}
}

func TestCheckScheme(t *testing.T) {
	tests := []struct {
		url  string
		want bool
	}{
		{"https://mcp.example.com/mcp", true},
		{"http://127.0.0.1:8080/mcp", true},
		{"http://127.1.2.3/mcp", true},
		{"http://[::1]:8080/mcp", true},
		{"http://localhost/mcp", true},
		{"http://LOCALHOST:3000/mcp", true},
		{"http://mcp.example.com/mcp", false},
		{"http://10.0.0.1/mcp", false},
		{"http://localhost.example.com/mcp", false},
		{"http://[::ffff:127.0.0.1]/mcp", true}, // IPv4-mapped loopback
		{"ws://127.0.0.1/mcp", false},
		{"file:///etc/passwd", false},
	}
	for _, tt := range tests {
		err := CheckScheme(mustURL(t, tt.url))
		if (err == nil) != tt.want {
			t.Errorf("CheckScheme(%s) = %v, want allowed %v", tt.url, err, tt.want)
		}
	}
}

// TestRedirectCredentials: a request's credentials follow a redirect only
// to the origin they were given for. Go's client alone kept them on a
// redirect to another port of the host (a host listed without a port
// allows every port) and to a subdomain (found by a red-team helper).
func TestRedirectCredentials(t *testing.T) {
	cert, ca := localhostCert(t)
	var mu sync.Mutex
	seen := map[string]http.Header{} // by path
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}
	startTLS := func(h http.HandlerFunc) *httptest.Server {
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	other := httptest.NewServer(http.HandlerFunc(record))
	t.Cleanup(other.Close)
	otherTLS := startTLS(record)
	to := map[string]string{ // redirecting path: where to
		"/to-another-port":      other.URL + "/another-port",
		"/to-another-port-tls":  "https://localhost:" + mustURL(t, otherTLS.URL).Port() + "/another-port-tls",
		"/to-a-subdomain":       "https://auth.localhost:PORT/subdomain",
		"/to-the-same-origin":   "/same-origin",
		"/to-the-same-origin-2": "/to-the-same-origin",
	}
	redirect := func(w http.ResponseWriter, r *http.Request) {
		if target, ok := to[r.URL.Path]; ok {
			http.Redirect(w, r, strings.Replace(target, "PORT", mustURL(t, "http://"+r.Host).Port(), 1), http.StatusTemporaryRedirect)
			return
		}
		record(w, r)
	}
	srv := httptest.NewServer(http.HandlerFunc(redirect))
	t.Cleanup(srv.Close)
	tlsURL := "https://localhost:" + mustURL(t, startTLS(redirect).URL).Port()

	tests := []struct {
		name     string
		url      string
		arrives  string // the path the request ends at
		wantKept bool   // the credentials arrive there
	}{
		{name: "same origin", url: srv.URL + "/to-the-same-origin", arrives: "/same-origin", wantKept: true},
		{name: "same origin, two redirects", url: srv.URL + "/to-the-same-origin-2", arrives: "/same-origin", wantKept: true},
		{name: "another port of the host", url: srv.URL + "/to-another-port", arrives: "/another-port"},
		{name: "another port of the host, https", url: tlsURL + "/to-another-port-tls", arrives: "/another-port-tls"},
		{name: "a subdomain, same port", url: tlsURL + "/to-a-subdomain", arrives: "/subdomain"},
	}
	hc := testClient(t, ClientOptions{Hosts: []string{"127.0.0.1", "localhost", "auth.localhost"}, CAFile: ca})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, tt.url, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer SECRET")
			req.Header.Set("Mcp-Session-Id", "SESSION")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", tt.url, err)
			}
			_ = resp.Body.Close()
			mu.Lock()
			h, ok := seen[tt.arrives]
			delete(seen, tt.arrives)
			mu.Unlock()
			if !ok {
				t.Fatalf("nothing arrived at %s", tt.arrives)
			}
			for _, name := range []string{"Authorization", "Mcp-Session-Id"} {
				if kept := h.Get(name) != ""; kept != tt.wantKept {
					t.Errorf("%s arrived at %s: %v, want %v", name, tt.arrives, kept, tt.wantKept)
				}
			}
		})
	}
}

// localhostCert is a self-signed certificate for localhost and
// auth.localhost, and its PEM file.
func localhostCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost", "auth.localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, p
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/other?x=1", true},
		{"https://mcp.example.com/mcp", "https://MCP.example.com:443/mcp", true},
		{"http://127.0.0.1/mcp", "http://127.0.0.1:80/mcp", true},
		{"https://mcp.example.com/mcp", "https://mcp.example.com:8443/mcp", false},
		{"http://127.0.0.1:8080/mcp", "http://127.0.0.1:8081/mcp", false},
		{"https://example.com/mcp", "https://auth.example.com/mcp", false},
		{"https://localhost/mcp", "http://localhost:443/mcp", false},
	}
	for _, tt := range tests {
		if got := sameOrigin(mustURL(t, tt.a), mustURL(t, tt.b)); got != tt.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
