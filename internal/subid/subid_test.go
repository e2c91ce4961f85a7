package subid

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Range
	}{
		{"one range", "alice:100000:65536\n", []Range{{"alice", 100000, 65536}}},
		{"numeric owner, no final newline", "1000:165536:65536", []Range{{"1000", 165536, 65536}}},
		{"spaces around a line", "  bob:1:2  \n", []Range{{"bob", 1, 2}}},
		{"several, in order", "a:10:1\nb:20:2\na:30:3\n", []Range{{"a", 10, 1}, {"b", 20, 2}, {"a", 30, 3}}},
		{"the last uid", "a:4294967295:1", []Range{{"a", 4294967295, 1}}},
		{"malformed lines are left out", strings.Join([]string{
			"",
			"# comment:1:2",
			"a:1",            // two fields
			"a:1:2:3",        // four
			":1:2",           // no owner
			"a:x:2",          // start not a number
			"a:1:-2",         // count negative
			"a:1:0",          // empty range
			"a:4294967295:2", // past the last uid
			"a:4294967296:1", // start past it
			"ok:5:5",
		}, "\n"), []Range{{"ok", 5, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Parse([]byte(tt.in))); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestRangeContains(t *testing.T) {
	r := Range{Owner: "a", Start: 100, Count: 10}
	for _, tt := range []struct {
		uid  uint32
		want bool
	}{{99, false}, {100, true}, {109, true}, {110, false}} {
		if got := r.Contains(tt.uid); got != tt.want {
			t.Errorf("Contains(%d) = %v, want %v", tt.uid, got, tt.want)
		}
	}
	top := Range{Owner: "a", Start: 1<<32 - 1, Count: 1}
	if !top.Contains(1<<32 - 1) {
		t.Error("the last uid is not in a range that ends there")
	}
}

// fakeUsers is a user database: name -> uid.
var fakeUsers = map[string]string{"alice": "1000", "bob": "1001", "carol": "100005"}

func fakeTable(t *testing.T, content string) *Table {
	t.Helper()
	path := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tb := New(path)
	tb.lookupName = func(name string) (*user.User, error) {
		if uid, ok := fakeUsers[name]; ok {
			return &user.User{Username: name, Uid: uid}, nil
		}
		return nil, user.UnknownUserError(name)
	}
	tb.lookupID = func(uid string) (*user.User, error) {
		for name, id := range fakeUsers {
			if id == uid {
				return &user.User{Username: name, Uid: uid}, nil
			}
		}
		return nil, user.UnknownUserIdError(0)
	}
	return tb
}

func TestOwnerOf(t *testing.T) {
	tb := fakeTable(t, strings.Join([]string{
		"alice:100000:65536",
		"1001:200000:10",   // bob, by uid
		"2002:300000:10",   // a uid the database does not know
		"ghost:400000:10",  // a name it does not know
		"ghost:500000:10",  // the first line of a uid that resolves is not the first
		"alice:500000:10",  //   line holding it
		"bob:100000:65536", // overlaps alice's: the first line wins
	}, "\n"))
	tests := []struct {
		name   string
		uid    uint32
		want   Owner
		wantOK bool
	}{
		{"a subordinate uid", 100003, Owner{1000, "alice"}, true},
		{"the first of a range", 100000, Owner{1000, "alice"}, true},
		{"the last of a range", 165535, Owner{1000, "alice"}, true},
		{"past the range", 165536, Owner{}, false},
		{"an account of its own in the range", 100005, Owner{}, false},
		{"a numeric owner", 200009, Owner{1001, "bob"}, true},
		{"a numeric owner the database does not know", 300000, Owner{2002, "uid 2002"}, true},
		{"an owner name nobody has", 400000, Owner{}, false},
		{"a later line whose owner resolves", 500000, Owner{1000, "alice"}, true},
		{"a user's own uid", 1000, Owner{}, false},
		{"root", 0, Owner{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := tb.OwnerOf(tt.uid)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("OwnerOf(%d) = %+v, %v; want %+v, %v", tt.uid, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestTableReadsTheFileAgainWhenItChanges(t *testing.T) {
	tb := fakeTable(t, "alice:100000:10\n")
	owned := func(uid uint32) bool {
		t.Helper()
		_, ok, err := tb.OwnerOf(uid)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !owned(100000) || owned(200000) {
		t.Fatal("the first read")
	}
	// Another range, written with the same mtime: the size tells.
	mtime := time.Now().Add(-time.Hour)
	if err := os.Chtimes(tb.path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	owned(100000)
	if err := os.WriteFile(tb.path, []byte("alice:200000:10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tb.path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if owned(100000) || !owned(200000) {
		t.Fatal("the changed file was not read again")
	}
	// Replaced by rename (how shadow's tools write it).
	tmp := tb.path + ".new"
	if err := os.WriteFile(tmp, []byte("alice:300000:10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tb.path); err != nil {
		t.Fatal(err)
	}
	if owned(200000) || !owned(300000) {
		t.Fatal("the renamed file was not read again")
	}
	// Gone: no subordinate uids, and no error.
	if err := os.Remove(tb.path); err != nil {
		t.Fatal(err)
	}
	if owned(300000) {
		t.Fatal("a removed file still holds ranges")
	}
}

func TestTableBoundsItsRead(t *testing.T) {
	big := strings.Repeat("alice:100000:10\n", maxFileBytes/16+1)
	tb := fakeTable(t, big)
	if _, ok, err := tb.OwnerOf(100000); ok || err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("OwnerOf in a %d-byte file = %v, %v; want a refusal that says it is too large", len(big), ok, err)
	}
	// Said once; still no range until the file changes.
	if _, ok, err := tb.OwnerOf(100000); ok || err != nil {
		t.Fatalf("again: %v, %v; want no range and no error", ok, err)
	}
	if err := os.WriteFile(tb.path, []byte("alice:100000:10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := tb.OwnerOf(100000); !ok || err != nil {
		t.Fatalf("once smaller: %v, %v", ok, err)
	}
}
