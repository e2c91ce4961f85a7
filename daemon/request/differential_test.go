package request

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// The differential test: for every message the relay would forward, the
// fields a decision reads must be the same as read by (a) a case-sensitive,
// last-member-wins parser (JavaScript's JSON.parse and Python's json) and
// (b) Go's encoding/json into mcp-go's request types (case-insensitive
// field matching), as mcp-go servers read them.

// condNames are the argument names the test's consent conditions read.
var condNames = []string{"path", "mode"}

// reading is what a decision reads of one message.
type reading struct {
	Kind   string // request, notification
	ID     string // canonical id: s<string> or n<number>
	Method string
	Target string // tool/prompt name or resource URI
	Args   any    // tools/call arguments, numbers as float64
}

// ours reads msg as mcpcage does; ok is false when mcpcage refuses it (or
// forwards it without a decision, which the test treats alike: neither is
// a decision that could disagree).
func ours(msg []byte) (reading, bool) {
	var m wire.Message
	if wire.Peek(msg, &m) != nil || m.Batch {
		return reading{}, false
	}
	e := m.Envelopes[0]
	if e.Kind != wire.KindRequest && e.Kind != wire.KindNotification {
		return reading{}, false
	}
	r := reading{Kind: "notification", Method: e.Method}
	if e.Kind == wire.KindRequest {
		r.Kind, r.ID = "request", wire.IDKey(e.ID.Of(msg))
		if r.ID == "" || !wire.PlainID(e.ID.Of(msg)) {
			return reading{}, false // the relay refuses null and non-plain ids
		}
	}
	if !NeedsDecision(e.Method) {
		return r, true // forwarded as it is: its envelope must still agree
	}
	if e.Kind == wire.KindNotification {
		return reading{}, false // refused by the policy
	}
	t, err := Read(e.Method, e.Params.Of(msg), condNames)
	if err != nil {
		return reading{}, false
	}
	r.Target = t.Name
	if t.Args != nil {
		r.Args = floats(t.Args)
	}
	return r, true
}

