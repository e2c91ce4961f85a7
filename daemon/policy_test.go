package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

func testDaemon(t *testing.T, cfgText string) *Daemon {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	store, err := consent.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	dir := t.TempDir()
	al, err := audit.Open(audit.Options{Path: filepath.Join(dir, "audit.jsonl"), HeadPath: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = al.Close() })
	d := &Daemon{consents: consent.NewEngine(store), sessions: map[string]*session{}, log: slog.New(slog.DiscardHandler),
		audit: al, metrics: metrics.New(), sealer: ask.NewSealer(), book: ask.NewBook(), digests: testDigests}
	d.setUserLimits()
	d.cfg.Store(cfg)
	return d
}

// testDigests is the tests' audit digester (a fixed key).
var testDigests = func() *audit.Digester {
	dg, err := audit.NewDigester(make([]byte, audit.DigestKeySize))
	if err != nil {
		panic(err)
	}
	return dg
}()

const policyConfig = `
[agents.cd]
exe = ["/opt/cd"]
servers = ["gh"]
[servers.gh]
command = ["x"]
tools_allow = ["list_*", "get_*", "delete_repo"]
tools_deny = ["delete_*"]
[servers.other]
command = ["x"]
`

func testPolicy(d *Daemon, server, agent string, observe bool) *sessionPolicy {
	s := &session{digests: testDigests, id: "s1", server: server, agent: agent, user: "root", log: slog.New(slog.DiscardHandler)}
	return &sessionPolicy{d: d, s: s, srv: d.conf().Servers[server], agent: d.conf().Agents[agent], observe: observe,
		calls: map[string]callStart{}, defs: map[string]string{}, questions: map[string]chan struct{}{}}
}

func peek(t *testing.T, msg string) (*wire.Envelope, []byte) {
	t.Helper()
	var m wire.Message
	if err := wire.Peek([]byte(msg), &m); err != nil {
		t.Fatal(err)
	}
	return &m.Envelopes[0], []byte(msg)
}

