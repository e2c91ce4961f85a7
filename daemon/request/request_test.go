package request

import (
	"errors"
	"reflect"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

func TestRead(t *testing.T) {
	type want struct {
		target    Target
		malformed bool
		ambiguous bool
	}
	for _, tc := range []struct {
		method, params string
		want           want
	}{
		{"tools/call", `{"name":"echo","arguments":{"text":"hi","n":2}}`, want{target: Target{Kind: Tool, Name: "echo", Args: map[string]any{"text": "hi", "n": int64(2)}}}},
		{"tools/call", `{"name":"echo"}`, want{target: Target{Kind: Tool, Name: "echo"}}},
		{"tools/call", `{"name":"echo","arguments":null}`, want{target: Target{Kind: Tool, Name: "echo"}}},
		{"tools/call", `{"arguments":{}}`, want{malformed: true}},
		{"tools/call", `{"name":""}`, want{malformed: true}},
		{"tools/call", `{"name":7}`, want{malformed: true}},
		{"tools/call", `{"name":"echo","arguments":[1]}`, want{malformed: true}},
		{"tools/call", `["echo"]`, want{malformed: true}},
		{"tools/call", ``, want{malformed: true}},
		{"tools/call", `{"name":"echo","arguments":{"Path":"/etc"}}`, want{ambiguous: true}}, // "path" is read by a condition
		{"tools/call", `{"name":"echo","arguments":{"deep":{"PATH":"/etc"}}}`, want{ambiguous: true}},
		{"tools/call", `{"name":"echo","arguments":{"Other":1}}`, want{target: Target{Kind: Tool, Name: "echo", Args: map[string]any{"Other": int64(1)}}}},
		{"tools/call", `{"name":"echo","task":{"ttl":1,"TTL":2}}`, want{ambiguous: true}},
		{"tools/call", `{"name":"echo","_meta":{"progressToken":1,"progresstoken":2}}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"file:///a/b"}`, want{target: Target{Kind: Resource, Name: "file:///a/b"}}},
		{"resources/subscribe", `{"uri":"file:///a"}`, want{target: Target{Kind: Resource, Name: "file:///a"}}},
		{"resources/read", `{"Uri":"file:///a"}`, want{ambiguous: true}},
		{"prompts/get", `{"name":"p","arguments":{"x":"1"}}`, want{target: Target{Kind: Prompt, Name: "p", Args: map[string]any{"x": "1"}}}},
		{"prompts/get", `{"name":"p","arguments":["x"]}`, want{malformed: true}},
		{"completion/complete", `{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":""}}`, want{target: Target{Kind: Prompt, Name: "p"}}},
		{"completion/complete", `{"ref":{"type":"ref/resource","uri":"file:///{x}"}}`, want{target: Target{Kind: Resource, Name: "file:///{x}"}}},
		{"completion/complete", `{"ref":{"type":"ref/tool","name":"p"}}`, want{malformed: true}},
		{"completion/complete", `{"ref":{"type":"ref/prompt","name":"p","Name":"q"}}`, want{ambiguous: true}},
		{"completion/complete", `{"argument":{}}`, want{malformed: true}},
	} {
		t.Run(tc.method+" "+tc.params, func(t *testing.T) {
			got, err := Read(tc.method, []byte(tc.params), []string{"path"})
			if errors.Is(err, ErrMalformed) != tc.want.malformed || errors.Is(err, wire.ErrAmbiguous) != tc.want.ambiguous {
				t.Fatalf("err = %v, want malformed %v ambiguous %v", err, tc.want.malformed, tc.want.ambiguous)
			}
			if err == nil && !reflect.DeepEqual(got, tc.want.target) {
				t.Fatalf("got %+v, want %+v", got, tc.want.target)
			}
		})
	}
}

func TestNeedsDecision(t *testing.T) {
	for m, want := range map[string]bool{"tools/call": true, "resources/read": true, "resources/subscribe": true,
		"prompts/get": true, "completion/complete": true, "tools/list": false, "initialize": false, "ping": false} {
		if NeedsDecision(m) != want {
			t.Errorf("NeedsDecision(%q) = %v, want %v", m, !want, want)
		}
	}
}