// lines counts the lines a universal-newline reader (Python's text
// streams, as the Python SDK reads stdin; Node's readline) makes of msg.
func lines(msg []byte) int {
	n := 0
	for _, l := range strings.FieldsFunc(string(msg), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// floats turns every number into float64, the common ground of the
// readers compared (JavaScript reads every number as a double).
func floats(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = floats(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = floats(x)
		}
		return out
	case int64:
		return float64(v)
	case json.Number:
		f, _ := v.Float64()
		return f
	}
	return v
}

// lastWins parses JSON as JavaScript and Python do: exact names, the last
// duplicate wins. Numbers stay json.Number.
func lastWins(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := lwValue(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err == nil {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

func lwValue(d *json.Decoder) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		m := map[string]any{}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			v, err := lwValue(d)
			if err != nil {
				return nil, err
			}
			m[k.(string)] = v
		}
		_, err := d.Token()
		return m, err
	case json.Delim('['):
		a := []any{}
		for d.More() {
			v, err := lwValue(d)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.Token()
		return a, err
	}
	return tok, nil
}

// theirsJS reads msg with last-wins, case-sensitive semantics.
func theirsJS(msg []byte) (reading, error) {
	v, err := lastWins(bytes.TrimRight(msg, "\r\n"))
	if err != nil {
		return reading{}, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return reading{}, fmt.Errorf("not an object")
	}
	r := reading{}
	r.Method, _ = obj["method"].(string)
	switch id := obj["id"].(type) {
	case string:
		r.ID, r.Kind = "s"+id, "request"
	case json.Number:
		r.ID, r.Kind = "n"+canonical(string(id)), "request"
	case nil:
		r.Kind = "notification"
	}
	params, _ := obj["params"].(map[string]any)
	switch Method(r.Method) {
	case ToolsCall:
		r.Target, _ = params["name"].(string)
		if a, ok := params["arguments"].(map[string]any); ok {
			r.Args = floats(a)
		}
	case ResourcesRead, ResourcesSubscribe:
		r.Target, _ = params["uri"].(string)
	case PromptsGet:
		r.Target, _ = params["name"].(string)
		if a, ok := params["arguments"].(map[string]any); ok {
			r.Args = floats(a)
		}
	case CompletionComplete:
		ref, _ := params["ref"].(map[string]any)
		if ref["type"] == "ref/prompt" {
			r.Target, _ = ref["name"].(string)
		} else {
			r.Target, _ = ref["uri"].(string)
		}
	}
	return r, nil
}

func canonical(n string) string {
	if i := strings.IndexByte(n, '.'); i >= 0 && !strings.ContainsAny(n, "eE") && strings.Trim(n[i+1:], "0") == "" {
		return n[:i]
	}
	return n
}

// theirsGo reads msg as an mcp-go v1.2 server does: the envelope into a
// struct, then the request into mcp-go's request type.
func theirsGo(msg []byte) (reading, error) {
	var base struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		ID      any    `json:"id,omitempty"`
	}
	d := json.NewDecoder(bytes.NewReader(msg))
	d.UseNumber()
	if err := d.Decode(&base); err != nil {
		return reading{}, err
	}
	r := reading{Method: base.Method, Kind: "notification"}
	switch id := base.ID.(type) {
	case string:
		r.ID, r.Kind = "s"+id, "request"
	case json.Number:
		r.ID, r.Kind = "n"+canonical(string(id)), "request"
	}
	switch Method(base.Method) {
	case ToolsCall:
		var q mcp.CallToolRequest
		if err := json.Unmarshal(msg, &q); err != nil {
			return reading{}, err
		}
		r.Target = q.Params.Name
		if a, ok := q.Params.Arguments.(map[string]any); ok {
			r.Args = floats(a)
		}
	case ResourcesRead:
		var q mcp.ReadResourceRequest
		if err := json.Unmarshal(msg, &q); err != nil {
			return reading{}, err
		}
		r.Target = q.Params.URI
	case ResourcesSubscribe:
		var q mcp.SubscribeRequest
		if err := json.Unmarshal(msg, &q); err != nil {
			return reading{}, err
		}
		r.Target = q.Params.URI
	case PromptsGet:
		var q mcp.GetPromptRequest
		if err := json.Unmarshal(msg, &q); err != nil {
			return reading{}, err
		}
		r.Target = q.Params.Name
		if q.Params.Arguments != nil {
			a := map[string]any{}
			for k, v := range q.Params.Arguments {
				a[k] = v
			}
			r.Args = a
		}
	case CompletionComplete:
		var q mcp.CompleteRequest
		if err := json.Unmarshal(msg, &q); err != nil {
			return reading{}, err
		}
		switch ref := q.Params.Ref.(type) {
		case mcp.PromptReference:
			r.Target = ref.Name
		case mcp.ResourceReference:
			r.Target = ref.URI
		}
	}
	return r, nil
}

// checkAgreement fails when mcpcage forwards msg and another reader
// reads its decision fields differently. A reader that cannot parse a
// message the relay forwards does not count as a disagreement: that
// server answers with an error and runs nothing.
func checkAgreement(t *testing.T, msg []byte) {
	t.Helper()
	got, fwd := ours(msg)
	if !fwd {
		return
	}
	if n := lines(msg); n != 1 {
		t.Errorf("mcpcage forwards %q as one message; a universal-newline reader sees %d lines", msg, n)
	}
	for name, reader := range map[string]func([]byte) (reading, error){"last-wins (JavaScript, Python)": theirsJS, "encoding/json into mcp-go types": theirsGo} {
		want, err := reader(msg)
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(got, want) && !nanEqual(got, want) {
			t.Errorf("mcpcage and %s read %s differently:\n mcpcage: %+v\n %s: %+v", name, msg, got, name, want)
		}
	}
}

func nanEqual(a, b reading) bool {
	return fmt.Sprint(a) == fmt.Sprint(b) && strings.Contains(fmt.Sprint(a), "NaN")
}

// seeds holds one message per known class of parser differential, and
// plain messages to mutate from.
var seeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
	`{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///etc/passwd"}}`,
	`{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"simple","arguments":{"x":"1"}}}`,
	`{"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"b"}}}`,
	// escaped member names
	`{"jsonrpc":"2.0","id":4,"m\u0065thod":"tools/call","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","\u0069d":5,"method":"tools/call","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":6,"method":"tools/call","p\u0061rams":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"n\u0061me":"secret","name":"echo"}}`,
	`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"p\u0061th":"/etc/shadow","path":"/tmp/ok"}}}`,
	// duplicates
	`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo"},"params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":10,"method":"tools/call","method":"tools/list","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","name":"secret"}}`,
	`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/tmp","path":"/etc"}}}`,
	// letter case
	`{"jsonrpc":"2.0","ID":13,"method":"tools/call","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":14,"Method":"tools/call","method":"tools/list","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":15,"method":"tools/call","Params":{"name":"secret"},"params":{"name":"echo"}}`,
	`{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"echo","Name":"secret"}}`,
	`{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"NAME":"secret","name":"echo"}}`,
	`{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/tmp","PATH":"/etc"}}}`,
	`{"jsonrpc":"2.0","id":19,"method":"tools/call","params":{"name":"echo","Arguments":{"path":"/etc"},"arguments":{"path":"/tmp"}}}`,
	`{"jsonrpc":"2.0","id":20,"method":"resources/read","params":{"uri":"file:///ok","URI":"file:///etc/shadow"}}`,
	`{"jsonrpc":"2.0","id":21,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"ok","NAME":"secret"}}}`,
	`{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1},"_META":{"x":1}}}`,
	// Unicode simple folding: the Kelvin sign and the long s fold to k and s in Go
	`{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"echo","arguments":{"mask":"r","ma\u017fk":"w"}}}`,
	`{"jsonrpc":"2.0","id":24,"method":"tools/call","param\u017f":{"name":"secret"},"params":{"name":"echo"}}`,
	// lone surrogates
	`{"jsonrpc":"2.0","id":25,"method":"tools/call","params":{"name":"echo\ud800"}}`,
	`{"jsonrpc":"2.0","id":26,"method":"tools/call","params":{"name":"echo","arguments":{"\ud800":"a","\udbff":"b"}}}`,
	// decided methods as notifications, null ids
	`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"secret"}}`,
	`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"secret"}}`,
	// a carriage return ends a line for Python's and Node's line readers
	"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":\r{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"secret\"}}\r}",
	// numeric id aliases
	`{"jsonrpc":"2.0","id":1e0,"method":"tools/list"}`,
	// numbers
	`{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/call","params":{"name":"echo","arguments":{"n":1e400}}}`,
	`{"jsonrpc":"2.0","id":27.0,"method":"tools/call","params":{"name":"echo","arguments":{"n":12.5,"m":-0}}}`,
}

// TestSeedsRefused checks the seeds of the known classes are refused
// (none may be forwarded with a decision on the wrong thing).
func TestKnownClassesRefused(t *testing.T) {
	for _, s := range seeds[4:] {
		if r, fwd := ours([]byte(s)); fwd && !strings.Contains(s, `"n":12.5`) {
			t.Errorf("forwarded with a decision on %+v:\n%s", r, s)
		}
	}
	for _, s := range seeds[:4] {
		if _, fwd := ours([]byte(s)); !fwd {
			t.Errorf("a plain request was refused: %s", s)
		}
	}
}

// TestDifferentialGenerated builds messages from pieces known to split
// parsers and checks agreement on every one mcpcage forwards.
func TestDifferentialGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	forwarded := 0
	for range n {
		msg := generate(rng)
		if _, fwd := ours(msg); fwd {
			forwarded++
		}
		checkAgreement(t, msg)
		if t.Failed() {
			return
		}
	}
	// The generator must produce forwardable messages too, or the test
	// would check nothing.
	if forwarded < n/20 {
		t.Fatalf("only %d of %d generated messages were forwarded: the generator is too hostile to test agreement", forwarded, n)
	}
}