func TestPolicyCeilingAndConsents(t *testing.T) {
	d := testDaemon(t, policyConfig)
	for _, g := range []api.Grant{
		{Agent: "cd", Server: "gh", Tools: []string{"*"}},
		{Agent: "cd", Server: "other", Tools: []string{"*"}},
		{Agent: "exe:/usr/bin/x", Server: "gh", Resources: []string{"repo://acme/*"}, Prompts: []string{"summarize"}},
	} {
		if _, err := d.grant(Peer{UID: 0}, &g); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, server, agent, msg string
		allow                    bool
		reason                   string
		grantHint                bool
	}{
		{"allowed by consent within the ceiling", "gh", "cd", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_repos"}}`, true, "", false},
		{"tools_deny wins over tools_allow and consent", "gh", "cd", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}`, false, "tools_deny", false},
		{"outside tools_allow", "gh", "cd", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_repo"}}`, false, "tools_allow", false},
		{"agent's servers ceiling", "other", "cd", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"anything"}}`, false, "servers list", false},
		{"resource granted", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"repo://acme/web"}}`, true, "", false},
		{"resource not granted", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"repo://evil/web"}}`, false, "no consent", true},
		{"tool grant never covers prompts", "gh", "cd", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summarize"}}`, false, "no consent", true},
		{"prompt granted", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summarize"}}`, true, "", false},
		{"completion on a granted prompt", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summarize"},"argument":{"name":"a","value":"b"}}}`, true, "", false},
		// subscriptions/listen (2026-07-28) names resources for the server
		// to watch: the stateless era's resources/subscribe, decided per
		// URI (it passed undecided: found by a red-team helper).
		{"listen to a granted resource", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["repo://acme/web"]}}}`, true, "", false},
		{"listen to a resource not granted", "gh", "exe:/usr/bin/x", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["repo://acme/web","file:///etc/shadow"]}}}`, false, "no consent", true},
		{"listen to list changes only", "gh", "nobody", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}`, true, "", false},
		{"other methods pass", "gh", "nobody", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, true, "", false},
		{"notifications pass", "gh", "nobody", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, true, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(d, tt.server, tt.agent, false)
			e, msg := peek(t, tt.msg)
			v := p.FromClient(e, msg)
			if v.Deny == tt.allow {
				t.Fatalf("verdict %+v, want allow=%v", v, tt.allow)
			}
			if !tt.allow {
				if !strings.Contains(string(v.Reply), tt.reason) {
					t.Fatalf("reply %s lacks %q", v.Reply, tt.reason)
				}
				if strings.Contains(string(v.Reply), "mcpcage grant") != tt.grantHint {
					t.Fatalf("reply %s: grant hint present = %v, want %v", v.Reply, !tt.grantHint, tt.grantHint)
				}
			}
			// Observe mode lets everything through.
			if v := testPolicy(d, tt.server, tt.agent, true).FromClient(e, msg); v.Deny {
				t.Fatalf("observe mode denied: %+v", v)
			}
		})
	}
}

// A resource URI that a server's SDK would normalize into another one
// (new URL in TypeScript, pydantic's AnyUrl in Python) is refused, in
// every request that names a resource for a decision, with a reason
// that says so: with a consent for file:///work/*, file:///work/../etc
// was allowed and the server served file:///etc (found by a red-team
// helper). It is refused in observe mode too, as every ambiguous request.
func TestResourceURIsInNormalFormOnly(t *testing.T) {
	d := testDaemon(t, policyConfig)
	g := api.Grant{Agent: "exe:/usr/bin/x", Server: "gh", Resources: []string{"file:///work/*", "demo://resource/dynamic/*"}}
	if _, err := d.grant(Peer{UID: 0}, &g); err != nil {
		t.Fatal(err)
	}
	read := func(uri string) string {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": map[string]any{"uri": uri}})
		return string(b)
	}
	tests := []struct {
		name, msg string
		allow     bool
	}{
		{"a normal URI", read("file:///work/readme.txt"), true},
		{"dots in the query", read("file:///work/a..b?x=../y"), true},
		{"a custom scheme", read("demo://resource/dynamic/1"), true},
		{"dot dot", read("file:///work/../etc/secret.txt"), false},
		{"dot dot escaped", read("file:///work/%2e%2e/etc/secret.txt"), false},
		{"backslash", read(`file:///work/..\etc/secret.txt`), false},
		{"tab", read("file:///work/\t../etc/secret.txt"), false},
		{"dot dot in a custom scheme", read("demo://resource/dynamic/../static/x"), false},
		{"subscribe", `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///work/../etc/secret.txt"}}`, false},
		{"a completion's ref", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///work/../{x}"},"argument":{"name":"x","value":""}}}`, false},
		{"listen", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///work/../etc/secret.txt"]}}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, observe := range []bool{false, true} {
				e, msg := peek(t, tt.msg)
				v := testPolicy(d, "gh", "exe:/usr/bin/x", observe).FromClient(e, msg)
				if v.Deny == tt.allow {
					t.Fatalf("observe %v: verdict %+v (reply %s), want allow=%v", observe, v, v.Reply, tt.allow)
				}
				if !tt.allow && !strings.Contains(string(v.Reply), "is not in normal form") {
					t.Fatalf("observe %v: reply %s does not say why", observe, v.Reply)
				}
			}
		})
	}
}

