package request

import (
	"errors"
	"reflect"
	"runtime"
	"strings"
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
		// A URI the server's SDK would normalize into another one.
		{"resources/read", `{"uri":"file:///work/../etc/secret.txt"}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"file:///work/%2e%2e/etc/secret.txt"}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"file:///work/..\\etc/secret.txt"}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"file:///work/\t../etc/secret.txt"}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"FILE:///etc/secret.txt"}`, want{ambiguous: true}},
		{"resources/read", `{"uri":"https://host/a/b?q=../c#f"}`, want{target: Target{Kind: Resource, Name: "https://host/a/b?q=../c#f"}}},
		{"resources/read", `{"uri":"demo://resource/dynamic/1"}`, want{target: Target{Kind: Resource, Name: "demo://resource/dynamic/1"}}},
		{"resources/subscribe", `{"uri":"demo://resource/dynamic/../static/1"}`, want{ambiguous: true}},
		{"completion/complete", `{"ref":{"type":"ref/resource","uri":"file:///work/./{x}"}}`, want{ambiguous: true}},
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

// TestArgumentsPastTheValueBound: a call's arguments of more than
// MaxArgumentValues values are checked but not decoded (Unread, RawArgs),
// so that reading one costs the daemon about nothing beyond the message:
// decoding 60 MiB of small values took 2.4 GiB.
func TestArgumentsPastTheValueBound(t *testing.T) {
	call := func(values int) []byte {
		b := []byte(`{"name":"echo","arguments":{"a":[`)
		for i := range values - 2 { // the arguments object and the array are values too
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '0')
		}
		return append(b, "]}}"...)
	}
	for _, tc := range []struct {
		name   string
		values int
		unread bool
	}{
		{"at the bound", MaxArgumentValues, false},
		{"past it", MaxArgumentValues + 1, true},
		{"far past it", 4 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := call(tc.values)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := Read("tools/call", params, []string{"a"})
			runtime.ReadMemStats(&after)
			if err != nil || got.Name != "echo" {
				t.Fatalf("Read = %+v, %v", got, err)
			}
			if (got.Unread > 0) != tc.unread || (got.Args == nil) != tc.unread {
				t.Fatalf("Unread %d, Args nil %v; want unread %v", got.Unread, got.Args == nil, tc.unread)
			}
			if !tc.unread {
				return
			}
			if got.Unread != tc.values || string(got.RawArgs) != string(params[len(`{"name":"echo","arguments":`):len(params)-1]) || got.UnreadReason() == "" {
				t.Fatalf("Unread %d (want %d), RawArgs %.40q..., reason %q", got.Unread, tc.values, got.RawArgs, got.UnreadReason())
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Fatalf("reading %d bytes of unread arguments allocated %d bytes", len(params), alloc)
			}
		})
	}
	// Unread arguments must still be an object, and are still checked.
	for _, bad := range []string{`[` + strings.Repeat("0,", MaxArgumentValues) + `0]`, `{"a":[` + strings.Repeat("0,", MaxArgumentValues) + `0],"a":1}`,
		`{"n":1e400,"pad":[` + strings.Repeat("0,", MaxArgumentValues) + `0]}`} { // a number Decode refuses (found by a red-team helper)
		if _, err := Read("tools/call", []byte(`{"name":"echo","arguments":`+bad+`}`), nil); err == nil {
			t.Errorf("arguments %.20s... were accepted", bad)
		}
	}
}
