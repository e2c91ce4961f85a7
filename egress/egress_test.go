package egress

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in     string
		prefix string
		host   string
		port   uint16
		any    bool
		err    string
	}{
		{in: "10.0.0.0/8:443", prefix: "10.0.0.0/8", port: 443},
		{in: "10.1.2.3/8:443", prefix: "10.0.0.0/8", port: 443},
		{in: "127.0.0.1:*", prefix: "127.0.0.1/32", any: true},
		{in: "[::1]:8080", prefix: "::1/128", port: 8080},
		{in: "[2001:db8::/32]:*", prefix: "2001:db8::/32", any: true},
		{in: "api.GitHub.com:443", host: "api.github.com", port: 443},
		{in: "localhost:80", host: "localhost", port: 80},
		{in: "::1:80", err: "brackets"},
		{in: "10.0.0.0/8", err: "want TARGET:PORT"},
		{in: "host:0", err: "port must be"},
		{in: "host:70000", err: "port must be"},
		{in: "host:", err: "want TARGET:PORT"},
		{in: "bad_host!:80", err: "not an address"},
		{in: "10.0.0.0/33:80", err: "egress"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, err := Parse(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.prefix != "" && e.Prefix != netip.MustParsePrefix(tt.prefix) {
				t.Errorf("prefix = %v, want %s", e.Prefix, tt.prefix)
			}
			if e.Host != tt.host || e.Port != tt.port || e.Any != tt.any {
				t.Errorf("got %+v", e)
			}
		})
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestResolve(t *testing.T) {
	entries, err := ParseAll([]string{"api.example.com:443", "10.0.0.0/8:*"})
	if err != nil {
		t.Fatal(err)
	}
	r := fakeResolver{"api.example.com": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	rules, err := Resolve(context.Background(), r, entries)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 3 || rules[0].Prefix.String() != "192.0.2.1/32" || rules[1].Prefix.String() != "2001:db8::1/128" ||
		rules[0].Ports[0] != 443 || rules[2].Ports != nil || rules[2].Index != 1 {
		t.Fatalf("rules = %+v", rules)
	}
	if _, err := Resolve(context.Background(), r, []Entry{{Raw: "x:1", Host: "nowhere.example", Port: 1}}); err == nil || !strings.Contains(err.Error(), "nowhere.example") {
		t.Fatalf("unresolvable: %v", err)
	}
}
