package testenv

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Namespace is a network namespace joined to this one by a veth pair,
// made by NewNamespace.
type Namespace struct {
	Name string     // for ip netns (its file is /run/netns/Name)
	Peer string     // its side of the pair
	Here netip.Addr // this namespace's side's address
	Addr netip.Addr // its side's address
}

// NewNamespace makes a network namespace (ip netns) joined to this one
// by a veth pair with IPv6 addresses on a /64 of its own, names and
// prefix unique to this test process and tag (a few letters), and
// removes them when the test ends. It needs root and iproute2.
func NewNamespace(t *testing.T, tag string) Namespace {
	t.Helper()
	RequireRoot(t)
	_, err := exec.LookPath("ip")
	Require(t, err == nil, "ip (iproute2)")
	id := os.Getpid() % 100000
	ns, host, peer := fmt.Sprintf("mcpc-%s-%d", tag, id), fmt.Sprintf("mc%s%da", tag, id), fmt.Sprintf("mc%s%db", tag, id)
	var h uint16
	for _, c := range tag {
		h = h*31 + uint16(c)
	}
	prefix := fmt.Sprintf("fd00:%x:%x:%x", h, id>>16, id&0xffff)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	run("link", "set", peer, "netns", ns)
	run("addr", "add", prefix+"::1/64", "dev", host, "nodad")
	run("link", "set", host, "up")
	run("-n", ns, "addr", "add", prefix+"::2/64", "dev", peer, "nodad")
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")
	return Namespace{Name: ns, Peer: peer, Here: netip.MustParseAddr(prefix + "::1"), Addr: netip.MustParseAddr(prefix + "::2")}
}