// The administrator's patterns read '*' across '/': a tool a server
// names "repo/delete" is as forbidden by tools_deny = ["*delete*"] as
// "delete_repo", whatever the user granted, and is neither listed nor
// put to the user in ask mode. With path.Match, '*' stopped at '/' and
// let it past "*delete*" and even "*" (found by a red-team helper).
func TestCeilingPatternsCrossSlash(t *testing.T) {
	d := testDaemon(t, `
[agents.cd]
exe = ["/opt/cd"]
[servers.deny]
command = ["x"]
tools_deny = ["*delete*"]
[servers.denyall]
command = ["x"]
tools_deny = ["*"]
[servers.allow]
command = ["x"]
tools_allow = ["repo/*", "list_*"]
`)
	tests := []struct {
		server, tool string
		reason       string // of the ceiling; "" when it allows the tool
	}{
		{"deny", "repo/delete", "tools_deny"},
		{"deny", "github/delete_repo", "tools_deny"},
		{"deny", "a/b/delete", "tools_deny"},
		{"deny", "delete_repo", "tools_deny"},
		{"deny", "repo/list", ""},
		{"denyall", "repo/list", "tools_deny"},
		{"denyall", "echo", "tools_deny"},
		{"allow", "repo/a/b", ""},
		{"allow", "list_x/y", ""}, // tools_allow reads '*' across '/' too
		{"allow", "other/list_x", "tools_allow"},
		{"allow", "repo", "tools_allow"},
	}
	// The user grants each tool by its exact name: only the ceiling can
	// refuse it.
	for _, tt := range tests {
		if _, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: tt.server, Tools: []string{tt.tool}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.server+" "+tt.tool, func(t *testing.T) {
			forbidden := tt.reason != ""
			p := testPolicy(d, tt.server, "cd", false)
			if got := p.ceiling(consent.KindTool, tt.tool); got != forbidden {
				t.Fatalf("ceiling(%q) = %v, want %v", tt.tool, got, forbidden)
			}
			call, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{"name": tt.tool}})
			e, msg := peek(t, string(call))
			v := p.FromClient(e, msg)
			if v.Deny != forbidden || (forbidden && !strings.Contains(string(v.Reply), tt.reason)) {
				t.Fatalf("tools/call %s: verdict %+v (reply %s), want denied = %v for %q", tt.tool, v, v.Reply, forbidden, tt.reason)
			}
			list, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 2, "result": map[string]any{"tools": []any{map[string]any{"name": tt.tool}}}})
			e, msg = peek(t, string(list))
			if v := p.FromServer(e, msg, "tools/list"); (v.Replace != nil) != forbidden {
				t.Fatalf("tools/list with %s: rewritten to %s, want it hidden = %v", tt.tool, v.Replace, forbidden)
			}
			asking := testPolicy(d, tt.server, "cd", false)
			asking.ask = true
			if got := asking.askable(consent.KindTool, tt.tool); got == forbidden {
				t.Fatalf("ask mode: askable(%q) = %v, want %v", tt.tool, got, !forbidden)
			}
		})
	}
}

