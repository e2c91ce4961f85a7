package egress

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/dnstest"
)

func TestLookupTTL(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Set("api.example.test", dnstest.Record{Addr: netip.MustParseAddr("192.0.2.1"), TTL: 300},
		dnstest.Record{Addr: netip.MustParseAddr("2001:db8::1"), TTL: 60})
	srv.Set("www.example.test", dnstest.Record{CNAME: "edge.example.test", TTL: 30})
	srv.Set("edge.example.test", dnstest.Record{Addr: netip.MustParseAddr("192.0.2.9"), TTL: 600})
	srv.Set("empty.example.test")
	srv.Set("git.corp.test", dnstest.Record{Addr: netip.MustParseAddr("10.1.2.3"), TTL: 60})
	srv.Set("evilcorp.test", dnstest.Record{Addr: netip.MustParseAddr("10.1.2.4"), TTL: 60})
	srv.Set("mcp.corp.test", dnstest.Record{CNAME: "tenant42.vendor.test", TTL: 30})
	srv.Set("tenant42.vendor.test", dnstest.Record{Addr: netip.MustParseAddr("127.0.0.1"), TTL: 600})
	srv.Set("wiki.corp.test", dnstest.Record{CNAME: "git.corp.test", TTL: 30})
	srv.Set("alias.example.test", dnstest.Record{CNAME: "git.corp.test", TTL: 30})
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("# comment\n192.0.2.50 static.example.test alias # trailing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, host string
		truncate   bool
		want       []Answer
		wantErr    error
	}{
		{"A and AAAA, each its own TTL", "api.example.test", false,
			[]Answer{{netip.MustParseAddr("192.0.2.1"), 300 * time.Second, false}, {netip.MustParseAddr("2001:db8::1"), 60 * time.Second, false}}, nil},
		{"CNAME chain: the smallest TTL", "WWW.example.test.", false, []Answer{{netip.MustParseAddr("192.0.2.9"), 30 * time.Second, false}}, nil},
		{"truncated over UDP: retried over TCP", "api.example.test", true,
			[]Answer{{netip.MustParseAddr("192.0.2.1"), 300 * time.Second, false}, {netip.MustParseAddr("2001:db8::1"), 60 * time.Second, false}}, nil},
		{"hosts file first, trusted", "static.example.test", false, []Answer{{netip.MustParseAddr("192.0.2.50"), HostsTTL, true}}, nil},
		{"a private domain's names: trusted", "git.corp.test", false, []Answer{{netip.MustParseAddr("10.1.2.3"), 60 * time.Second, true}}, nil},
		{"a name that only ends like a private domain: not", "evilcorp.test", false, []Answer{{netip.MustParseAddr("10.1.2.4"), 60 * time.Second, false}}, nil},
		{"a private domain's alias of another domain's name: not", "mcp.corp.test", false, []Answer{{netip.MustParseAddr("127.0.0.1"), 30 * time.Second, false}}, nil},
		{"a private domain's alias within private domains: trusted", "wiki.corp.test", false, []Answer{{netip.MustParseAddr("10.1.2.3"), 30 * time.Second, true}}, nil},
		{"another domain's alias of a private name: not", "alias.example.test", false, []Answer{{netip.MustParseAddr("10.1.2.3"), 30 * time.Second, false}}, nil},
		{"NXDOMAIN", "nowhere.example.test", false, nil, ErrNoSuchHost},
		{"no addresses", "empty.example.test", false, nil, ErrNoSuchHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Truncate(tt.truncate)
			r := &DNS{Servers: []string{srv.Addr}, HostsFile: hosts, PrivateDomains: []string{"corp.test"}}
			got, err := r.LookupTTL(context.Background(), tt.host)
			if !errors.Is(err, tt.wantErr) || !slices.Equal(got, tt.want) {
				t.Fatalf("LookupTTL(%s) = %v, %v; want %v, %v", tt.host, got, err, tt.want, tt.wantErr)
			}
		})
	}
	t.Run("localhost without a hosts entry", func(t *testing.T) {
		r := &DNS{Servers: []string{srv.Addr}, HostsFile: "-"}
		got, err := r.LookupTTL(context.Background(), "db.localhost")
		want := []Answer{{netip.MustParseAddr("127.0.0.1"), HostsTTL, true}, {netip.IPv6Loopback(), HostsTTL, true}}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
	})
	t.Run("a dead server, then a live one", func(t *testing.T) {
		r := &DNS{Servers: []string{"127.0.0.1:1", srv.Addr}, HostsFile: "-", Timeout: 500 * time.Millisecond}
		if got, err := r.LookupTTL(context.Background(), "edge.example.test"); err != nil || len(got) != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("no server answers", func(t *testing.T) {
		r := &DNS{Servers: []string{"127.0.0.1:1"}, HostsFile: "-", Timeout: 500 * time.Millisecond}
		if _, err := r.LookupTTL(context.Background(), "edge.example.test"); err == nil || errors.Is(err, ErrNoSuchHost) {
			t.Fatalf("err = %v, want a server error", err)
		}
	})
}

func TestResolvConfServers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("search example\nnameserver 10.0.0.2\nnameserver ::1\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := resolvConfServers(p); !slices.Equal(got, []string{"10.0.0.2:53", "[::1]:53"}) {
		t.Fatalf("servers = %v", got)
	}
	if got := resolvConfServers(filepath.Join(t.TempDir(), "none")); !slices.Equal(got, []string{"127.0.0.1:53"}) {
		t.Fatalf("servers without resolv.conf = %v", got)
	}
}

