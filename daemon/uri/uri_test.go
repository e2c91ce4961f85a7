package uri

import (
	"strconv"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name, uri string
		ok        bool
		readAs    string // what the error says a server's SDK reads (new URL(uri).href), when it says
	}{
		{"file", "file:///work/readme.txt", true, ""},
		{"https with query and fragment", "https://host/a/b?q=1#f", true, ""},
		{"custom scheme", "demo://resource/dynamic/1", true, ""},
		{"dots in the query and fragment", "https://host/a/b?q=../x&r=%2e%2e#../y", true, ""},
		{"dots inside a segment", "file:///work/a..b/.c/d./e.", true, ""},
		{"three dots", "file:///work/.../x", true, ""},
		{"an escaped dot inside a segment", "file:///work/a%2eb", true, ""},
		{"an escaped space", "file:///work/a%20b", true, ""},
		{"an escaped slash", "file:///work/a%2fb", true, ""},
		{"a space inside", "file:///work/a b", true, ""},
		{"non-ASCII", "notes://ü/x.md", true, ""},
		{"no scheme", "notes/x.md", true, ""},
		{"a template", "file:///{path}", true, ""},
		{"upper case after the scheme", "repo://Acme/README.md", true, ""},
		{"percent not an escape", "file:///work/%zz/%2", true, ""},

		{"an http host", "http://localhost:8080/mcp", true, ""},
		{"a file URI with a host", "file://server/share/x", true, ""},

		// The SDKs read the first name after any slashes as the host of
		// an http(s), ws(s) or ftp URI: "https:///docs/x" is host docs,
		// which "https://*/docs/*" was taken to cover (found by a review).
		{"three slashes", "https:///docs/evil.example/secret", false, ""},
		{"one slash", "https:/evil.example/x", false, ""},
		{"no slashes", "https:evil.example/x", false, ""},
		{"no host", "http://", false, ""},
		{"no host before the query", "wss://?x", false, ""},
		{"dot dot", "file:///work/../etc/secret.txt", false, "file:///etc/secret.txt"},
		{"dot dot escaped", "file:///work/%2e%2e/etc/secret.txt", false, "file:///etc/secret.txt"},
		{"dot dot escaped upper case", "file:///work/%2E%2E/etc/secret.txt", false, "file:///etc/secret.txt"},
		{"dot dot half escaped", "file:///work/.%2E/etc/secret.txt", false, "file:///etc/secret.txt"},
		{"dot dot half escaped first", "file:///work/%2e./etc/secret.txt", false, "file:///etc/secret.txt"},
		{"dot dot at the end", "file:///work/..", false, "file:///"},
		{"dot dot before the query", "file:///work/..?x=1", false, "file:///?x=1"},
		{"dot", "file:///work/./x", false, "file:///work/x"},
		{"dot at the end", "file:///work/.", false, "file:///work/"},
		{"dot escaped", "file:///work/%2e/x", false, "file:///work/x"},
		{"dot dot in a custom scheme", "demo://resource/dynamic/../static/x", false, "demo://resource/static/x"},
		{"dot dot in a path without authority", "demo:/a/../b", false, "demo:/b"},
		{"dot dot past the root", "https://h/a/../../../b", false, "https://h/b"},
		{"dot dot before an escaped slash", "file:///work/..%2fetc/secret.txt", false, ""},
		{"dot dot before an escaped backslash", "file:///work/..%5Cetc/secret.txt", false, ""},
		{"dot dot after an escaped slash", "file:///work/a%2F..", false, ""},
		{"dot dot as the host", "demo://../x", false, ""},
		{"dot dot in an opaque path", "mailto:a/../b", false, ""},
		{"backslash", `file:///work/..\etc/secret.txt`, false, "file:///etc/secret.txt"},
		{"backslash alone", `file:///work\x`, false, "file:///work/x"},
		{"backslash in a custom scheme", `demo://a/b\c`, false, ""},
		{"backslash in the query", `https://h/a?b\c`, false, ""},
		{"tab", "file:///work/\t../etc/secret.txt", false, "file:///etc/secret.txt"},
		{"line feed", "file:///work/x\ny", false, "file:///work/xy"},
		{"carriage return", "file:///wo\rrk/x", false, "file:///work/x"},
		{"NUL", "file:///work/x\x00y", false, ""},
		{"DEL", "file:///work/\x7fx", false, ""},
		{"leading space", " file:///work/x", false, "file:///work/x"},
		{"trailing space", "file:///work/x ", false, "file:///work/x"},
		{"leading control", "\x01file:///work/x", false, "file:///work/x"},
		{"upper-case scheme", "FILE:///work/x", false, "file:///work/x"},
		{"mixed-case scheme", "Demo://resource/1", false, "demo://resource/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.uri)
			if (err == nil) != tt.ok {
				t.Fatalf("Check(%q) = %v, want ok %v", tt.uri, err, tt.ok)
			}
			if err == nil {
				return
			}
			msg := err.Error()
			if !strings.Contains(msg, strconv.Quote(tt.uri)) || !strings.Contains(msg, "send the normalized URI") {
				t.Errorf("Check(%q) = %q: it names neither the URI nor what to do", tt.uri, msg)
			}
			said := "read it as " + strconv.Quote(tt.readAs)
			if tt.readAs != "" && !strings.Contains(msg, said) {
				t.Errorf("Check(%q) = %q, want it to say %s", tt.uri, msg, said)
			}
			if tt.readAs == "" && strings.Contains(msg, "read it as") {
				t.Errorf("Check(%q) = %q, want it to say nothing of how it is read", tt.uri, msg)
			}
		})
	}
}

// TestCheckDoesNotAllocate: every resource request is checked.
func TestCheckDoesNotAllocate(t *testing.T) {
	for _, u := range []string{"file:///work/readme.txt", "https://host/a/b?q=1#f", "demo://resource/dynamic/%2E1"} {
		if n := testing.AllocsPerRun(100, func() { _ = Check(u) }); n != 0 {
			t.Errorf("Check(%q) allocated %v times", u, n)
		}
	}
}
