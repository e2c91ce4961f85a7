package daemon

import (
	"fmt"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/consent"
)

// A server that says its list changed after every list keeps the client
// listing: a session records each list once per content, counts the
// repeats, and records at most maxListRecords different lists.
func TestListsAreRecordedOncePerContent(t *testing.T) {
	tests := []struct {
		name       string
		lists      []string // the tool each list holds
		records    int
		repeated   int64
		unrecorded int64
	}{
		{"the same list again and again", []string{"get_a", "get_a", "get_a", "get_a", "get_a"}, 1, 4, 0},
		{"two lists in turn", []string{"get_a", "get_b", "get_a", "get_b", "get_a", "get_b"}, 2, 4, 0},
		{"a new list every time", func() []string {
			out := make([]string, maxListRecords+10)
			for i := range out {
				out[i] = fmt.Sprintf("get_%04d", i)
			}
			return out
		}(), maxListRecords, 0, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDaemon(t, policyConfig)
			written := recordsOf(t, d)
			p := testPolicy(d, "gh", "cd", false)
			for _, tool := range tt.lists {
				e, msg := peek(t, toolsList("d", tool))
				p.FromServer(e, msg, "tools/list")
			}
			repeated, unrecorded := p.s.lists.counts()
			records := 0
			for _, r := range written() {
				if r["type"] == "tools.list" {
					records++
				}
			}
			if records != tt.records || repeated != tt.repeated || unrecorded != tt.unrecorded {
				t.Fatalf("%d tools.list records, %d repeated, %d unrecorded; want %d, %d, %d",
					records, repeated, unrecorded, tt.records, tt.repeated, tt.unrecorded)
			}
		})
	}
}

// No two lists share a digest: names are length-prefixed, and the kind,
// the names shown and the names hidden are each apart.
func TestListDigestsAreDistinct(t *testing.T) {
	lists := []struct {
		kind          string
		shown, hidden []string
	}{
		{"tool", []string{"ab"}, nil},
		{"tool", []string{"a", "b"}, nil},
		{"tool", []string{"a"}, []string{"b"}},
		{"tool", nil, []string{"a", "b"}},
		{"tool", []string{"b", "a"}, nil},
		{"resource", []string{"ab"}, nil},
		{"tool", []string{""}, nil},
		{"tool", nil, nil},
	}
	seen := map[[32]byte]int{}
	for i, l := range lists {
		d := listDigest(consent.Kind(l.kind), l.shown, l.hidden)
		if j, ok := seen[d]; ok {
			t.Fatalf("lists %d and %d share a digest: %+v, %+v", j, i, lists[j], l)
		}
		seen[d] = i
	}
}
