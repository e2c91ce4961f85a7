package oauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRegisterKeepsWhatSignInsUse: a registration's answer is read up to
// maxRegistration, and only the client's id, secret and the redirect URI
// asked for are kept (found by a red-team helper: each answer was kept
// whole, up to 256 KiB, for good).
func TestRegisterKeepsWhatSignInsUse(t *testing.T) {
	pad := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	tests := []struct {
		name      string
		answer    string
		want      *Client
		wantInErr string
	}{
		{name: "what is kept", answer: `{"client_id":"c","client_secret":"s","redirect_uris":["http://127.0.0.1:1/other",` + pad(8<<10) + `],"client_name":"mcpcage"}`,
			want: &Client{ID: "c", Secret: "s", RedirectURIs: []string{redirect}, Registered: true}},
		{name: "a public client", answer: `{"client_id":"c"}`,
			want: &Client{ID: "c", RedirectURIs: []string{redirect}, Registered: true}},
		{name: "at the bound", answer: `{"client_id":"c","logo_uri":` + pad(maxRegistration-len(`{"client_id":"c","logo_uri":""}`)) + `}`,
			want: &Client{ID: "c", RedirectURIs: []string{redirect}, Registered: true}},
		{name: "past the bound", answer: `{"client_id":"c","logo_uri":` + pad(maxRegistration) + `}`,
			wantInErr: "the answer is larger than 16 KiB, which no registration needs: refused"},
		{name: "no client_id", answer: `{"client_secret":"s"}`, wantInErr: "no client_id in the answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, tt.answer)
			}))
			defer as.Close()
			c, err := Register(context.Background(), testHTTP(t), &Resource{Issuer: as.URL, RegistrationURL: as.URL + "/register"}, redirect, nil)
			if tt.wantInErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Fatalf("Register = %+v, %v; want an error saying %q", c, err, tt.wantInErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if diff := cmp.Diff(tt.want, c); diff != "" {
				t.Errorf("client (-want +got):\n%s", diff)
			}
		})
	}
}

// TestManagerBoundsKeptRegistrations: the registrations kept for
// sign-ins to come are one user's each, and at most maxClients, the
// oldest going first.
func TestManagerBoundsKeptRegistrations(t *testing.T) {
	var registered atomic.Int32
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := registered.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"client_id":"client-%d"}`, n)
	}))
	defer as.Close()
	m, _ := newManager(t)
	res := &Resource{Issuer: as.URL, RegistrationURL: as.URL + "/register"}
	hc := testHTTP(t)
	client := func(uid uint32) *Client {
		t.Helper()
		c, err := m.client(context.Background(), LoginRequest{UID: uid, RedirectURI: redirect, Target: Target{Server: "demo", HTTP: hc}}, res, nil)
		if err != nil {
			t.Fatalf("client of uid %d: %v", uid, err)
		}
		return c
	}
	first := client(1000)
	if c := client(1000); c.ID != first.ID {
		t.Errorf("the same user's next sign-in registered client %s, want %s kept", c.ID, first.ID)
	}
	if c := client(1001); c.ID == first.ID {
		t.Errorf("another user's sign-in was given uid 1000's client %s", c.ID)
	}
	for uid := uint32(1002); uid < 1000+maxClients+1; uid++ {
		client(uid)
	}
	if n := len(m.clients); n != maxClients {
		t.Errorf("%d registrations kept, want %d", n, maxClients)
	}
	before := registered.Load()
	last := client(1000 + maxClients)
	if registered.Load() != before {
		t.Errorf("the newest registration (%s) was not kept", last.ID)
	}
	if c := client(1000); c.ID == first.ID || registered.Load() != before+1 {
		t.Errorf("the oldest registration (%s) was kept past the bound", first.ID)
	}
}
