package request

import (
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

func TestListenResources(t *testing.T) {
	many := `[` + func() string {
		s := ""
		for i := range MaxListenResources + 1 {
			if i > 0 {
				s += ","
			}
			s += `"file:///x"`
		}
		return s
	}() + `]`
	tests := []struct {
		name, params string
		want         []string
		err          error // nil: none
	}{
		{"no params", ``, nil, nil},
		{"list changes only", `{"notifications":{"toolsListChanged":true}}`, nil, nil},
		{"two resources", `{"notifications":{"resourcesListChanged":true,"resourceSubscriptions":["file:///etc/shadow","notes://1"]}}`, []string{"file:///etc/shadow", "notes://1"}, nil},
		{"with _meta", `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"notifications":{"resourceSubscriptions":["a://b"]}}`, []string{"a://b"}, nil},
		{"the list twice", `{"notifications":{"resourceSubscriptions":["a://ok"],"resourceSubscriptions":["file:///etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"the list in another case", `{"notifications":{"ResourceSubscriptions":["file:///etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"the list's name escaped", `{"notifications":{"resource\u0053ubscriptions":["file:///etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"notifications twice", `{"notifications":{},"notifications":{"resourceSubscriptions":["file:///etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"the list in snake case (a server may read it as an alias)", `{"notifications":{"resource_subscriptions":["file:///etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"a URI the server's SDK normalizes", `{"notifications":{"resourceSubscriptions":["file:///work/x","file:///work/../etc/shadow"]}}`, nil, wire.ErrAmbiguous},
		{"not an array", `{"notifications":{"resourceSubscriptions":"file:///etc/shadow"}}`, nil, ErrMalformed},
		{"a number inside", `{"notifications":{"resourceSubscriptions":[1]}}`, nil, ErrMalformed},
		{"an empty URI", `{"notifications":{"resourceSubscriptions":[""]}}`, nil, ErrMalformed},
		{"notifications not an object", `{"notifications":["file:///etc/shadow"]}`, nil, ErrMalformed},
		{"too many", `{"notifications":{"resourceSubscriptions":` + many + `}}`, nil, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ListenResources([]byte(tt.params))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ListenResources(%s) = %q, %v; want %v", tt.params, got, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ListenResources(%s) = %q, %v; want %q", tt.params, got, err, tt.want)
			}
		})
	}
}

// TestListenCountsBeforeDecoding: a list of resources to watch is counted
// before it is decoded (found by a red-team helper: 60 MiB of numbers
// took 2.2 GiB before the length was checked).
func TestListenCountsBeforeDecoding(t *testing.T) {
	params := []byte(`{"notifications":{"resourceSubscriptions":[` + strings.Repeat("1.5,", 2<<20) + `1.5]}}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ListenResources(params)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a list of 2 million: %v, want it refused for its length", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("refusing it allocated %d bytes", alloc)
	}
}
