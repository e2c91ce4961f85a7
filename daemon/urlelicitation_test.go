package daemon

import (
	"fmt"
	"strings"
	"testing"
)

// A server's error that carries URL elicitations is decided as the
// elicitations are, in observe mode too (what the client shows the user
// is not a call to observe), and refused whole when any part is refused
// or read differently by parsers.
func TestURLElicitationErrors(t *testing.T) {
	el := func(message string) string {
		return fmt.Sprintf(`{"mode":"url","elicitationId":"e","url":"https://example.com/x","message":%q}`, message)
	}
	errorOf := func(data string) string {
		return `{"jsonrpc":"2.0","id":1,"error":{"code":-32042,"message":"sign in","data":` + data + `}}`
	}
	many := make([]string, maxURLElicitations+1)
	for i := range many {
		many[i] = el("Sign in")
	}
	for _, tc := range []struct {
		name, config, msg string
		refused           string // "" : passes unchanged
	}{
		{"a plain link, allowed", "", errorOf(`{"elicitations":[` + el("Sign in to the service") + `]}`), ""},
		{"no elicitations, only the code", "", `{"jsonrpc":"2.0","id":1,"error":{"code":-32042,"message":"sign in"}}`, ""},
		{"another error", "", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}`, ""},
		{"allow_elicitation = false", "allow_elicitation = false\n", errorOf(`{"elicitations":[` + el("Sign in") + `]}`), "may not send elicitation/create"},
		{"posing as mcpcage in the link's message", "", errorOf(`{"elicitations":[` + el("mcpcage keeps the sign-in") + `]}`), "imitates mcpcage"},
		{"posing as mcpcage beside the link", "", errorOf(`{"mcpcage":"sign_in_required","elicitations":[` + el("Sign in") + `]}`), "imitates mcpcage"},
		{"elicitations twice", "", errorOf(`{"elicitations":[],"elicitations":[` + el("Sign in") + `]}`), "parsers would read differently"},
		{"elicitations in another letter case", "", errorOf(`{"Elicitations":[` + el("Sign in") + `]}`), "parsers would read differently"},
		{"elicitations not a list", "", errorOf(`{"elicitations":` + el("Sign in") + `}`), "not a list"},
		{"too many", "", errorOf(`{"elicitations":[` + strings.Join(many, ",") + `]}`), "at most"},
	} {
		for _, observe := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, observe %v", tc.name, observe), func(t *testing.T) {
				d := testDaemon(t, "[servers.s]\ncommand = [\"x\"]\n"+tc.config)
				p := testPolicy(d, "s", "", observe)
				e, msg := peek(t, tc.msg)
				v := p.FromServer(e, msg, "tools/call")
				switch {
				case tc.refused == "" && v.Replace != nil:
					t.Fatalf("replaced: %s", v.Replace)
				case tc.refused != "" && (v.Replace == nil || !strings.Contains(string(v.Replace), tc.refused) || strings.Contains(string(v.Replace), "example.com")):
					t.Fatalf("verdict %+v (%s); want a plain refusal saying %q", v, v.Replace, tc.refused)
				}
			})
		}
	}
}
