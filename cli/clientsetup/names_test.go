package clientsetup

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestServerNamesUnique: entries whose names make the same server name
// get servers of their own; a name in use is never taken.
func TestServerNamesUnique(t *testing.T) {
	long := strings.Repeat("l", 70)
	for _, tc := range []struct {
		name    string
		entries []string // in the file's order, each running "cmd-ENTRY"
		inUse   []string
		want    map[string]string // entry -> server
	}{
		{"one name", []string{"a b"}, nil, map[string]string{"a b": "cursor-a-b"}},
		{"same after replacing", []string{"a b", "a-b", "a/b"}, nil,
			map[string]string{"a b": "cursor-a-b", "a-b": "cursor-a-b-2", "a/b": "cursor-a-b-3"}},
		{"same once cut at 63 bytes", []string{long + "1", long + "2"}, nil,
			map[string]string{long + "1": "cursor-" + long[:56], long + "2": "cursor-" + long[:54] + "-2"}},
		{"a suffixed name another entry makes", []string{"a", "a ", "a-2"}, nil,
			map[string]string{"a": "cursor-a", "a ": "cursor-a-2", "a-2": "cursor-a-2-2"}},
		{"a name of the user's", []string{"x"}, []string{"cursor-x"}, map[string]string{"x": "cursor-x-2"}},
		{"names of the user's and of the file", []string{"x", "x "}, []string{"cursor-x", "cursor-x-3"},
			map[string]string{"x": "cursor-x-2", "x ": "cursor-x-4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members := make([]string, len(tc.entries))
			for i, e := range tc.entries {
				members[i] = quote(e) + `:{"command":` + quote("cmd-"+e) + `}`
			}
			before := `{"mcpServers":{` + strings.Join(members, ",") + `}}`
			o := testOptions()
			o.InUse = func(n string) bool { return slices.Contains(tc.inUse, n) }
			res, err := Rewrite(Clients["cursor"], []byte(before), o)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, s := range res.Imported {
				got[s.Entry] = s.Name
				if len(s.Name) > 63 || s.Command[0] != "cmd-"+s.Entry {
					t.Errorf("entry %q: server %s (%d bytes) runs %v", s.Entry, s.Name, len(s.Name), s.Command)
				}
				if renamed := strings.Contains(strings.Join(s.Warnings, "\n"), "runs as server "+s.Name); renamed != (s.Name != ServerName("cursor", s.Entry)) {
					t.Errorf("entry %q as %s: warnings %q", s.Entry, s.Name, s.Warnings)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("servers (-want +got):\n%s", diff)
			}
			// Each entry runs its own server.
			var after struct {
				MCPServers map[string]struct{ Args []string } `json:"mcpServers"`
			}
			if err := json.Unmarshal(res.Config, &after); err != nil {
				t.Fatal(err)
			}
			for e, srv := range tc.want {
				if args := after.MCPServers[e].Args; !slices.Equal(args, []string{"run", srv}) {
					t.Errorf("entry %q runs %v, want run %s", e, args, srv)
				}
			}
		})
	}
	o := testOptions()
	o.InUse = func(string) bool { return true }
	if _, err := Rewrite(Clients["cursor"], []byte(`{"mcpServers":{"x":{"command":"y"}}}`), o); err == nil || !strings.Contains(err.Error(), "no free server name") {
		t.Fatalf("every name in use: %v", err)
	}
}

// TestCagedThroughPath: an entry that runs `mcpcage run NAME` through
// another mcpcage than setup's (a bare name the client looks up in its
// PATH) runs setup's instead, with everything else kept.
func TestCagedThroughPath(t *testing.T) {
	for _, tc := range []struct {
		name   string
		only   []string
		entry  string
		want   string // the entry after; "" = as it was
		caged  bool   // reported as already caged
		reason string // in the note
		note   string // left as it is, with this note
	}{
		{name: "a bare name", entry: `{"command":"mcpcage","args":["run","whatever"]}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","whatever"]}`, reason: "looks up in its PATH"},
		{name: "another path", entry: `{"command":"/home/alice/bin/mcpcage","args":["run","x"]}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, reason: "another mcpcage"},
		{name: "everything else kept", entry: `{"type":"stdio", "command" : "mcpcage","args":["run","x"],"env":{"LANG":"C"}}`,
			want: `{"type":"stdio", "command" : "/usr/bin/mcpcage","args":["run","x"],"env":{"LANG":"C"}}`},
		// A socket of the entry's own points the shim elsewhere than
		// mcpcaged: written anew (a red-team review found them trusted).
		{name: "setup's own with --socket", entry: `{"command":"/usr/bin/mcpcage","args":["run","x","--socket","/tmp/fake.sock"]}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, reason: "socket of its own"},
		{name: "setup's own with --socket= first", entry: `{"command":"/usr/bin/mcpcage","args":["--socket=/tmp/fake.sock","run","x"]}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, reason: "the socket dropped"},
		{name: "setup's own with MCPCAGE_SOCKET", entry: `{"command":"/usr/bin/mcpcage","args":["run","x"],"env":{"MCPCAGE_SOCKET":"/tmp/fake.sock"}}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, reason: "socket of its own"},
		{name: "through PATH with MCPCAGE_SOCKET", entry: `{"type":"stdio","command":"mcpcage","args":["run","x"],"env":{"MCPCAGE_SOCKET":"/run/s"}}`,
			want: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, reason: "socket of its own"},
		{name: "a flag setup does not know", entry: `{"command":"/usr/bin/mcpcage","args":["run","--verbose","x"]}`, note: "NOT through mcpcage"},
		{name: "two names", entry: `{"command":"mcpcage","args":["run","x","y"]}`, note: "not `mcpcage run NAME`"},
		{name: "setup's own", entry: `{"command":"/usr/bin/mcpcage","args":["run","x"]}`, caged: true},
		{name: "not selected", only: []string{"other"}, entry: `{"command":"mcpcage","args":["run","x"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := `{"mcpServers":{"x":` + tc.entry + `}}`
			o := testOptions()
			o.Mcpcage, o.Only = "/usr/bin/mcpcage", tc.only
			res, err := Rewrite(Clients["cursor"], []byte(before), o)
			if err != nil {
				t.Fatal(err)
			}
			want := before
			if tc.want != "" {
				want = `{"mcpServers":{"x":` + tc.want + `}}`
			}
			if diff := cmp.Diff(want, string(res.Config)); diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
			if len(res.Imported) != 0 || (len(res.Unchanged) == 1) != tc.caged || (len(res.Repointed) == 1) != (tc.want != "") ||
				(tc.reason != "" && !strings.Contains(res.Repointed[0], tc.reason)) || (tc.note != "") != (len(res.Notes) == 1) ||
				(tc.note != "" && !strings.Contains(res.Notes[0], tc.note)) {
				t.Fatalf("imported %v, unchanged %v, repointed %q, notes %q", res.Imported, res.Unchanged, res.Repointed, res.Notes)
			}
			if again, err := Rewrite(Clients["cursor"], res.Config, o); err != nil || again.Changed(res.Config) {
				t.Fatalf("a second run changed the file: %v", err)
			}
		})
	}
	if _, err := Rewrite(Clients["cursor"], []byte(`{}`), Options{Mcpcage: "mcpcage"}); err == nil {
		t.Fatal("a relative mcpcage path was accepted")
	}
}
