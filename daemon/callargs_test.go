package daemon

import (
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/request"
)

// TestRequestDigestIsKeyed: the digest an "allow once" consent keeps of
// its request (api.Consent.Request, which administrators can list) was a
// plain SHA-256 of the method, target and arguments, so a short password
// in them could be found by hashing guesses (found by a review of the
// keyed args_digest). It is keyed with the delegating user's digester
// now: not the plain digest, another for another user, the same for the
// same request.
func TestRequestDigestIsKeyed(t *testing.T) {
	for _, tc := range []struct {
		name, params string
	}{
		{"decoded", `{"name":"login","arguments":{"password":"1234"}}`},
		{"unread", `{"name":"login","arguments":{"k":[` + strings.Repeat(`1,`, request.MaxArgumentValues+1) + `1],"password":"1234"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := request.Read("tools/call", []byte(tc.params), nil)
			if err != nil {
				t.Fatal(err)
			}
			a := argsOf(tg)
			alice, bob := testDigests.ForUser(1000), testDigests.ForUser(1001)
			got := a.requestDigest(alice, "tools/call", "tool", "login")
			if plain := ask.RequestDigest("tools/call", "tool", "login", tg.Args); strings.Contains(got, plain) {
				t.Fatalf("the request digest %s holds the plain one %s", got, plain)
			}
			if a.requestDigest(bob, "tools/call", "tool", "login") == got {
				t.Fatal("two users' digests of one request are equal")
			}
			if a.requestDigest(alice, "tools/call", "tool", "login") != got {
				t.Fatal("one request's digest changed")
			}
		})
	}
}
