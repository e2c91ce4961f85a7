package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// era2Meta is the per-request _meta of a 2026-07-28 client.
const era2Meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}`

// In the stateless era the daemon's own tool list change notifications
// (after a grant) go only on the client's subscriptions/listen stream,
// tagged with its id; with no stream open, nothing is sent.
func TestListChangedOnSubscriptionStream(t *testing.T) {
	d := consentDaemon(t, "")

	t.Run("no stream: not told", func(t *testing.T) {
		r := startRaw(t, d.shimCmd("test"))
		r.send(`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{` + era2Meta + `}}` + "\n")
		r.response("1")
		d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--expires", "1h")
		d.waitLog("the client has no subscriptions/listen stream for it")
		// The marker: a request answered after the change was handled.
		r.send(`{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{` + era2Meta + `}}` + "\n")
		for {
			line := r.next()
			if strings.Contains(line, "list_changed") {
				t.Fatalf("an untagged list_changed reached a 2026-07-28 client with no stream: %s", line)
			}
			if strings.Contains(line, `"id":2`) {
				break
			}
		}
		r.closeInput()
		r.wait()
	})

	t.Run("stream open: told on it", func(t *testing.T) {
		r := startRaw(t, d.shimCmd("test"))
		r.send(`{"jsonrpc":"2.0","id":"L1","method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + era2Meta + `}}` + "\n")
		ack := r.next()
		if !strings.Contains(ack, "notifications/subscriptions/acknowledged") || !strings.Contains(ack, `"toolsListChanged":true`) {
			t.Fatalf("want the stream's acknowledgement with toolsListChanged, got %s", ack)
		}
		d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "env", "--expires", "1h")
		for {
			line := r.next()
			if !strings.Contains(line, "notifications/tools/list_changed") {
				continue
			}
			var n struct {
				Params struct {
					Meta map[string]json.RawMessage `json:"_meta"`
				} `json:"params"`
			}
			must(t, json.Unmarshal([]byte(line), &n), "notification")
			if got := string(n.Params.Meta["io.modelcontextprotocol/subscriptionId"]); got != `"L1"` {
				t.Fatalf("list_changed tagged %s, want \"L1\": %s", got, line)
			}
			break
		}
		r.closeInput()
		r.wait()
	})
}