func TestPolicyToolErrorShape(t *testing.T) {
	b := toolError([]byte(`"a-1"`), "denied \"x\"", relay.EraInitialize)
	var r struct {
		ID     string `json:"id"`
		Result struct {
			IsError bool `json:"isError"`
			Content []struct {
				Type, Text string
			} `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID != "a-1" || !r.Result.IsError || r.Result.Content[0].Text != `denied "x"` {
		t.Fatalf("toolError = %s (%v)", b, err)
	}
}

func TestPolicyFiltersListsKeepingTheRest(t *testing.T) {
	d := testDaemon(t, policyConfig)
	if _, err := d.grant(Peer{UID: 0}, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"list_*"}}); err != nil {
		t.Fatal(err)
	}
	p := testPolicy(d, "gh", "cd", false)
	resp := `{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"list_repos","inputSchema":{"$schema":"x","type":"object","unknownKey":1}},{"name":"get_issue"},{"name":"list_prs"}],"nextCursor":"abc=="}}`
	e, msg := peek(t, resp)
	v := p.FromServer(e, msg, "tools/list")
	want := `{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"list_repos","inputSchema":{"$schema":"x","type":"object","unknownKey":1}},{"name":"list_prs"}],"nextCursor":"abc=="}}`
	if string(v.Replace) != want {
		t.Fatalf("filtered:\n%s\nwant\n%s", v.Replace, want)
	}
	// Nothing hidden: no rewrite at all.
	e, msg = peek(t, `{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"list_a"}]}}`)
	if v := p.FromServer(e, msg, "tools/list"); v.Replace != nil {
		t.Fatalf("rewrote a list with nothing to hide: %s", v.Replace)
	}
	// The same response to another request is left alone.
	e, msg = peek(t, resp)
	if v := p.FromServer(e, msg, "resources/list"); v.Replace != nil {
		t.Fatalf("rewrote a response to another method")
	}
}

func TestAdvertiseListChanged(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"s"}}`,
			`{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"s"}}`},
		{`{"capabilities":{"tools":{"listChanged":true}}}`, ""},
		{`{"capabilities":{"prompts":{}}}`, ""},
	}
	for _, tt := range tests {
		got := advertiseListChanged([]byte(tt.in))
		if string(got) != tt.want {
			t.Errorf("advertiseListChanged(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestConsentAuthorization(t *testing.T) {
	d := testDaemon(t, policyConfig)
	root, nobody := Peer{UID: 0}, Peer{UID: 65534}
	if _, err := d.grant(nobody, &api.Grant{User: "root", Agent: "cd", Server: "gh", Tools: []string{"*"}}); err == nil || !strings.Contains(err.Error(), "only grant for yourself") {
		t.Fatalf("nobody granted for root: %v", err)
	}
	mine, err := d.grant(nobody, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"*"}})
	if err != nil || mine.User != "nobody" {
		t.Fatalf("own grant: %+v %v", mine, err)
	}
	roots, err := d.grant(root, &api.Grant{Agent: "cd", Server: "gh", Tools: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	forNobody, err := d.grant(root, &api.Grant{User: "nobody", Agent: "cd", Server: "gh", Tools: []string{"get_*"}})
	if err != nil || forNobody.User != "nobody" || forNobody.CreatedBy != "root" {
		t.Fatalf("root granting for nobody: %+v %v", forNobody, err)
	}
	if _, err := d.revoke(nobody, roots.ID, ""); !errors.Is(err, consent.ErrNotFound) {
		t.Fatalf("nobody revoked root's record: %v", err)
	}
	if _, err := d.revoke(root, mine.ID, "admin"); err != nil {
		t.Fatalf("root revoking nobody's record: %v", err)
	}
	for _, bad := range []api.Grant{
		{Agent: "ghost", Server: "gh", Tools: []string{"*"}},
		{Agent: "cd", Server: "nope", Tools: []string{"*"}},
		{Agent: "cd", Server: "gh"},
		{Agent: "cd", Server: "gh", Tools: []string{"[x"}},
		{Agent: "cd", Server: "gh", Tools: []string{"*"}, Expires: "yesterday"},
		{Agent: "cd", Server: "gh", Tools: []string{"*"}, Expires: "2001-01-01T00:00Z"},
		{Agent: "cd", Server: "gh", Tools: []string{"*"}, When: "args.x +"},
	} {
		if _, err := d.grant(root, &bad); err == nil {
			t.Errorf("grant %+v accepted", bad)
		}
	}
	list := func(p Peer) int {
		var buf bytes.Buffer
		d.consentOp(context.Background(), api.NewFrameWriter(&buf), p, api.Request{Op: api.OpConsents, All: true}, d.log)
		_, payload, err := api.NewFrameReader(&buf).Next()
		if err != nil {
			t.Fatal(err)
		}
		var r api.Reply
		var recs []consent.Record
		if json.Unmarshal(payload, &r) != nil || !r.OK || json.Unmarshal(r.Data, &recs) != nil {
			t.Fatalf("consents reply: %s", payload)
		}
		return len(recs)
	}
	if list(root) != 3 || list(nobody) != 2 {
		t.Fatalf("visible records: root %d, nobody %d; want 3 and 2", list(root), list(nobody))
	}
}
