package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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
