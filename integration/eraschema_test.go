package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A strict reader of the CallToolResult each era's schema defines: every
// member must be one the schema names, required members present, enums
// respected. mcpcage's own results (a denied call) must pass it through
// the real daemon, in both eras.
type contentBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// callToolResult20251125 is CallToolResult of 2025-11-25.
type callToolResult20251125 struct {
	Meta              map[string]any `json:"_meta,omitempty"`
	Content           []contentBlock `json:"content"`
	StructuredContent map[string]any `json:"structuredContent,omitempty"`
	IsError           *bool          `json:"isError,omitempty"`
}

// callToolResult20260728 is CallToolResult of 2026-07-28: resultType is
// required ("complete" or "input_required").
type callToolResult20260728 struct {
	ResultType        string         `json:"resultType"`
	Meta              map[string]any `json:"_meta,omitempty"`
	Content           []contentBlock `json:"content"`
	StructuredContent any            `json:"structuredContent,omitempty"`
	IsError           *bool          `json:"isError,omitempty"`
}

func strictDecode(raw []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	// DisallowUnknownFields still matches names case-insensitively: check
	// each member's exact spelling against the struct's tags.
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return err
	}
	tags, _ := json.Marshal(v)
	var known map[string]json.RawMessage
	_ = json.Unmarshal(tags, &known)
	for name := range members {
		if _, ok := known[name]; !ok && name != "_meta" && name != "structuredContent" && name != "isError" {
			return fmt.Errorf("member %q is not in the schema", name)
		}
	}
	return nil
}

func TestSynthesisedResultsMatchTheEraSchema(t *testing.T) {
	d := consentDaemon(t, "") // nothing granted: every call is denied by mcpcage itself
	for _, era := range []struct {
		name     string
		open     func(r *rawSession)
		callMeta string
		check    func(result []byte) error
	}{
		{"2025-11-25", func(r *rawSession) { r.initialize() }, "", func(result []byte) error {
			var res callToolResult20251125
			if err := strictDecode(result, &res); err != nil {
				return err
			}
			if len(res.Content) == 0 || res.IsError == nil || !*res.IsError {
				return fmt.Errorf("want content and isError: %s", result)
			}
			return nil
		}},
		{"2026-07-28", func(*rawSession) {}, "," + era2Meta, func(result []byte) error {
			var res callToolResult20260728
			if err := strictDecode(result, &res); err != nil {
				return err
			}
			if res.ResultType != "complete" {
				return fmt.Errorf("resultType %q, want \"complete\" (required in this era): %s", res.ResultType, result)
			}
			if len(res.Content) == 0 || res.IsError == nil || !*res.IsError {
				return fmt.Errorf("want content and isError: %s", result)
			}
			return nil
		}},
	} {
		t.Run(era.name, func(t *testing.T) {
			r := startRaw(t, d.shimCmd("test"))
			era.open(r)
			r.send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}` + era.callMeta + `}}` + "\n")
			line := r.response("7")
			if !strings.Contains(line, "mcpcage denied") {
				t.Fatalf("want mcpcage's own denial, got %s", line)
			}
			if err := era.check(fieldOf(t, line, "result")); err != nil {
				t.Fatalf("the denial does not match the %s schema: %v", era.name, err)
			}
			r.closeInput()
			r.wait()
		})
	}
}