// TestDNSRules: a host-network session may reach port 53 of loopback and
// of every nameserver the host's resolv.conf names, and nothing more.
func TestDNSRules(t *testing.T) {
	loopback := []string{"127.0.0.0/8", "::1/128"}
	tests := []struct {
		name, conf string
		want       []string
	}{
		{"the network's resolver", "nameserver 10.255.255.53\n", append(loopback, "10.255.255.53/32")},
		{"systemd-resolved", "nameserver 127.0.0.53\noptions edns0 trust-ad\n", loopback},
		{"several, IPv6 link-local with a zone, IPv4-mapped", "search lan\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver ::ffff:10.0.0.2\nnameserver ::1\n",
			append(loopback, "192.168.1.1/32", "fe80::1/128", "10.0.0.2/32")},
		{"only the first three, as the C library", "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
			append(loopback, "10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32")},
		{"garbage and comments", "# nameserver 10.9.9.9\nnameserver not-an-address\nnameserver\n", loopback},
		{"no file", "", loopback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resolv.conf")
			if tt.conf != "" {
				if err := os.WriteFile(p, []byte(tt.conf), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			rules := DNSRules(p)
			if got := prefixes(rules); !slices.Equal(got, tt.want) {
				t.Fatalf("prefixes = %v, want %v", got, tt.want)
			}
			for _, r := range rules {
				if !slices.Equal(r.Ports, []uint16{53}) || r.Index != -1 {
					t.Fatalf("rule %+v: want port 53 only, built-in (index -1)", r)
				}
			}
		})
	}
}

// fakeLookup answers from a table a test changes between calls.
type fakeLookup struct {
	answers map[string][]Answer
	err     error
	calls   int
}

func (f *fakeLookup) lookup(_ context.Context, host string) ([]Answer, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if a, ok := f.answers[host]; ok {
		return a, nil
	}
	return nil, ErrNoSuchHost
}

func prefixes(rules []Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.Prefix.String())
	}
	return out
}

func TestTracker(t *testing.T) {
	entries, err := ParseAll([]string{"api.example.test:443", "10.0.0.0/8:*"})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	f := &fakeLookup{answers: map[string][]Answer{"api.example.test": {{a1, 10 * time.Second, false}, {netip.MustParseAddr("2001:db8::1"), 20 * time.Second, false}}}}
	tr := NewTracker(entries, f.lookup)
	t0 := time.Unix(1000, 0)
	ctx := context.Background()
	step := func(at time.Duration, want []string, wantNext time.Duration) {
		t.Helper()
		rules, next, err := tr.Refresh(ctx, t0.Add(at))
		if got := prefixes(rules); !slices.Equal(got, want) {
			t.Fatalf("at +%v: rules %v, want %v (err %v)", at, got, want, err)
		}
		if next != t0.Add(wantNext) {
			t.Fatalf("at +%v: next refresh at +%v, want +%v", at, next.Sub(t0), wantNext)
		}
	}
	step(0, []string{"192.0.2.1/32", "2001:db8::1/128", "10.0.0.0/8"}, 10*time.Second)
	if rules, _, _ := tr.Refresh(ctx, t0); rules[0].Ports[0] != 443 || rules[2].Ports != nil || rules[2].Index != 1 {
		t.Fatalf("ports and indexes: %+v", rules)
	}
	// A DNS server's answers are marked (PublicAnswers checks them), the
	// entry's range is not.
	if rules, _, _ := tr.Refresh(ctx, t0); !rules[0].Answer || rules[0].Name != "api.example.test" || rules[2].Answer {
		t.Fatalf("answers marked: %+v", rules)
	}
	if f.calls != 1 {
		t.Fatalf("%d look-ups before any TTL ran out, want 1", f.calls)
	}
	// At +10 s the A record expires: the name now says a2; a1 is gone,
	// the AAAA record keeps its own expiry.
	f.answers["api.example.test"] = []Answer{{a2, 0, true}}
	step(10*time.Second, []string{"192.0.2.2/32", "2001:db8::1/128", "10.0.0.0/8"}, 11*time.Second) // TTL 0 counts as MinTTL
	// a2 came from the host's files (trusted): not an answer to check.
	if rules, _, _ := tr.Refresh(ctx, t0.Add(10*time.Second)); rules[0].Answer || !rules[1].Answer {
		t.Fatalf("trusted answer marked: %+v", rules)
	}
	// The servers stop answering: the last answer stays (serve stale), retried every RetryAfter.
	f.err = errors.New("i/o timeout")
	rules, next, err := tr.Refresh(ctx, t0.Add(11*time.Second))
	if err == nil || !slices.Contains(prefixes(rules), "192.0.2.2/32") || next != t0.Add(16*time.Second) {
		t.Fatalf("servers down: rules %v, next +%v, err %v", prefixes(rules), next.Sub(t0), err)
	}
	// The name is gone (NXDOMAIN): its addresses go as they expire.
	f.err = ErrNoSuchHost
	step(16*time.Second, []string{"2001:db8::1/128", "10.0.0.0/8"}, 20*time.Second)
	step(21*time.Second, []string{"10.0.0.0/8"}, 26*time.Second)

	// The first look-up failing is an error naming the entry.
	if _, _, err := NewTracker(entries, (&fakeLookup{}).lookup).Refresh(ctx, t0); err == nil || !errors.Is(err, ErrNoSuchHost) {
		t.Fatalf("unresolvable at start: %v", err)
	}
	// Literal entries only: nothing to refresh.
	lit, _ := ParseAll([]string{"127.0.0.1:*"})
	if rules, next, err := NewTracker(lit, nil).Refresh(ctx, t0); err != nil || len(rules) != 1 || !next.IsZero() {
		t.Fatalf("literal entries: %v %v %v", rules, next, err)
	}
}

