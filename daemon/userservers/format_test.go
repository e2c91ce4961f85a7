package userservers

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/format2.json")

// servers are the definitions held by testdata/format1.json and
// testdata/format2.json.
var servers = map[string]Server{
	"fetch": {Command: []string{"mcp-server-fetch"}, Workdir: "/", Network: "host", Egress: []string{"0.0.0.0/0:443", "[::/0]:443"}},
	"notes": {Command: []string{"/usr/local/bin/notes-mcp", "--root", "/home/alice/notes"}, Env: map[string]string{"NOTES_TOKEN": "secret:notes"},
		Workdir: "/home/alice/notes", Network: "none",
		Mounts: []Mount{{Source: "/home/alice/notes", Target: "/home/alice/notes", Writable: true}, {Source: "/home/alice/ref", Target: "/ref"}}},
}

// TestFormat1 loads a file written by the store before format 2 (it
// stored config.Server as is), then rewrites it as format 2 on the next
// change.
func TestFormat1(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "format1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(1000), b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.load(1000)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(servers, got); diff != "" {
		t.Fatalf("format 1 read (-want +got):\n%s", diff)
	}
	notes, err := s.Get(1000, "notes")
	if err != nil || !notes.Mounts[0].Writable() || notes.Mounts[1].Writable() {
		t.Fatalf("Get notes = %+v, %v", notes, err)
	}
	if l, err := s.List(1000); err != nil || len(l) != 2 {
		t.Fatalf("List = %v, %v", l, err)
	}
	if _, err := s.Put(1000, "third", Server{Command: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(s.path(1000))
	if !strings.HasPrefix(string(b), "{\n  \"version\": 2,") {
		t.Fatalf("not rewritten as format 2:\n%s", b)
	}
	if got, err := s.load(1000); err != nil || len(got) != 3 || cmp.Diff(servers["notes"], got["notes"]) != "" {
		t.Fatalf("after the rewrite: %v, %v", got, err)
	}
}

// TestFormat2 pins the current format: a change that alters the bytes
// written is a new format version, never a silent one.
func TestFormat2(t *testing.T) {
	got, err := encode(servers)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "format2.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./daemon/userservers -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Fatalf("%s differs (-want +got):\n%s", path, diff)
	}
	back, err := decode(want)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(servers, back); diff != "" {
		t.Fatalf("format 2 read (-want +got):\n%s", diff)
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		names []string // nil: refused
	}{
		{"empty format 2", `{"version":2,"servers":{}}`, []string{}},
		{"format 2 without servers", `{"version":2}`, []string{}},
		{"empty format 1", `{}`, []string{}},
		{"format 1 server named version", `{"version":{"Command":["x"],"Memory":1}}`, []string{"version"}},
		{"format 1 with unknown keys", `{"a":{"Command":["x"],"Listen":["127.0.0.1:1"],"User":"root"}}`, []string{"a"}},
		{"future format", `{"version":3,"servers":{}}`, nil},
		{"format 1 server not an object", `{"a":1}`, nil},
		{"not JSON", `{"version":2,`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decode([]byte(tc.in))
			if tc.names == nil {
				if err == nil {
					t.Fatalf("decode accepted %s: %v", tc.in, m)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for n := range m {
				names = append(names, n)
			}
			if diff := cmp.Diff(tc.names, names); diff != "" {
				t.Fatalf("names (-want +got):\n%s", diff)
			}
		})
	}
}

// A format 1 file's keys a user could never set are not read: they were
// the daemon's defaults, which come from the daemon now.
func TestFormat1IgnoresDaemonKeys(t *testing.T) {
	m, err := decode([]byte(`{"a":{"Command":["x"],"User":"root","Seccomp":"unconfined","Memory":1,"ToolsAllow":["*"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := m["a"].Config("a")
	if err != nil {
		t.Fatal(err)
	}
	if srv.User != "" || srv.Seccomp != "default" || srv.ToolsAllow != nil {
		t.Fatalf("daemon keys read from the file: %+v", srv)
	}
}
