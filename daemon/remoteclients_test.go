package daemon

import (
	"testing"

	"github.com/mcpcage/mcpcage/config"
)

// TestRemoteClientsByDefinition: one HTTP client for every look-up of the
// same definition (a user's own server is a new *config.Server at each
// one, and a client per look-up kept its idle connections open for
// each), another for a definition that differs in what the client is
// made of.
func TestRemoteClientsByDefinition(t *testing.T) {
	def := func(hosts ...string) *config.Server {
		srv := &config.Server{Name: "tracker"}
		srv.URL, srv.Hosts = "https://tracker.example/mcp", hosts
		return srv
	}
	var rc remoteClients
	get := func(srv *config.Server, dns ...string) any {
		t.Helper()
		c, err := rc.get(srv, dns, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := get(def())
	for _, tc := range []struct {
		name string
		srv  *config.Server
		dns  []string
		same bool
	}{
		{"the same definition looked up again", def(), nil, true},
		{"another host", def("auth.example"), nil, false},
		{"other dns_servers", def(), []string{"192.0.2.53"}, false},
	} {
		if got := get(tc.srv, tc.dns...); (got == first) != tc.same {
			t.Errorf("%s: the same client %v, want %v", tc.name, got == first, tc.same)
		}
	}
}