// A name's zone chooses its answers: one answer with thousands of
// addresses, or answers that change at every look-up (one record with the
// shortest TTL makes the tracker ask again each second, the others stay an
// hour), grew a session's rules without bound, each an entry of the
// kernel's shared egress tries. At most MaxAddrsPerName are kept: the
// latest answer's first, then those expiring last.
func TestTrackerBoundsAddressesPerName(t *testing.T) {
	entries, err := ParseAll([]string{"many.example.test:443"})
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{44, 1, byte(i >> 8), byte(i)}) }
	answer := func(from, n int, ttl time.Duration) []Answer {
		var out []Answer
		for i := from; i < from+n; i++ {
			out = append(out, Answer{Addr: addr(i), TTL: ttl})
		}
		return out
	}
	t0 := time.Unix(1000, 0)
	ctx := context.Background()
	tests := []struct {
		name        string
		answers     [][]Answer // one per look-up, a second apart
		wantKept    []netip.Addr
		wantDropped int
	}{
		{name: "one answer within the bound", answers: [][]Answer{answer(0, 8, time.Hour)}, wantDropped: 0},
		{name: "one huge answer", answers: [][]Answer{answer(0, 300, time.Hour)}, wantKept: []netip.Addr{addr(0), addr(63)}, wantDropped: 300 - MaxAddrsPerName},
		{name: "the same address many times in one answer", answers: [][]Answer{append(answer(0, 1, time.Hour), answer(0, 1, time.Hour)[0], answer(0, 1, time.Hour)[0])}, wantDropped: 0},
		{
			name: "answers that change at every look-up",
			answers: func() [][]Answer {
				var out [][]Answer
				for i := range 20 {
					a := answer(1000+i*10, 10, time.Hour)
					a[0].TTL = time.Second // the name is asked again a second later
					out = append(out, a)
				}
				return out
			}(),
			wantKept:    []netip.Addr{addr(1000 + 19*10), addr(1000 + 19*10 + 9)}, // the latest answer is whole
			wantDropped: 20*10 - MaxAddrsPerName - 19,                             // and the 19 one-second records expired
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeLookup{answers: map[string][]Answer{}}
			tr := NewTracker(entries, f.lookup)
			var rules []Rule
			for i, a := range tt.answers {
				f.answers["many.example.test"] = a
				var err error
				rules, _, err = tr.Refresh(ctx, t0.Add(time.Duration(i)*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				if len(rules) > MaxAddrsPerName {
					t.Fatalf("after look-up %d: %d addresses kept, want at most %d", i+1, len(rules), MaxAddrsPerName)
				}
			}
			if f.calls != len(tt.answers) {
				t.Fatalf("%d look-ups, want %d", f.calls, len(tt.answers))
			}
			kept := map[netip.Addr]bool{}
			for _, r := range rules {
				kept[r.Prefix.Addr()] = true
			}
			for _, a := range tt.wantKept {
				if !kept[a] {
					t.Errorf("%s not kept (kept %d)", a, len(kept))
				}
			}
			if tr.Dropped() != tt.wantDropped {
				t.Errorf("Dropped() = %d, want %d", tr.Dropped(), tt.wantDropped)
			}
		})
	}
}
