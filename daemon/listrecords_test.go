package daemon

import (
	"fmt"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/consent"
)

// A server that says its list changed after every list keeps the client
// listing: a session records each list whole once per content, a list
// shown again after another as its digest (bounded), and counts the rest;
// past maxListRecords different lists of a kind, a list is still recorded
// while it shows a name never shown before.
func TestListsAreRecordedOncePerContent(t *testing.T) {
	many := func(n int, name func(i int) []string) [][]string {
		out := make([][]string, n)
		for i := range out {
			out[i] = name(i)
		}
		return out
	}
	type want struct {
		whole, again         int
		repeated, unrecorded int64
	}
	tests := []struct {
		name  string
		lists [][]string // the tools of each list
		want  want
	}{
		{"the same list again and again", many(5, func(int) []string { return []string{"get_a"} }), want{1, 0, 4, 0}},
		{"two lists in turn", many(6, func(i int) []string { return []string{[]string{"get_a", "get_b"}[i%2]} }), want{2, 4, 0, 0}},
		{"a list shown again after another, then again", [][]string{{"get_a"}, {"get_a", "get_evil"}, {"get_a"}, {"get_a"}}, want{2, 1, 1, 0}},
		{"the same names in another order, past the bound", many(maxListRecords+10, func(i int) []string {
			return []string{fmt.Sprintf("get_%03d", i%3), fmt.Sprintf("get_%03d", (i+1)%3), fmt.Sprintf("get_x%d", i/3)}
		}), want{maxListRecords + (maxListRecords+10)/3 - maxListRecords/3, 0, 0, 10 - (maxListRecords+10)/3 + maxListRecords/3}},
		{"past the bound, a new tool is recorded", append(many(maxListRecords, func(i int) []string {
			return []string{"get_a", fmt.Sprintf("get_%04d", i%2), fmt.Sprintf("get_y%d", i/2)}
		}),
			[]string{"get_a", "get_0000"}, []string{"get_a", "get_exfiltrate"}), want{maxListRecords + 1, 0, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDaemon(t, policyConfig)
			written := recordsOf(t, d)
			p := testPolicy(d, "gh", "cd", true) // observe: every tool is shown
			for _, tools := range tt.lists {
				e, msg := peek(t, toolsList("d", tools...))
				p.FromServer(e, msg, "tools/list")
			}
			var got want
			got.repeated, got.unrecorded = p.s.lists.counts()
			for _, r := range written() {
				switch {
				case r["type"] == "tools.list" && r["again"] == true:
					got.again++
				case r["type"] == "tools.list":
					got.whole++
				}
			}
			if got != tt.want {
				t.Fatalf("recorded whole, shown again, repeats counted, different lists counted: %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The bound on different lists is per kind: resource lists cannot spend
// the tools' records.
func TestListBoundIsPerKind(t *testing.T) {
	var l listRecords
	for i := range maxListRecords + 5 {
		l.admit(consent.KindResource, []string{fmt.Sprintf("file:///r%d", i%2)}, []string{fmt.Sprint(i)})
	}
	if how, _, _ := l.admit(consent.KindTool, []string{"get_a"}, nil); how != listWhole {
		t.Fatalf("a tools list after %d resource lists: %v, want it recorded whole", maxListRecords+5, how)
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
