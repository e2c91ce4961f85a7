package daemon

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/consent"
)

// TestDecisionRecord: the one constructor of decided requests picks the
// record type and the fields by kind and decision.
func TestDecisionRecord(t *testing.T) {
	s := &session{digests: testDigests, id: "s1", server: "srv", agent: "cd", user: "alice", log: slog.New(slog.DiscardHandler)}
	args := callArgs{values: map[string]any{"path": "/etc/hosts"}}
	for _, tc := range []struct {
		name     string
		c        decided
		wantType api.RecordType
		has      []string
		lacks    []string
	}{
		{"tool allowed", decided{kind: consent.KindTool, method: "tools/call", name: "read", args: args, decision: decisionAllow, consent: "c1"},
			api.RecordToolCall, []string{"tool", "args_digest", "arguments", "consent"}, []string{"reason", "name"}},
		{"tool denied", decided{kind: consent.KindTool, method: "tools/call", name: "read", args: args, decision: decisionDeny, reason: "no consent"},
			api.RecordToolCall, []string{"tool", "args_digest", "reason"}, []string{"consent", "name"}},
		{"tool observed", decided{kind: consent.KindTool, method: "tools/call", name: "read", args: args, decision: decisionObserve, reason: "no consent"},
			api.RecordToolCall, []string{"tool", "reason"}, []string{"consent"}},
		{"resource allowed", decided{kind: consent.KindResource, method: "resources/read", name: "file:///x", decision: decisionAllow, consent: "c2"},
			api.RecordRequest, []string{"name", "consent"}, []string{"tool", "args_digest", "reason"}},
		{"resource observed", decided{kind: consent.KindResource, method: "resources/read", name: "file:///x", decision: decisionObserve, reason: "r"},
			api.RecordRequest, []string{"name", "reason"}, []string{"tool"}},
		{"prompt denied", decided{kind: consent.KindPrompt, method: "prompts/get", name: "p", decision: decisionDeny, reason: "r"},
			api.RecordRequestDenied, []string{"name", "reason"}, []string{"tool", "consent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.id = json.RawMessage(`7`)
			r := s.decisionRecord(tc.c, "redacted", nil).Record()
			if r["type"] != string(tc.wantType) || r["decision"] != string(tc.c.decision) || r["method"] != tc.c.method {
				t.Fatalf("type %v decision %v method %v", r["type"], r["decision"], r["method"])
			}
			for _, k := range append([]string{"session", "agent", "agent_instance", "user", "server", "request_id"}, tc.has...) {
				if _, ok := r[k]; !ok {
					t.Errorf("missing %q in %v", k, r)
				}
			}
			for _, k := range tc.lacks {
				if _, ok := r[k]; ok {
					t.Errorf("unexpected %q in %v", k, r)
				}
			}
		})
	}
}

// TestListRecordTypes: every kind a list can hold has its record type.
func TestListRecordTypes(t *testing.T) {
	s := &session{digests: testDigests, id: "s1"}
	for k, want := range map[consent.Kind]api.RecordType{consent.KindTool: api.RecordToolsList, consent.KindResource: api.RecordResourcesList, consent.KindPrompt: api.RecordPromptsList} {
		if r := s.listRecord(k, nil, []string{"x"}, "d"); r["type"] != string(want) {
			t.Errorf("%v list recorded as %v, want %s", k, r["type"], want)
		}
	}
}
