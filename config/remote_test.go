package config

import (
	"net/url"
	"testing"
)

// TestRedactURL: what records and logs show of a url keeps no credential
// (found by a red-team helper: path keys, fragments and value-less
// query keys were shown).
func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/mcp"},
		{"https://user:pw@mcp.example.com/v1/mcp", "https://mcp.example.com/v1/mcp"},
		{"https://mcp.example.com/mcp?api_key=abc&x=1", "https://mcp.example.com/mcp?api_key=REDACTED&x=REDACTED"},
		{"https://actions.example.com/mcp/sk-ak-0123456789abcdef0123/sse", "https://actions.example.com/mcp/REDACTED/sse"},
		{"https://hooks.example.com/h/3f2b8c1e-9d4a-4b7e-8c2f-1a2b3c4d5e6f", "https://hooks.example.com/h/REDACTED"},
		{"https://mcp.example.com/mcp#access_token=SECRET123", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com/mcp?ghp_0123456789abcdefghij", "https://mcp.example.com/mcp?REDACTED=REDACTED"},
		{"https://mcp.example.com/projects/documentation/mcp", "https://mcp.example.com/projects/documentation/mcp"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := RedactURL(u); got != tt.want {
			t.Errorf("RedactURL(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
