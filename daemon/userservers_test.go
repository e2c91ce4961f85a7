package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/oauth"
	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/daemon/userservers"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestUndoServerAdd: an add the audit log could not record is taken back
// (the replaced definition stored again, a new name removed) and answered
// as such; when the undo fails too, the answer and an Error line say so,
// with both errors.
func TestUndoServerAdd(t *testing.T) {
	orig := userservers.Server{Command: []string{"orig"}}
	next := userservers.Server{Command: []string{"next"}}
	auditErr := errors.New("audit log unavailable: no space left on device")
	for _, tc := range []struct {
		name      string
		before    *userservers.Server // "x" before the add; nil: none
		breakFile bool                // the user's file cannot be read back
		want      string              // in the answer
		wantX     *userservers.Server // "x" afterwards; nil: none
		wantLog   string
	}{
		{name: "new", want: "so it was not added: " + auditErr.Error()},
		{name: "replaced", before: &orig, want: "so it was not replaced (your previous definition of x stands): " + auditErr.Error(), wantX: &orig},
		{name: "undo fails", before: &orig, breakFile: true, want: "undoing the add failed too",
			wantLog: "user server stored but neither audited nor undone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := userservers.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			d := &Daemon{userServers: st, log: slog.New(slog.NewTextHandler(&logs, nil))}
			peer := Peer{UID: 1000, GID: 1000}
			if tc.before != nil {
				if _, err := st.Put(peer.UID, "x", *tc.before); err != nil {
					t.Fatal(err)
				}
			}
			prev, err := st.Put(peer.UID, "x", next)
			if err != nil {
				t.Fatal(err)
			}
			if tc.breakFile {
				file := filepath.Join(dir, "1000.json")
				if err := os.Remove(file); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(file, 0o700); err != nil { // read back: EISDIR
					t.Fatal(err)
				}
			}
			got := d.undoServerAdd(peer, "x", next, prev, auditErr)
			if !errors.Is(got, auditErr) || !strings.Contains(got.Error(), tc.want) {
				t.Fatalf("answer %q, want it to hold %q and wrap the audit error", got, tc.want)
			}
			if tc.wantLog != "" {
				line := logs.String()
				if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, tc.wantLog) || !strings.Contains(line, auditErr.Error()) || !strings.Contains(line, "is a directory") {
					t.Fatalf("log %q, want an Error line %q with both errors", line, tc.wantLog)
				}
				return
			}
			if logs.Len() != 0 {
				t.Errorf("unexpected log: %s", logs.String())
			}
			srv, err := st.Get(peer.UID, "x")
			switch {
			case tc.wantX == nil && !errors.Is(err, userservers.ErrNotFound):
				t.Fatalf("x after the undo: %+v, %v; want none", srv, err)
			case tc.wantX != nil && err != nil:
				t.Fatalf("x after the undo: %v", err)
			case tc.wantX != nil:
				if diff := cmp.Diff(tc.wantX.Command, srv.Command); diff != "" {
					t.Fatalf("x after the undo (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestServerRmRevokesOnlyWhereAllowed: removing a user's own remote
// server revokes its sign-ins at the authorization server only while
// user_remote_hosts allows the server's hosts, as a sign-in is allowed;
// otherwise they are forgotten without a request, and the log says so
// (found by a red-team helper: the revocation went out regardless).
func TestServerRmRevokesOnlyWhereAllowed(t *testing.T) {
	var mu sync.Mutex
	revoked := 0
	var as *httptest.Server
	as = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/mcp":
			w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="`+as.URL+`/prm"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/prm":
			_, _ = fmt.Fprintf(w, `{"resource":"%s/mcp","authorization_servers":["%s"]}`, as.URL, as.URL)
		case "/.well-known/oauth-authorization-server":
			_, _ = fmt.Fprintf(w, `{"issuer":"%[1]s","authorization_endpoint":"%[1]s/authorize","token_endpoint":"%[1]s/token",`+
				`"revocation_endpoint":"%[1]s/revoke","code_challenge_methods_supported":["S256"]}`, as.URL)
		case "/token":
			_, _ = io.WriteString(w, `{"access_token":"at","token_type":"Bearer","refresh_token":"rt","expires_in":3600}`)
		case "/revoke":
			mu.Lock()
			revoked++
			mu.Unlock()
		default:
			http.NotFound(w, r)
		}
	}))
	defer as.Close()
	for _, tc := range []struct {
		name        string
		allowed     []string // user_remote_hosts
		root        bool     // the user's own connections need root (dialAs)
		wantRevoked int
		wantLog     string
	}{
		{name: "allowed", allowed: []string{"127.0.0.1"}, root: true, wantRevoked: 2}, // the refresh and the access token
		{name: "no longer allowed", allowed: []string{"*.example.com"},
			wantLog: "sign-ins of a removed server forgotten, not revoked: its hosts are not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testenv.RequireRoot(t) // connects as peer, the test's own user
			}
			store, err := secrets.Open(filepath.Join(t.TempDir(), "oauth"))
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			d := &Daemon{oauth: oauth.NewManager(store), log: slog.New(slog.NewTextHandler(&logs, nil))}
			d.cfg.Store(&config.Config{Daemon: config.Daemon{UserRemoteHosts: tc.allowed}})
			peer := Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
			srv := &config.Server{Name: "mine", Remote: config.Remote{URL: as.URL + "/mcp"}, Personal: true}
			signIn(t, d, peer, srv)
			mu.Lock()
			revoked = 0
			mu.Unlock()

			if err := d.forgetSignIns(peer, srv.Name, srv); err != nil {
				t.Fatalf("forgetSignIns: %v", err)
			}
			mu.Lock()
			got := revoked
			mu.Unlock()
			if got != tc.wantRevoked {
				t.Errorf("%d revocation requests, want %d", got, tc.wantRevoked)
			}
			if left, err := d.oauth.List(peer.UID, false); err != nil || len(left) != 0 {
				t.Errorf("sign-ins left: %v, %v; want none", left, err)
			}
			if !strings.Contains(logs.String(), tc.wantLog) || (tc.wantLog == "" && logs.Len() != 0) {
				t.Errorf("log %q, want %q", logs.String(), tc.wantLog)
			}
		})
	}
}

// signIn signs peer in to srv through d's manager (the authorization
// server grants any code).
func signIn(t *testing.T, d *Daemon, peer Peer, srv *config.Server) {
	t.Helper()
	hc, err := remote.NewHTTPClient(remote.ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: srv.RemoteHosts(), Server: srv.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, state, err := d.oauth.Begin(ctx, oauth.LoginRequest{UID: peer.UID, RedirectURI: "http://127.0.0.1:43210/callback",
		Target: oauth.Target{Server: srv.Name, URL: u, HTTP: hc, ClientID: "c"}})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if _, err := d.oauth.Finish(ctx, peer.UID, state, oauth.Answer{Code: "code", IssuerUnknown: true}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}
