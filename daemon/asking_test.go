package daemon

import (
	"path"
	"testing"
)

// withoutOurAnswer removes mcpcage's requestState and input response and
// keeps every other member byte for byte, in order (the server's own
// input responses too); an object parsers could read differently is
// refused.
func TestWithoutOurAnswer(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{`{"name":"echo","arguments":{"n":9007199254740993},"requestState":"mcpcage.1.x","inputResponses":{"mcpcage-consent":{}}}`, `{"name":"echo","arguments":{"n":9007199254740993}}`, false},
		{`{"inputResponses":{"q":{"action":"accept"},"mcpcage-consent":{}},"name":"x","requestState":"mcpcage.1.x"}`, `{"inputResponses":{"q":{"action":"accept"}},"name":"x"}`, false},
		{`{"requestState":"x"}`, `{}`, false},
		{`{"name":"echo","name":"rm"}`, ``, true},
		{`{"name":"echo","Name":"rm"}`, ``, true},
	}
	for _, tc := range tests {
		got, err := withoutOurAnswer([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Fatalf("withoutMembers(%s): %v", tc.in, err)
		}
		if tc.err {
			continue
		}
		if string(got) != tc.want {
			t.Fatalf("withoutMembers(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestEscapeGlobCoversExactlyTheName(t *testing.T) {
	for _, name := range []string{"echo", "*", "a?b", "[x]", `back\slash`} {
		p := escapeGlob(name)
		if ok, err := path.Match(p, name); err != nil || !ok {
			t.Fatalf("pattern %q does not match %q: %v", p, name, err)
		}
		if ok, _ := path.Match(p, "other"); ok {
			t.Fatalf("pattern %q for %q also matches \"other\"", p, name)
		}
	}
}