// spell returns a spelling of name that some parser may read as name.
func spell(rng *rand.Rand, name string) string {
	switch rng.IntN(40) {
	case 0: // escape one character
		i := rng.IntN(len(name))
		return name[:i] + fmt.Sprintf(`\u%04x`, name[i]) + name[i+1:]
	case 1: // change letter case
		return strings.ToUpper(name[:1]) + name[1:]
	case 2:
		return strings.ToUpper(name)
	case 3: // Unicode folding
		name = strings.Replace(name, "s", `\u017f`, 1)
		return strings.Replace(name, "k", `\u212a`, 1)
	}
	return name
}

func member(rng *rand.Rand, name, value string) string {
	return `"` + spell(rng, name) + `":` + value
}

// object builds an object from members, sometimes duplicating one.
func object(rng *rand.Rand, members ...string) string {
	if len(members) > 0 && rng.IntN(12) == 0 {
		members = append(members, members[rng.IntN(len(members))])
	}
	rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	return "{" + strings.Join(members, ",") + "}"
}

func pick(rng *rand.Rand, xs ...string) string { return xs[rng.IntN(len(xs))] }

func generate(rng *rand.Rand) []byte {
	str := func() string {
		return pick(rng, `"echo"`, `"secret"`, `"file:///x"`, `"a\/b"`, `"\ud83d\ude00"`, `"\ud800"`, `""`, `"echo"`, `"file:///y"`)
	}
	num := func() string { return pick(rng, "1", "-0", "2.50", "1e3", "9007199254740993", "1e400", "7", "12") }
	var args []string
	for range rng.IntN(3) {
		args = append(args, member(rng, pick(rng, "path", "mode", "text", "opts"), pick(rng, str(), num(), "true", "null", `{"path":"/etc"}`, `["x",1]`)))
	}
	method := pick(rng, "tools/call", "resources/read", "prompts/get", "completion/complete", "resources/subscribe")
	var params []string
	switch method {
	case "tools/call":
		params = append(params, member(rng, "name", str()))
		if rng.IntN(4) > 0 {
			params = append(params, member(rng, "arguments", object(rng, args...)))
		}
	case "resources/read", "resources/subscribe":
		params = append(params, member(rng, "uri", str()))
	case "prompts/get":
		params = append(params, member(rng, "name", str()))
	case "completion/complete":
		ref := object(rng, member(rng, "type", pick(rng, `"ref/prompt"`, `"ref/resource"`)), member(rng, "name", str()), member(rng, "uri", str()))
		params = append(params, member(rng, "ref", ref))
	}
	if rng.IntN(5) == 0 {
		params = append(params, member(rng, "_meta", object(rng, member(rng, "progressToken", num()))))
	}
	env := []string{`"jsonrpc":"2.0"`, member(rng, "method", `"`+method+`"`), member(rng, "params", object(rng, params...))}
	if rng.IntN(6) > 0 {
		env = append(env, member(rng, "id", pick(rng, num(), str(), "null")))
	}
	return []byte(object(rng, env...))
}

// FuzzDifferential mutates the seeds; `make fuzz` runs it for longer.
func FuzzDifferential(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkAgreement(t, msg)
	})
}
