package consent

import (
	"testing"
	"time"
)

func TestPathUnder(t *testing.T) {
	for _, tc := range []struct {
		path, dir string
		want      bool
	}{
		{"/tmp/fs/public/a.txt", "/tmp/fs/public", true},
		{"/tmp/fs/public/a.txt", "/tmp/fs/public/", true},
		{"/tmp/fs/public", "/tmp/fs/public", true},
		{"/tmp/fs/public/", "/tmp/fs/public", true},
		{"/tmp/fs/public/sub/b", "/", true},
		{"/tmp/fs/publicity/a.txt", "/tmp/fs/public", false}, // a sibling with the same prefix
		{"/tmp/fs/public/../private/secret.txt", "/tmp/fs/public", false},
		{"/tmp/fs/public/./a.txt", "/tmp/fs/public", false},
		{"/tmp/fs/public//a.txt", "/tmp/fs/public", false},
		{"/tmp/fs/public/..", "/tmp/fs/public", false},
		{`/tmp/fs/public/..\private`, "/tmp/fs/public", false},
		{"/tmp/fs/public/a\x00b", "/tmp/fs/public", false},
		{"tmp/fs/public/a.txt", "/tmp/fs/public", false}, // relative: the server's working directory decides
		{"~/public/a.txt", "/root/public", false},
		{"/tmp/fs/public/a.txt", "public", false},
		{"/tmp/fs/public/a.txt", "/tmp/fs/../fs/public", false},
	} {
		if got := pathUnder(tc.path, tc.dir); got != tc.want {
			t.Errorf("pathUnder(%q, %q) = %v, want %v", tc.path, tc.dir, got, tc.want)
		}
	}
}

// The function in a condition: a traversal a prefix check lets through
// is refused, and an argument of another type denies.
func TestPathUnderInACondition(t *testing.T) {
	c, err := Compile(`pathUnder(args.path, "/tmp/fs/public")`)
	if err != nil {
		t.Fatal(err)
	}
	prefix, err := Compile(`args.path.startsWith("/tmp/fs/public/")`)
	if err != nil {
		t.Fatal(err)
	}
	traversal := map[string]any{"path": "/tmp/fs/public/../private/secret.txt"}
	if ok, _ := prefix.Eval(Input{Args: traversal, Now: time.Now()}); !ok {
		t.Fatal("the prefix check no longer lets the traversal through: this test shows nothing")
	}
	for _, tc := range []struct {
		args    map[string]any
		want    bool
		wantErr bool
	}{
		{map[string]any{"path": "/tmp/fs/public/a.txt"}, true, false},
		{traversal, false, false},
		{map[string]any{"path": []any{"/tmp/fs/public/a.txt"}}, false, true},
	} {
		got, err := c.Eval(Input{Args: tc.args, Now: time.Now()})
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("Eval(%v) = %v, %v; want %v (error: %v)", tc.args, got, err, tc.want, tc.wantErr)
		}
	}
}
