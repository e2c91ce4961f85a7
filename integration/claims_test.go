package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// A client's claims that parsers read differently or refuse (a name
// given twice, a number no float64 holds) were recorded as sent, and the
// readers' parser refused the record whole: `mcpcage audit`, --follow and
// `mcpcage why` skipped the session's session.claims without a word
// (found by a red-team helper). Now the claims are recorded re-encoded, or
// as unreadable with their first bytes, and readers read every record.
func TestUnreadableClaimsAreRecordedAndShown(t *testing.T) {
	d := startDaemon(t, "")
	r := startRaw(t, d.shimCmd("test"))
	r.send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"evil","name":"claude-code","x":1e400}}}` + "\n")
	if resp := r.response("1"); !strings.Contains(resp, `"result"`) {
		t.Fatalf("initialize: %s", resp)
	}
	r.closeInput()
	d.waitLog(`msg="session ended"`)
	var claims map[string]any
	for _, line := range strings.Split(d.mustCLI(t, "audit", "--json"), "\n") {
		var rec map[string]any
		if strings.Contains(line, `"session.claims"`) {
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("the session.claims record does not parse (%v): %s", err, line)
			}
			claims = rec
		}
	}
	info, _ := claims["client_info"].(map[string]any)
	if info == nil || !strings.Contains(str(info, "unreadable"), "1e400") || !strings.Contains(str(info, "sent"), `"name":"evil"`) {
		t.Fatalf("session.claims: %v, want its client_info unreadable (1e400) with what was sent", claims)
	}
	if text := d.mustCLI(t, "audit"); !strings.Contains(text, "session.claims") {
		t.Fatalf("mcpcage audit shows no session.claims:\n%s", text)
	}
}
