package api

import (
	"strings"
	"testing"
)

func TestRequestOversized(t *testing.T) {
	long := strings.Repeat("x", MaxIdentifier+1)
	tests := []struct {
		name      string
		req       Request
		wantField string
	}{
		{"short names", Request{Server: "github", Agent: "script:/" + strings.Repeat("d/", 2000) + "agent.js"}, ""},
		{"a long server name", Request{Server: long}, "server"},
		{"a long agent", Request{Agent: long}, "agent"},
		{"a long session", Request{Session: long}, "session"},
		{"a long secret is not a name", Request{Name: "token", Secret: long}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			field, n := tt.req.Oversized()
			if field != tt.wantField || (field != "" && n != len(long)) {
				t.Fatalf("Oversized() = %q, %d; want %q", field, n, tt.wantField)
			}
		})
	}
}
