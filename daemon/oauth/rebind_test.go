package oauth

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/daemon/remote"
	"github.com/mcpcage/mcpcage/daemon/secrets"
)

// TestGrantStaysWithItsURL: a grant made for server "foo" at
// good.example is not sent to whatever url a server named "foo" has now
// (a user server removed and added again, an admin's url change). Found
// by review: the first version keyed grants on the name alone.
func TestGrantStaysWithItsURL(t *testing.T) {
	got := make(chan string, 4)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
		w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="http://example.invalid/x"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer other.Close()
	st, err := secrets.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(st)
	if err := m.save(&Grant{ID: "g1", UID: 1000, Server: "foo", ServerURL: "https://good.example/mcp", Issuer: "https://idp.good.example",
		Resource: "https://good.example/mcp", TokenURL: "https://idp.good.example/token", Client: Client{ID: "c"},
		AccessToken: "SECRET-USER-TOKEN", Obtained: time.Now()}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(other.URL + "/mcp")
	hc, err := remote.NewHTTPClient(remote.ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: []string{u.Host}, Server: "foo"})
	if err != nil {
		t.Fatal(err)
	}
	c := remote.New(remote.Options{URL: u, Server: "foo", HTTP: hc, Auth: m.Authorizer(1000, "foo", u.String(), "", nil, ActorClaims{}, hc),
		MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	lines := make(chan string, 4)
	go func() {
		b, _ := io.ReadAll(c.Out())
		lines <- string(b)
	}()
	if _, err := c.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if auth := <-got; auth != "" {
		t.Fatalf("the server now named foo received %q", auth)
	}
	_ = c.Close()
	out := <-lines
	if want := "sign-in was made for another url of foo"; !strings.Contains(out, want) {
		t.Fatalf("answer %q lacks %q", out, want)
	}
}
