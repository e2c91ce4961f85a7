package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/remote"
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
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeCA := func(seed string) {
		t.Helper()
		if err := os.WriteFile(ca, testCAPEM(t, seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	withCA := func() *config.Server {
		srv := def()
		srv.CAFile = ca
		return srv
	}
	var rc remoteClients
	var getFor func(srv *config.Server, owner *remote.Owner, dns ...string) any
	get := func(srv *config.Server, dns ...string) any {
		t.Helper()
		return getFor(srv, nil, dns...)
	}
	getFor = func(srv *config.Server, owner *remote.Owner, dns ...string) any {
		t.Helper()
		c, err := rc.get(srv, owner, []uint32{0}, dns, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	writeCA("one")
	firstCA := get(withCA())
	if get(withCA()) != firstCA {
		t.Error("the same CA file gave another client")
	}
	writeCA("two") // the bundle rotated (and the config reloaded)
	if get(withCA()) == firstCA {
		t.Error("a rotated CA file kept the client that trusts the old one")
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
	// Users' own servers of one name and url: a client each (its
	// connections are checked against its owner).
	alice, bob := &remote.Owner{UID: 1000, GID: 1000}, &remote.Owner{UID: 1001, GID: 1001}
	if a := getFor(def(), alice); a == first || a == getFor(def(), bob) || a != getFor(def(), alice) {
		t.Error("users' own servers of the same definition share clients across owners, or with the administrator's")
	}
}

// testCAPEM is a self-signed CA certificate named after seed, as PEM.
func testCAPEM(t *testing.T, seed string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA " + seed}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
