package egress

import (
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
		public bool
		err    string
	}{
		{in: "public:443", port: 443, public: true},
		{in: "PUBLIC:*", any: true, public: true},
		{in: "[public]:443", err: "not an address"},
		{in: "public.example.com:443", host: "public.example.com", port: 443},
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
			if e.Host != tt.host || e.Port != tt.port || e.Any != tt.any || e.Public != tt.public {
				t.Errorf("got %+v", e)
			}
		})
	}
}
