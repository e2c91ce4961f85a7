package wire

import (
	"fmt"
	"strings"
	"testing"
)

// benchMessages are the shapes the relay sees most: a tools/call, a
// batch, and a tools/list result with many nested objects.
var benchMessages = func() map[string][]byte {
	var tools strings.Builder
	for i := range 200 {
		if i > 0 {
			tools.WriteByte(',')
		}
		fmt.Fprintf(&tools, `{"name":"tool%d","description":"does thing %d","inputSchema":{"type":"object","properties":{"path":{"type":"string"},"n":{"type":"integer"}},"required":["path"]}}`, i, i)
	}
	return map[string][]byte{
		"call":  []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/home/alice/project/README.md","limit":100}}}` + "\n"),
		"batch": []byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}},{"jsonrpc":"2.0","id":2,"result":{}}]` + "\n"),
		"list":  []byte(`{"jsonrpc":"2.0","id":7,"result":{"tools":[` + tools.String() + `],"nextCursor":"c"}}` + "\n"),
	}
}()

func BenchmarkPeek(b *testing.B) {
	for _, name := range []string{"call", "batch", "list"} {
		msg := benchMessages[name]
		b.Run(name, func(b *testing.B) {
			var m Message
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := Peek(msg, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecision is what a policy decision reads of a tools/call's
// params: the members, the arguments checked whole, then decoded.
func BenchmarkDecision(b *testing.B) {
	params := []byte(`{"name":"read_file","arguments":{"path":"/home/alice/project/README.md","limit":100,"options":{"encoding":"utf-8","follow":true,"ranges":[[1,10],[20,30]]}},"_meta":{"progressToken":"p"}}`)
	read := []string{"path", "limit"}
	b.ReportAllocs()
	for b.Loop() {
		m, err := Object(params, []string{"name", "arguments", "_meta"})
		if err != nil {
			b.Fatal(err)
		}
		args := m["arguments"].Of(params)
		if err := Tree(args, read); err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMembers(b *testing.B) {
	msg := benchMessages["list"]
	var m Message
	if err := Peek(msg, &m); err != nil {
		b.Fatal(err)
	}
	result := m.Envelopes[0].Result.Of(msg)
	b.ReportAllocs()
	for b.Loop() {
		members, ok := Members(result)
		if !ok {
			b.Fatal("not an object")
		}
		if _, ok := Elements(members["tools"].Of(result)); !ok {
			b.Fatal("not an array")
		}
	}
}
