package daemon

import (
	"encoding/json"
	"testing"
)

func TestListenStreams(t *testing.T) {
	var l listenStreams
	if got := l.toolsListChanged(); len(got) != 0 {
		t.Fatalf("no stream open, yet %d notifications", len(got))
	}
	l.opened([]byte(`"L1"`), []byte(`{"notifications":{"toolsListChanged":true},"_meta":{}}`))
	l.opened([]byte(`7`), []byte(`{"notifications":{"promptsListChanged":true}}`))
	l.opened([]byte(`8`), []byte(`{"notifications":{"toolsListChanged":true,"ToolsListChanged":false}}`)) // ambiguous: not counted
	got := l.toolsListChanged()
	if len(got) != 1 {
		t.Fatalf("got %d notifications, want 1 (only L1 asked): %q", len(got), got)
	}
	var n struct {
		Method string `json:"method"`
		Params struct {
			Meta map[string]json.RawMessage `json:"_meta"`
		} `json:"params"`
	}
	if err := json.Unmarshal(got[0], &n); err != nil {
		t.Fatal(err)
	}
	if n.Method != methodToolsChanged || string(n.Params.Meta[metaSubscriptionID]) != `"L1"` {
		t.Fatalf("notification %s", got[0])
	}

	for _, tc := range []struct {
		name, params string
		rewritten    bool
	}{
		{"server left it out", `{"notifications":{},"_meta":{"io.modelcontextprotocol/subscriptionId":"L1"}}`, true},
		{"server said false", `{"notifications":{"toolsListChanged":false},"_meta":{"io.modelcontextprotocol/subscriptionId":"L1"}}`, true},
		{"server said true", `{"notifications":{"toolsListChanged":true},"_meta":{"io.modelcontextprotocol/subscriptionId":"L1"}}`, false},
		{"stream did not ask", `{"notifications":{},"_meta":{"io.modelcontextprotocol/subscriptionId":7}}`, false},
		{"unknown stream", `{"notifications":{},"_meta":{"io.modelcontextprotocol/subscriptionId":"nope"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := l.acknowledge([]byte(tc.params))
			if (out != nil) != tc.rewritten {
				t.Fatalf("rewritten = %s, want %v", out, tc.rewritten)
			}
			if out != nil {
				var p struct {
					Notifications map[string]bool `json:"notifications"`
				}
				if err := json.Unmarshal(out, &p); err != nil || !p.Notifications[filterToolsChanged] {
					t.Fatalf("rewritten to %s", out)
				}
			}
		})
	}

	l.closed([]byte(`"L1"`))
	if got := l.toolsListChanged(); len(got) != 0 {
		t.Fatalf("closed stream still notified: %q", got)
	}
}
