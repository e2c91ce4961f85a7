package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// relayedPolicy runs a relay with the session's policy between pipes: the
// test is the client and the server.
type relayedPolicy struct {
	clientW io.Writer
	client  *bufio.Reader
	server  *bufio.Reader
	serverW io.Writer
}

func runPolicyRelay(t *testing.T, p *sessionPolicy) *relayedPolicy {
	t.Helper()
	cinR, cinW := io.Pipe()
	coutR, coutW := io.Pipe()
	sinR, sinW := io.Pipe()
	soutR, soutW := io.Pipe()
	p.s.relay = relay.New(relay.Options{MaxMessageBytes: 1 << 20, Inspector: p, Logger: slog.New(slog.DiscardHandler)},
		relay.Streams{ClientIn: cinR, ClientOut: coutW, ServerIn: sinW, ServerOut: soutR})
	go func() { p.s.relay.Run(nil); coutW.Close() }()
	t.Cleanup(func() { cinW.Close(); soutW.Close() })
	return &relayedPolicy{clientW: cinW, client: bufio.NewReader(coutR), server: bufio.NewReader(sinR), serverW: soutW}
}

func writeString(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatalf("write %.60q: %v", s, err)
	}
}

func readLine(t *testing.T, r *bufio.Reader, who string) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read from the %s: %v", who, err)
	}
	return s
}

func TestPolicyDenialsPerEra(t *testing.T) {
	d := testDaemon(t, policyConfig)
	tests := []struct {
		name       string
		start      []string // exchanged before the denied requests
		meta       string   // params._meta of the denied requests
		resultType bool
	}{
		{"initialize era", []string{`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`}, ``, false},
		{"stateless era", nil, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(d, "gh", "cd", false)
			r := runPolicyRelay(t, p)
			for _, m := range tt.start {
				writeString(t, r.clientW, m+"\n")
				readLine(t, r.server, "server")
				writeString(t, r.serverW, `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}`+"\n")
				readLine(t, r.client, "client")
			}
			// A denied tools/call: a CallToolResult with isError.
			writeString(t, r.clientW, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_repo"`+tt.meta+`}}`+"\n")
			var call struct {
				Result map[string]json.RawMessage `json:"result"`
			}
			line := readLine(t, r.client, "client")
			if err := json.Unmarshal([]byte(line), &call); err != nil || string(call.Result["isError"]) != "true" {
				t.Fatalf("denied tools/call answered %s", line)
			}
			rt, has := call.Result["resultType"]
			if has != tt.resultType || (has && string(rt) != `"complete"`) {
				t.Fatalf("denied tools/call result %s: resultType present = %v, want %v (\"complete\")", line, has, tt.resultType)
			}
			// A denied resources/read: an error no SDK mistakes for another.
			writeString(t, r.clientW, `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"repo://x/y"`+tt.meta+`}}`+"\n")
			var rd struct {
				Error struct {
					Code int            `json:"code"`
					Data wire.ErrorData `json:"data"`
				} `json:"error"`
			}
			line = readLine(t, r.client, "client")
			if err := json.Unmarshal([]byte(line), &rd); err != nil || rd.Error.Code != wire.CodeDenied || rd.Error.Data.Mcpcage != "denied" || rd.Error.Data.Reason == "" {
				t.Fatalf("denied resources/read answered %s", line)
			}
		})
	}
}

// The client learns that the daemon announces list changes the same way in
// both eras: from the initialize result (2025-11-25 and before) and from
// the server/discover result (2026-07-28), whatever else those carry.
func TestPolicyAdvertisesListChangedInBothEras(t *testing.T) {
	d := testDaemon(t, policyConfig)
	p := testPolicy(d, "gh", "cd", false)
	tests := []struct{ name, request, result, want string }{
		{"initialize", "initialize",
			`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}`,
			`{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"s","version":"1"}}`},
		{"server/discover", "server/discover",
			`{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}},"resultType":"complete","ttlMs":0,"cacheScope":"private","supportedVersions":["2026-07-28","2025-11-25"],"capabilities":{"tools":{}}}`,
			`{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}},"resultType":"complete","ttlMs":0,"cacheScope":"private","supportedVersions":["2026-07-28","2025-11-25"],"capabilities":{"tools":{"listChanged":true}}}`},
		{"server/discover, listChanged already", "server/discover",
			`{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true},"prompts":{}}}`, ""},
		{"server/discover without tools", "server/discover",
			`{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"prompts":{}}}`, ""},
		{"another method's result is left alone", "tools/call",
			`{"capabilities":{"tools":{}},"content":[]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, msg := peek(t, `{"jsonrpc":"2.0","id":1,"result":`+tt.result+`}`)
			v := p.FromServer(e, msg, tt.request)
			want := ""
			if tt.want != "" {
				want = `{"jsonrpc":"2.0","id":1,"result":` + tt.want + `}`
			}
			if string(v.Replace) != want {
				t.Fatalf("FromServer(%s) replaced with\n%s\nwant\n%s", tt.request, v.Replace, want)
			}
		})
	}
}

func TestPolicyForgetsCancelledCalls(t *testing.T) {
	d := testDaemon(t, policyConfig)
	if _, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	p := testPolicy(d, "gh", "cd", false)
	r := runPolicyRelay(t, p)
	for i := 1; i <= 3; i++ {
		writeString(t, r.clientW, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"list_repos"}}`+"\n", i))
		readLine(t, r.server, "server")
		writeString(t, r.clientW, fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d}}`+"\n", i))
		readLine(t, r.server, "server")
	}
	// A request after the cancellations: the relay handled them all.
	writeString(t, r.clientW, `{"jsonrpc":"2.0","id":"m","method":"tools/list"}`+"\n")
	readLine(t, r.server, "server")
	p.mu.Lock()
	n := len(p.calls)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d cancelled calls still tracked", n)
	}
}
