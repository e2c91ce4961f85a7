package remote

import (
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
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
			hc, err := NewHTTPClient(ClientOptions{Hosts: tt.hosts, Server: testServer})
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
			hc, err := NewHTTPClient(ClientOptions{Hosts: []string{"127.0.0.1"}, CAFile: tt.caFile, Server: testServer})
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
