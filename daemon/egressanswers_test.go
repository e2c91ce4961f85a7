package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/bpf/egress"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

// TestNetDeniedExplainsARefusedAnswer: a connection denied because the
// address is a DNS answer egress refuses (DNS rebinding) says so, with the
// entry and the name, in its record; other denials keep the plain rule.
func TestNetDeniedExplainsARefusedAnswer(t *testing.T) {
	tests := []struct {
		name string
		addr string
		want string // a part of the record's rule
	}{
		{"the refused answer", "127.0.0.1:443", `egress "api.vendor.test:443": api.vendor.test resolved to 127.0.0.1, refused: 127.0.0.0/8, loopback`},
		{"the refused answer, IPv4-mapped", "[::ffff:127.0.0.1]:443", "api.vendor.test resolved to 127.0.0.1"},
		{"another address", "127.0.0.2:443", "not in egress allow-list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newKernelFixture(t, &config.Server{Egress: []string{"public:80", "api.vendor.test:443"}}, audit.Options{})
			answer := egress.Rule{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Ports: []uint16{443}, Index: 1, Answer: true, Name: "api.vendor.test"}
			_, refused := egress.PublicAnswers([]egress.Rule{answer}, nil)
			f.s.setRefusedAnswers(refused)
			f.d.onKernelEvent(bpf.Event{Cgroup: testCgroup, Kind: bpf.KindNetDenied, Addr: netip.MustParseAddrPort(tt.addr), Proto: 6, Tgid: 42, Comm: "node"})
			recs := f.written(t)
			if len(recs) != 1 || recs[0]["type"] != "net.denied" {
				t.Fatalf("records %v, want one net.denied", recs)
			}
			if rule, _ := recs[0]["rule"].(string); !strings.Contains(rule, tt.want) {
				t.Fatalf("rule %q, want it to say %q", rule, tt.want)
			}
		})
	}
}
