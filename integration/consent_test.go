package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// consentDaemon runs mcpcaged enforcing consents, with this test binary
// (the MCP client's process) registered as agent "itest".
func consentDaemon(t *testing.T, extra string, opts ...func(*daemon)) *daemon {
	t.Helper()
	setup(t)
	self, err := os.Executable()
	must(t, err, "executable")
	return startDaemon(t, fmt.Sprintf("[daemon]\ndefault_decision = \"deny\"\n[agents.itest]\nexe = [%q]\n%s", self, extra), opts...)
}

// cli runs the mcpcage CLI against d, as uid when uid > 0.
func (d *daemon) cli(t *testing.T, uid int, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"--socket", d.socket}, args...)...)
	if uid > 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *daemon) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.cli(t, 0, args...)
	if err != nil {
		t.Fatalf("mcpcage %v: %v\n%s", args, err, out)
	}
	return out
}

func toolNames(t *testing.T, c *mcpClient) []string {
	t.Helper()
	res, err := c.ListTools(ctxT(t, 30*time.Second), mcp.ListToolsRequest{})
	must(t, err, "tools/list")
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names
}

// listChanges counts notifications/tools/list_changed on c. In the
// 2026-07-28 era (modern) they travel only on a subscriptions/listen
// stream: it opens one and waits for the server's acknowledgement.
func listChanges(t *testing.T, c *mcpClient, modern bool) *atomic.Int64 {
	t.Helper()
	var n, acks atomic.Int64
	c.OnNotification(func(note mcp.JSONRPCNotification) {
		switch note.Method {
		case "notifications/tools/list_changed":
			n.Add(1)
		case "notifications/subscriptions/acknowledged":
			acks.Add(1)
		}
	})
	if modern {
		stop, err := c.ListenAsync(context.Background(), mcp.SubscriptionFilter{ToolsListChanged: true}, func(err error) { t.Errorf("subscriptions/listen: %v", err) })
		must(t, err, "subscriptions/listen")
		t.Cleanup(stop)
		testenv.WaitFor(t, "the subscriptions/listen stream acknowledged", 10*time.Second, func() (bool, string) {
			return acks.Load() > 0, fmt.Sprintf("%d acknowledgements", acks.Load())
		})
	}
	return &n
}

func waitCount(t *testing.T, n *atomic.Int64, atLeast int64, what string) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%s: at least %d list_changed notifications", what, atLeast), 10*time.Second, func() (bool, string) {
		got := n.Load()
		return got >= atLeast, fmt.Sprintf("%d notifications", got)
	})
}

var consentID = regexp.MustCompile(`^c-[0-9a-f]{12}\n$`)

// A denial names the command that allows the call, and that command must
// allow that call only. Grant patterns are globs: a tool named "*" once
// got "--tool '*'", which the user would run to allow one call and so
// allow every tool of the server.
func TestDenialsGrantCommandAllowsOnlyThatName(t *testing.T) {
	d := consentDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	got, isErr := callText(t, c, "*", map[string]any{})
	m := regexp.MustCompile(`To allow it, run: (mcpcage grant --agent itest --server test --tool (\S+))`).FindStringSubmatch(got)
	if !isErr || m == nil {
		t.Fatalf("denied call of tool \"*\": %q (isError %v), want the grant command", got, isErr)
	}
	if m[2] != `'\*'` {
		t.Fatalf("the grant command %q gives the pattern %s, want '\\*' (only the tool named *)", m[1], m[2])
	}
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", strings.Trim(m[2], "'"))
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr || !strings.Contains(got, "mcpcage denied") {
		t.Fatalf("echo after granting the tool named *: %q (isError %v), want it still denied", got, isErr)
	}
	// Forwarded now: the test server has no such tool and says so.
	_, err := c.CallTool(ctxT(t, 30*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "*", Arguments: map[string]any{}}})
	if err == nil || !strings.Contains(err.Error(), "tool '*' not found") {
		t.Fatalf("the tool named * after its grant: %v, want the server's answer (forwarded)", err)
	}
}

// TestListenedResourcesAreDecided: in the stateless era a client asks the
// server to watch resources in subscriptions/listen
// (notifications.resourceSubscriptions; mcp-go's Subscribe does so), the
// era's resources/subscribe. It passed undecided (found by a red-team
// helper): now each URI is decided as resources/subscribe is.
func TestListenedResourcesAreDecided(t *testing.T) {
	d := consentDaemon(t, "")
	c := d.connect(t, "test", "") // mcp-go's default: 2026-07-28
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--resource", "notes://*")
	ctx := ctxT(t, 30*time.Second)
	err := c.Listen(ctx, mcp.SubscriptionFilter{ToolsListChanged: true, ResourceSubscriptions: []string{"notes://1", "file:///etc/shadow"}})
	if err == nil || !strings.Contains(err.Error(), `mcpcage denied subscriptions/listen "file:///etc/shadow"`) || !strings.Contains(err.Error(), "--resource") {
		t.Fatalf("listening to a resource no consent covers: %v, want it denied with the grant that would allow it", err)
	}
	d.record(t, "request.denied", func(r map[string]any) bool {
		return str(r, "method") == "subscriptions/listen" && str(r, "name") == "file:///etc/shadow"
	})
	// A granted one goes on to the server, recorded.
	listening, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		_ = c.Listen(listening, mcp.SubscriptionFilter{ToolsListChanged: true, ResourceSubscriptions: []string{"notes://1"}})
	}()
	d.record(t, "request", func(r map[string]any) bool {
		return str(r, "method") == "subscriptions/listen" && str(r, "name") == "notes://1" && str(r, "decision") == "allow"
	})
}

// TestConsentsByAdmin: any process of a user could give that user's
// consents (mcpcage grant, approve), the agent's own shell tool included:
// an agent told so could allow its own calls (found by a red-team
// helper). Under consents_by = "admin" only root and the admin group
// give consents out of band; a denial says who can allow it, and how.
func TestConsentsByAdmin(t *testing.T) {
	uid, d := adminConsentsDaemon(t, "deny")
	c := d.connectAs(t, "test", uid)
	got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"})
	if !isErr || !strings.Contains(got, "An administrator can allow it") || !strings.Contains(got, "sudo mcpcage grant --agent itest --server test --tool echo --user mcpcage-itest") {
		t.Fatalf("the denial under consents_by = admin: %q", got)
	}
	// The user (or the agent, as the user) cannot allow it.
	if out, err := d.cli(t, uid, "grant", "--agent", "itest", "--server", "test", "--tool", "echo"); err == nil || !strings.Contains(out, "only root and the admin group grant consents") {
		t.Fatalf("a user's own grant under consents_by = admin: %v %s", err, out)
	}
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr {
		t.Fatalf("the call after the user's refused grant passed: %q", got)
	}
	// An administrator can.
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--user", "mcpcage-itest")
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); isErr || got != "hi" {
		t.Fatalf("the call after the administrator's grant: %q (isError %v)", got, isErr)
	}
}

// TestAdminGroupMemberCannotConsentForItself: under consents_by = "admin"
// a member of admin_group gave consents without sudo, its own included, so
// the member's agent (which runs with the member's groups) could allow its
// own calls (found by a red-team helper). The group's members give other
// users' consents; their own need root.
func TestAdminGroupMemberCannotConsentForItself(t *testing.T) {
	setup(t)
	self, err := os.Executable()
	must(t, err, "executable")
	uid, _ := testUser(t) // its own group, mcpcage-itest, is the admin group here
	d := startDaemon(t, fmt.Sprintf("[daemon]\ndefault_decision = \"deny\"\nconsents_by = \"admin\"\nadmin_group = \"mcpcage-itest\"\n[agents.itest]\nexe = [%q]\n", self))
	d.openToOtherUsers(t)
	if out, err := d.cli(t, uid, "grant", "--agent", "itest", "--server", "test", "--tool", "echo"); err == nil || !strings.Contains(out, "consents that cover your own sessions need root") {
		t.Fatalf("an admin group member's grant for itself: %v %s", err, out)
	}
	c := d.connectAs(t, "test", uid)
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr {
		t.Fatalf("the member's call after its refused grant passed: %q", got)
	}
	// For another user it may.
	if out, err := d.cli(t, uid, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--user", "root"); err != nil {
		t.Fatalf("an admin group member's grant for another user: %v %s", err, out)
	}
	// Root grants for it.
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--user", "mcpcage-itest")
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); isErr || got != "hi" {
		t.Fatalf("the member's call after root's grant: %q (isError %v)", got, isErr)
	}
}

func TestConsentStory(t *testing.T) {
	d := consentDaemon(t, "")
	for _, pin := range []string{"", mcp.ProtocolVersion20251125} {
		t.Run("era="+pin, func(t *testing.T) {
			c := d.connect(t, "test", pin)
			changes := listChanges(t, c, pin == "")
			if names := toolNames(t, c); len(names) != 0 {
				t.Fatalf("with nothing granted the agent sees %v", names)
			}
			got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"})
			if !isErr || !strings.Contains(got, "mcpcage grant --agent itest --server test --tool echo") {
				t.Fatalf("ungranted call: %q (isError %v), want a denial naming the grant command", got, isErr)
			}
			out := d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "ech*", "--expires", "8h")
			if !consentID.MatchString(out) {
				t.Fatalf("grant printed %q, want the record id alone", out)
			}
			id := strings.TrimSpace(out)
			waitCount(t, changes, 1, "after grant")
			if names := toolNames(t, c); len(names) != 1 || names[0] != "echo" {
				t.Fatalf("after grant the agent sees %v, want [echo]", names)
			}
			if got, isErr := callText(t, c, "echo", map[string]any{"text": "granted"}); isErr || got != "granted" {
				t.Fatalf("granted call: %q (isError %v)", got, isErr)
			}
			if got, isErr := callText(t, c, "env", map[string]any{"name": "HOME"}); !isErr || !strings.Contains(got, "--tool env") {
				t.Fatalf("ungranted tool after a grant: %q", got)
			}
			list := d.mustCLI(t, "consents")
			if !strings.Contains(list, id) || !strings.Contains(list, "tool:ech*") || !strings.Contains(list, "active") {
				t.Fatalf("consents:\n%s", list)
			}
			var sessions []api.SessionInfo
			must(t, json.Unmarshal([]byte(d.mustCLI(t, "sessions", "--json")), &sessions), "sessions json")
			found := false
			for _, s := range sessions {
				if s.Agent == "itest" && s.Server == "test" && s.Allowed >= 1 && s.Denied >= 2 && strings.Contains(s.AgentInstance, "@") {
					found = true
				}
			}
			if !found {
				t.Fatalf("sessions: %+v", sessions)
			}
			d.mustCLI(t, "revoke", id, "--reason", "test over")
			waitCount(t, changes, 2, "after revoke")
			if got, isErr := callText(t, c, "echo", map[string]any{"text": "again"}); !isErr || !strings.Contains(got, "revoked") {
				t.Fatalf("call after revoke: %q (isError %v)", got, isErr)
			}
			if names := toolNames(t, c); len(names) != 0 {
				t.Fatalf("after revoke the agent sees %v", names)
			}
			show := d.mustCLI(t, "consents", "show", id)
			if !strings.Contains(show, "revoked:") || !strings.Contains(show, "test over") {
				t.Fatalf("consents show:\n%s", show)
			}
		})
	}
}

func TestConsentAgentsAndUsers(t *testing.T) {
	uid, _ := testUser(t)
	self, _ := os.Executable()
	d := consentDaemon(t, "")
	// Unregistered: another daemon without [agents] names the agent by path.
	plain := startDaemon(t, "[daemon]\ndefault_decision = \"deny\"\n")
	c := plain.connect(t, "test", mcp.ProtocolVersion20251125)
	got, _ := callText(t, c, "echo", map[string]any{"text": "x"})
	if !strings.Contains(got, "--agent exe:"+self) {
		t.Fatalf("unregistered agent's denial: %q", got)
	}
	plain.mustCLI(t, "grant", "--agent", "exe:"+self, "--server", "test", "--tool", "echo")
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "by path"}); isErr || got != "by path" {
		t.Fatalf("exe-path grant: %q", got)
	}

	// Root's grant does not cover another user's sessions.
	id := strings.TrimSpace(d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "*"))
	d.openToOtherUsers(t)
	other := d.connectAs(t, "test", uid)
	if got, isErr := callText(t, other, "echo", map[string]any{"text": "x"}); !isErr || !strings.Contains(got, "user mcpcage-itest") {
		t.Fatalf("second user used the first user's grant: %q", got)
	}
	if out, _ := d.cli(t, uid, "consents"); strings.Contains(out, id) {
		t.Fatalf("a user sees another user's consents:\n%s", out)
	}
	if out, err := d.cli(t, uid, "revoke", id); err == nil || !strings.Contains(out, "no such consent") {
		t.Fatalf("a user revoked another user's consent: %v %s", err, out)
	}
	if out, err := d.cli(t, uid, "grant", "--agent", "itest", "--server", "test", "--tool", "*", "--user", "root"); err == nil || !strings.Contains(out, "only grant for yourself") {
		t.Fatalf("a user granted for root: %v %s", err, out)
	}
	// Their own grant works for them.
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--user", "mcpcage-itest")
	if got, isErr := callText(t, other, "echo", map[string]any{"text": "mine"}); isErr || got != "mine" {
		t.Fatalf("second user's own grant: %q", got)
	}
}

func TestConsentConditionsBudgetsExpiryCeiling(t *testing.T) {
	setup(t) // env.bin names the test server below
	d := consentDaemon(t, "[servers.test2]\ncommand = [\""+filepath.Join(env.bin, "testserver")+"\"]\ntools_deny = [\"env\"]\n")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	changes := listChanges(t, c, false)

	if out, err := d.cli(t, 0, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--when", "args.text.startsWith("); err == nil || !strings.Contains(out, "Syntax error") {
		t.Fatalf("bad condition accepted: %v %s", err, out)
	}
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--when", `args.text.startsWith("ok")`)
	if _, isErr := callText(t, c, "echo", map[string]any{"text": "ok go"}); isErr {
		t.Fatal("condition true, call denied")
	}
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "nope"}); !isErr || !strings.Contains(got, "condition") {
		t.Fatalf("condition false: %q", got)
	}

	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "sleep", "--max-calls", "2")
	for i := 0; i < 2; i++ {
		if _, isErr := callText(t, c, "sleep", map[string]any{"ms": 1}); isErr {
			t.Fatalf("budgeted call %d denied", i+1)
		}
	}
	if got, isErr := callText(t, c, "sleep", map[string]any{"ms": 1}); !isErr || !strings.Contains(got, "no calls left") && !strings.Contains(got, "used up") {
		t.Fatalf("third call on a budget of 2: %q", got)
	}

	before := changes.Load()
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "list_dir", "--expires", "2s")
	if names := toolNames(t, c); !contains(names, "list_dir") {
		t.Fatalf("before expiry: %v", names)
	}
	waitCount(t, changes, before+2, "grant and expiry") // one for the grant, one when it expires
	if got, isErr := callText(t, c, "list_dir", map[string]any{"path": "/"}); !isErr || !strings.Contains(got, "expired") {
		t.Fatalf("after expiry: %q", got)
	}

	// The admin ceiling wins over any consent, and no grant command is offered.
	c2 := d.connect(t, "test2", mcp.ProtocolVersion20251125)
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test2", "--tool", "*")
	if got, isErr := callText(t, c2, "env", map[string]any{"name": "HOME"}); !isErr || !strings.Contains(got, "tools_deny") || strings.Contains(got, "mcpcage grant") {
		t.Fatalf("tools_deny: %q", got)
	}
	if names := toolNames(t, c2); contains(names, "env") || !contains(names, "echo") {
		t.Fatalf("tools/list under the ceiling: %v", names)
	}
}

// A tool whose name holds '/' (the TypeScript SDK lets a server name it
// so) is under the administrator's ceiling as any other: tools_deny =
// ["*delete*"] hides repo/delete from tools/list and refuses its calls
// with the reason, whatever the user granted, and ask mode never asks
// about it. The ceiling's '*' stopped at '/' (path.Match), so the user
// was asked about, or a grant ran, a tool the administrator forbade
// (found by a red-team helper).
func TestCeilingCoversToolNamesWithSlash(t *testing.T) {
	setup(t)
	ts := filepath.Join(env.bin, "testserver")
	const srv = "command = [%q]\ntools_deny = [\"*delete*\"]\nenv = { TESTSERVER_NAMESPACED_TOOLS = \"1\" }\n"
	d := consentDaemon(t, fmt.Sprintf("[servers.ns]\n"+srv+"[servers.ns-ask]\ndefault_decision = \"ask\"\n"+srv, ts, ts))
	forbidden := func(server string) string {
		return fmt.Sprintf(`tool "repo/delete" is forbidden by the administrator ([servers.%s] tools_deny)`, server)
	}

	// Deny mode: the user's grant of every repo/ tool does not lift it.
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "ns", "--tool", "repo/*")
	c := d.connect(t, "ns", mcp.ProtocolVersion20251125)
	if names := toolNames(t, c); contains(names, "repo/delete") || !contains(names, "repo/list") {
		t.Fatalf("tools/list: %v, want repo/list shown and repo/delete hidden", names)
	}
	if text, isErr := callText(t, c, "repo/delete", map[string]any{}); !isErr || !strings.Contains(text, forbidden("ns")) || strings.Contains(text, "mcpcage grant") {
		t.Fatalf("a call of repo/delete: %q (isError %v), want it refused under tools_deny, with no grant command", text, isErr)
	}
	d.record(t, "tool.call", func(r map[string]any) bool {
		return str(r, "server") == "ns" && str(r, "tool") == "repo/delete" && str(r, "decision") == "deny" && str(r, "reason") == forbidden("ns")
	})
	if text, isErr := callText(t, c, "repo/list", map[string]any{}); isErr || text != "ran repo/list" {
		t.Fatalf("a call of repo/list (granted): %q (isError %v)", text, isErr)
	}

	// Ask mode: repo/delete is neither shown nor asked about; repo/list
	// is, which shows this client takes questions.
	a := &answerer{answer: "once"}
	ca := d.connectWith(t, "ns-ask", mcp.ProtocolVersion20251125, client.WithElicitationHandler(a))
	if names := toolNames(t, ca); contains(names, "repo/delete") || !contains(names, "repo/list") {
		t.Fatalf("ask mode: tools/list: %v, want repo/list shown and repo/delete hidden", names)
	}
	if text, isErr := callText(t, ca, "repo/delete", map[string]any{}); !isErr || !strings.Contains(text, forbidden("ns-ask")) {
		t.Fatalf("ask mode: a call of repo/delete: %q (isError %v), want it refused under tools_deny", text, isErr)
	}
	if qs := a.questions(); len(qs) != 0 {
		t.Fatalf("ask mode: the user was asked about a tool tools_deny forbids: %q", qs[0].Message)
	}
	if text, isErr := callText(t, ca, "repo/list", map[string]any{}); isErr || text != "ran repo/list" {
		t.Fatalf("ask mode: a call of repo/list answered once: %q (isError %v)", text, isErr)
	}
	if qs := a.questions(); len(qs) != 1 || !strings.Contains(qs[0].Message, `call tool "repo/list"`) {
		t.Fatalf("ask mode: questions %v, want one, about repo/list", qs)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestConsentBatchDecidedPerElement(t *testing.T) {
	d := consentDaemon(t, "")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo")
	r := startRaw(t, d.shimCmd("test"))
	r.initialize()
	r.send(`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"in batch"}}},` +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"env","arguments":{"name":"HOME"}}}]` + "\n")
	var allowed, denied string
	for allowed == "" || denied == "" {
		line := r.next()
		if strings.Contains(line, "in batch") {
			allowed = line
		}
		if strings.Contains(line, `"isError":true`) && strings.Contains(line, "--tool env") {
			denied = line
		}
	}
	if !strings.Contains(denied, `"id":2`) {
		t.Fatalf("denial answers the wrong id: %s", denied)
	}
}

func TestConsentWithTypeScriptSDKClient(t *testing.T) {
	setup(t)
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "Node.js")
	root, _ := filepath.Abs("..")
	script := filepath.Join(root, "testdata", "tsclient", "client.mjs")
	_, err = os.Stat(filepath.Join(root, "testdata", "tsclient", "node_modules", "@modelcontextprotocol", "sdk"))
	testenv.Require(t, err == nil, "the MCP TypeScript SDK (make deps: npm ci in testdata/tsclient)")
	d := consentDaemon(t, "")
	cmd := exec.Command(node, script, filepath.Join(env.bin, "mcpcage"), "test", "echo", `{"text":"from the TS SDK"}`, "wait-list-changed")
	cmd.Env = append(os.Environ(), "MCPCAGE_SOCKET="+d.socket)
	out, err := cmd.StdoutPipe()
	must(t, err, "stdout")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	must(t, cmd.Start(), "start node")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	steps := make(chan map[string]any, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				steps <- m
			}
		}
		close(steps)
	}()
	next := func(want string) map[string]any {
		t.Helper()
		select {
		case m, ok := <-steps:
			if !ok || m["step"] != want {
				t.Fatalf("TS client step %v (ok %v), want %q; stderr:\n%s", m, ok, want, stderr.String())
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("TS client: no %q step; stderr:\n%s", want, stderr.String())
		}
		return nil
	}
	next("connected")
	if tools := next("tools")["tools"].([]any); len(tools) != 0 {
		t.Fatalf("TS agent sees %v with nothing granted", tools)
	}
	call := next("call")
	text, _ := call["text"].(string)
	if call["isError"] != true || !strings.Contains(text, "mcpcage grant --agent script:") {
		t.Fatalf("denied call seen by the TS SDK: %v", call)
	}
	// node running client.mjs: the script, not bare node (any script).
	agent := regexp.MustCompile(`--agent (script:\S+)`).FindStringSubmatch(text)[1]
	if agent != "script:"+script {
		t.Fatalf("the TS agent was identified as %q, want script:%s", agent, script)
	}
	next("waiting")
	d.mustCLI(t, "grant", "--agent", agent, "--server", "test", "--tool", "echo")
	if tools := next("tools-after-change")["tools"].([]any); len(tools) != 1 || tools[0] != "echo" {
		t.Fatalf("TS agent after grant sees %v", tools)
	}
	if c := next("call-after-change"); c["isError"] != false || c["text"] != "from the TS SDK" {
		t.Fatalf("TS agent call after grant: %v", c)
	}
}

// TestOthersGrantsLeaveYourDecisionsCached: one user's grants and
// revocations do not send another user's decisions to the consent store.
// Every change used to empty the whole decision cache, so a user churning
// grants (8 workers of 16 KiB grants: found by a red-team helper) put
// every other session's next decision in the queue for the store's one
// connection behind the churn: root's allowed call went from 1 ms to 1-3 s.
// mcpcage_consent_lookups_total counts the decisions that read the store.
func TestOthersGrantsLeaveYourDecisionsCached(t *testing.T) {
	d := consentDaemon(t, "")
	uid, _ := testUser(t)
	d.openToOtherUsers(t)
	id := strings.TrimSpace(d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo"))
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	call := func() {
		t.Helper()
		if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); isErr || got != "hi" {
			t.Fatalf("root's granted call: %q (isError %v)", got, isErr)
		}
	}
	call()
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	lookups := func() float64 { return metricValue(t, scrape(t, st.Metrics), "mcpcage_consent_lookups_total") }
	before := lookups()
	if before < 1 {
		t.Fatalf("mcpcage_consent_lookups_total is %v after a decided call, want at least 1 (is it served?)", before)
	}
	patterns := []string{"grant", "--agent", "exe:/usr/bin/true", "--server", "test"}
	for i := range 16 {
		patterns = append(patterns, "--tool", fmt.Sprintf("%02d%s", i, strings.Repeat("p", 1000)))
	}
	for i := range 10 {
		out, err := d.cli(t, uid, patterns...)
		if err != nil || !consentID.MatchString(out) {
			t.Fatalf("the user's grant %d: %v %s", i, err, out)
		}
		call()
		if out, err := d.cli(t, uid, "revoke", strings.TrimSpace(out)); err != nil {
			t.Fatalf("the user's revoke %d: %v %s", i, err, out)
		}
		call()
	}
	if after := lookups(); after != before {
		t.Fatalf("root's 20 calls between another user's grants and revocations read the consent store %v times, want 0", after-before)
	}
	// Root's own change is seen at once.
	d.mustCLI(t, "revoke", id)
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr {
		t.Fatalf("root's call after root revoked its consent %s: %q", id, got)
	}
	if after := lookups(); after != before+1 {
		t.Fatalf("root's call after its own revocation read the store %v times, want 1", after-before)
	}
}

// TestUsersServerChangedLosesItsConsents: a consent for a user's own
// server is for the server as it was. Under consents_by = "admin" an
// agent with a shell could otherwise swap the program under an
// administrator's grant: `server rm` (which also drops the tool pins)
// and `server add` of another program under the name kept every consent
// (left in an earlier note). Removing the server, or defining it anew,
// now revokes its user's consents for it, before the change takes
// effect; adding it again as it was keeps them.
func TestUsersServerChangedLosesItsConsents(t *testing.T) {
	uid, d := adminConsentsDaemon(t, "deny")
	testserver := filepath.Join(env.bin, "testserver")
	add := func(args ...string) {
		t.Helper()
		if out, err := d.cli(t, uid, append([]string{"server", "add", "mine"}, args...)...); err != nil {
			t.Fatalf("server add as the user: %v %s", err, out)
		}
	}
	call := func() (string, bool) {
		t.Helper()
		c := d.connectAs(t, "mine", uid)
		defer func() { _ = c.Close() }()
		return callText(t, c, "echo", map[string]any{"text": "hi"})
	}
	grant := func() string {
		t.Helper()
		return strings.TrimSpace(d.mustCLI(t, "grant", "--agent", "itest", "--server", "mine", "--tool", "echo", "--user", "mcpcage-itest"))
	}
	add("--", testserver)
	id := grant()
	if got, isErr := call(); isErr || got != "hi" {
		t.Fatalf("the granted call: %q (isError %v)", got, isErr)
	}
	// Added again as it was (client setup run twice): the grant stays.
	add("--", testserver)
	if got, isErr := call(); isErr || got != "hi" {
		t.Fatalf("the call after the server was added again unchanged: %q (isError %v)", got, isErr)
	}
	for _, change := range []struct {
		name string
		do   func()
		why  string
	}{
		{"removed and added with another definition", func() {
			if out, err := d.cli(t, uid, "server", "rm", "mine"); err != nil {
				t.Fatalf("server rm as the user: %v %s", err, out)
			}
			add("--env", "SWAPPED=1", "--", testserver)
		}, "server mine was removed by its user"},
		{"replaced by another definition", func() { add("--env", "SWAPPED=2", "--", testserver) }, "server mine was defined anew by its user"},
	} {
		t.Run(change.name, func(t *testing.T) {
			change.do()
			got, isErr := call()
			if !isErr || !strings.Contains(got, "An administrator can allow it") {
				t.Fatalf("a call after the server was %s: %q (isError %v), want a denial", change.name, got, isErr)
			}
			d.record(t, "consent.revoke", func(r map[string]any) bool { return str(r, "consent") == id && str(r, "reason") == change.why })
			id = grant() // for the next change
		})
	}
}

// adminConsentsDaemon runs mcpcaged with default_decision decision and
// consents_by = "admin", this test binary registered as agent "itest",
// open to the test user, whose uid it returns.
func adminConsentsDaemon(t *testing.T, decision string, opts ...func(*daemon)) (int, *daemon) {
	t.Helper()
	setup(t)
	self, err := os.Executable()
	must(t, err, "executable")
	uid, _ := testUser(t)
	d := startDaemon(t, fmt.Sprintf("[daemon]\ndefault_decision = %q\nconsents_by = \"admin\"\n[agents.itest]\nexe = [%q]\n", decision, self), opts...)
	d.openToOtherUsers(t)
	return uid, d
}

// TestPendingRequestOfAChangedServerIsDropped: a request pending for a
// user's own server was made to the definition the agent ran then; once
// the server is defined anew, an administrator's later approval of it
// would make a consent for the new program (found by a red-team helper of
// TestUsersServerChangedLosesItsConsents). The change drops it.
func TestPendingRequestOfAChangedServerIsDropped(t *testing.T) {
	uid, d := adminConsentsDaemon(t, "ask")
	testserver := filepath.Join(env.bin, "testserver")
	if out, err := d.cli(t, uid, "server", "add", "mine", "--", testserver); err != nil {
		t.Fatalf("server add as the user: %v %s", err, out)
	}
	id := pendingEcho(t, d, "mine", uid)
	if out, err := d.cli(t, uid, "server", "add", "mine", "--env", "SWAPPED=1", "--", testserver); err != nil {
		t.Fatalf("server add (another definition) as the user: %v %s", err, out)
	}
	if out, err := d.cli(t, 0, "approve", id, "--for", "8h"); err == nil {
		t.Fatalf("the administrator approved %s, pending for the server's old definition: %s", id, out)
	}
	if out := d.mustCLI(t, "pending"); strings.Contains(out, id) {
		t.Fatalf("%s is still pending after its server was defined anew:\n%s", id, out)
	}
	c := d.connectAs(t, "mine", uid)
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr {
		t.Fatalf("a call of the new definition passed: %q", got)
	}
}

// TestAnswerForAChangedServerIsNotKept: an answer allows the request its
// session made to the server as it was defined then. An agent could swap
// a user's own server (server add of another program) while the answer
// was on its way: between an administrator's `mcpcage approve` taking
// the pending request and storing its consent (the change then found
// nothing to drop), or while the user's answer to a question in the
// client was coming (left in an earlier note). Either stored a consent
// for the name, which the new program's sessions used. The consent is
// now stored only while the server is still defined as its session ran
// it. The failpoint MCPCAGE_FAILPOINT_ANSWER_GATE holds the approval in
// that window; the client's answer waits for the test.
func TestAnswerForAChangedServerIsNotKept(t *testing.T) {
	gate := newFailpointGate(t)
	uid, d := adminConsentsDaemon(t, "ask", failpoints(gate.env("MCPCAGE_FAILPOINT_ANSWER_GATE")))
	testserver := filepath.Join(env.bin, "testserver")
	// Each case has its server (on the old code the first case's consent
	// would cover the second's).
	swaps := 0
	define := func(t *testing.T, name string) {
		t.Helper()
		swaps++
		if out, err := d.cli(t, uid, "server", "add", name, "--env", fmt.Sprintf("SWAPPED=%d", swaps), "--", testserver); err != nil {
			t.Fatalf("server add as the user: %v %s", err, out)
		}
	}
	// noConsent: nothing allows the new definition's calls.
	noConsent := func(t *testing.T, name string) {
		t.Helper()
		var recs []api.Consent
		must(t, json.Unmarshal([]byte(d.mustCLI(t, "consents", "--json", "--all", "--server", name)), &recs), "consents --json")
		if len(recs) != 0 {
			t.Fatalf("consents for %s after its server changed under the answer: %+v", name, recs)
		}
		c := d.connectAs(t, name, uid)
		defer func() { _ = c.Close() }()
		if got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"}); !isErr {
			t.Fatalf("a call of the new definition passed: %q", got)
		}
	}
	t.Run("approval held while the server is defined anew", func(t *testing.T) {
		define(t, "mine")
		gate.set(t, true) // while the request is made
		id := pendingEcho(t, d, "mine", uid)
		gate.set(t, false)
		done := d.cliInBackground(t, 0, "approve", id, "--for", "8h")
		gate.waitReached(t, "the approval held between its check and its store", nil)
		define(t, "mine")
		gate.open(t)
		got := <-done
		if got.err == nil || !strings.Contains(got.out, "defined anew") {
			t.Fatalf("mcpcage approve across a change of its server: %q (err %v), want it refused saying why", got.out, got.err)
		}
		d.record(t, "consent.prompt", func(r map[string]any) bool {
			return str(r, "pending") == id && str(r, "outcome") == "denied" && strings.Contains(str(r, "reason"), "defined anew")
		})
		noConsent(t, "mine")
	})

	t.Run("answer in the client while the server is defined anew", func(t *testing.T) {
		define(t, "mine2")
		gate.set(t, true)
		a := &answerer{answer: "duration", gate: make(chan struct{})}
		d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		c := d.connectWith(t, "mine2", mcp.ProtocolVersion20251125, client.WithElicitationHandler(a))
		d.shimCred = nil
		toolNames(t, c)
		asked := callInBackground(t, c, "echo", map[string]any{"text": "hi"})
		testenv.WaitFor(t, "the question in the client", 30*time.Second, func() (bool, string) {
			n := len(a.questions())
			return n == 1, fmt.Sprintf("%d questions", n)
		})
		define(t, "mine2")
		close(a.gate) // the user answers: allow for 8h
		got := answered(t, asked)
		if got.err != nil || !got.isErr || !strings.Contains(got.text, "defined anew") {
			t.Fatalf("the call whose answer came across a change of its server: %q (isError %v), want it refused saying why", got.text, got.isErr)
		}
		_ = c.Close()
		noConsent(t, "mine2")
	})

	t.Run("a session of the earlier definition is not asked", func(t *testing.T) {
		define(t, "mine3")
		a := &answerer{answer: "duration"}
		d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		c := d.connectWith(t, "mine3", mcp.ProtocolVersion20251125, client.WithElicitationHandler(a))
		d.shimCred = nil
		toolNames(t, c)
		define(t, "mine3")
		got, isErr := callText(t, c, "echo", map[string]any{"text": "hi"})
		if !isErr || !strings.Contains(got, "start the session again") || len(a.questions()) != 0 {
			t.Fatalf("a call of a session of the earlier definition: %q (isError %v, %d questions), want it refused unasked, saying to start again", got, isErr, len(a.questions()))
		}
		_ = c.Close()
		noConsent(t, "mine3")
	})
}

// pendingEcho calls echo of server as uid from a client that cannot be
// asked, and returns the pending request the refusal names.
func pendingEcho(t *testing.T, d *daemon, server string, uid int) string {
	t.Helper()
	c := d.connectAs(t, server, uid)
	defer func() { _ = c.Close() }()
	toolNames(t, c)
	text, isErr := callText(t, c, "echo", map[string]any{"text": "hi"})
	m := regexp.MustCompile(`approve (p-[0-9a-f]+)`).FindStringSubmatch(text)
	if !isErr || m == nil {
		t.Fatalf("want a refusal naming a pending request, got %q (isError %v)", text, isErr)
	}
	return m[1]
}

// TestConsentCoversOnlyItsServersDefinition: a consent is for the program
// it was given for, not for the name (found by a red-team helper of
// TestAnswerForAChangedServerIsNotKept). Under consents_by = "admin" an
// agent with a shell could:
//   - keep a session of one program of its own server running, define the
//     server anew as a program an administrator would allow, and use the
//     grant the administrator then gave in the old session;
//   - define a server of its own under the name of an administrator's
//     server that was removed, and use the grants given for that one.
//
// Each consent now carries the definition of the server it was given for
// (api.Consent.Definition); a session of another definition of the name
// is not covered, and says why.
func TestConsentCoversOnlyItsServersDefinition(t *testing.T) {
	uid, d := adminConsentsDaemon(t, "deny")
	testserver := filepath.Join(env.bin, "testserver")
	add := func(name string, args ...string) {
		t.Helper()
		if out, err := d.cli(t, uid, append([]string{"server", "add", name}, args...)...); err != nil {
			t.Fatalf("server add as the user: %v %s", err, out)
		}
	}
	grant := func(server string) {
		t.Helper()
		d.mustCLI(t, "grant", "--agent", "itest", "--server", server, "--tool", "echo", "--user", "mcpcage-itest")
	}
	echo := func(c *mcpClient) (string, bool) {
		t.Helper()
		return callText(t, c, "echo", map[string]any{"text": "hi"})
	}

	t.Run("a session of the definition before", func(t *testing.T) {
		add("mine", "--env", "PROGRAM=the agent's", "--", testserver)
		stale := d.connectAs(t, "mine", uid)
		toolNames(t, stale)
		add("mine", "--env", "PROGRAM=one the administrator allows", "--", testserver)
		grant("mine")
		current := d.connectAs(t, "mine", uid)
		if got, isErr := echo(current); isErr || got != "hi" {
			t.Fatalf("the granted call of the server as defined now: %q (isError %v)", got, isErr)
		}
		if got, isErr := echo(stale); !isErr || !strings.Contains(got, "another definition of server mine") {
			t.Fatalf("a call of the session that ran the server's earlier definition: %q (isError %v), want it refused saying why", got, isErr)
		}
		var recs []api.Consent
		must(t, json.Unmarshal([]byte(d.mustCLI(t, "consents", "--json", "--all", "--server", "mine")), &recs), "consents --json")
		if len(recs) != 1 || len(recs[0].Definition) != 64 {
			t.Fatalf("consents for mine: %+v, want one bound to the digest of the server's definition", recs)
		}
		d.record(t, "consent.grant", func(r map[string]any) bool {
			return str(r, "consent") == recs[0].ID && str(r, "definition") == recs[0].Definition
		})
	})

	t.Run("an administrator grants the definition they reviewed", func(t *testing.T) {
		const key = "sk-live-0123456789abcdef"
		add("reviewed", "--env", "PROGRAM=one the administrator allows", "--env", "API_KEY="+key, "--", testserver)
		var shown api.ServerInfo
		must(t, json.Unmarshal([]byte(d.mustCLI(t, "servers", "show", "reviewed", "--user", "mcpcage-itest", "--json")), &shown), "servers show --json")
		if len(shown.Definition) != 64 || shown.Owner != "mcpcage-itest" {
			t.Fatalf("servers show --user: %+v, want the user's server with its definition", shown)
		}
		// The administrator sees neither the user's key nor any other
		// value of their environment (the digest pins them); the user does.
		if b, _ := json.Marshal(shown); strings.Contains(string(b), key) || !strings.Contains(string(b), "API_KEY=[24 bytes, shown to its user only]") {
			t.Fatalf("servers show --user shows the user's environment: %s", b)
		}
		if out, err := d.cli(t, uid, "servers", "show", "reviewed", "--json"); err != nil || !strings.Contains(out, key) {
			t.Fatalf("the user's own servers show: %v %s", err, out)
		}
		if out, err := d.cli(t, uid, "servers", "--user", "root"); err == nil {
			t.Fatalf("a user listed root's servers: %s", out)
		}
		stale := d.connectAs(t, "reviewed", uid) // a session of the reviewed definition
		toolNames(t, stale)
		add("reviewed", "--env", "PROGRAM=the agent's", "--", testserver) // swapped after the review
		out, err := d.cli(t, 0, "grant", "--agent", "itest", "--server", "reviewed", "--tool", "echo", "--user", "mcpcage-itest", "--definition", shown.Definition[:16])
		if err == nil || !strings.Contains(out, "defined otherwise") {
			t.Fatalf("a grant naming the reviewed definition after the server was swapped: %q (err %v), want it refused", out, err)
		}
		var now api.ServerInfo
		must(t, json.Unmarshal([]byte(d.mustCLI(t, "servers", "show", "reviewed", "--user", "mcpcage-itest", "--json")), &now), "servers show --json")
		d.mustCLI(t, "grant", "--agent", "itest", "--server", "reviewed", "--tool", "echo", "--user", "mcpcage-itest", "--definition", now.Definition[:12])
		c := d.connectAs(t, "reviewed", uid)
		if got, isErr := echo(c); isErr || got != "hi" {
			t.Fatalf("the call of the definition granted: %q (isError %v)", got, isErr)
		}
		if got, isErr := echo(stale); !isErr || !strings.Contains(got, "another definition of server reviewed") {
			t.Fatalf("a call of the session of the earlier definition: %q (isError %v), want it refused", got, isErr)
		}
		d.record(t, "session.start", func(r map[string]any) bool { return str(r, "definition") == now.Definition })
		d.record(t, "server.add", func(r map[string]any) bool { return str(r, "definition") == now.Definition })
	})

	t.Run("the user's own server where the administrator's was", func(t *testing.T) {
		base, err := os.ReadFile(d.config)
		must(t, err, "read config")
		d.reloadTo(t, append(append([]byte(nil), base...), fmt.Sprintf("\n[servers.adm]\ncommand = [%q]\n", testserver)...))
		grant("adm")
		c := d.connectAs(t, "adm", uid)
		if got, isErr := echo(c); isErr || got != "hi" {
			t.Fatalf("the granted call of the administrator's server: %q (isError %v)", got, isErr)
		}
		_ = c.Close()
		d.reloadTo(t, base) // the administrator removes it
		add("adm", "--env", "PROGRAM=the agent's", "--", testserver)
		c = d.connectAs(t, "adm", uid)
		if got, isErr := echo(c); !isErr || !strings.Contains(got, "the administrator's server adm") {
			t.Fatalf("a call of the user's own server named as the administrator's was: %q (isError %v), want it refused saying why", got, isErr)
		}
	})
}

// TestConsentsDoNotPassToANewAccountOfTheName: consents are kept by user
// name, while secrets, servers and sign-ins are kept by uid, so an
// account removed and made anew under the same name (another uid)
// inherited the old account's consents (left in an earlier note). A
// consent now covers the sessions of the uid its user had when it was
// given; the new account's calls are denied, saying why.
func TestConsentsDoNotPassToANewAccountOfTheName(t *testing.T) {
	d := consentDaemon(t, "")
	d.openToOtherUsers(t)
	name := fmt.Sprintf("mcpcage-re%d", os.Getpid())
	account := func(uid int) {
		t.Helper()
		if out, err := exec.Command("useradd", "--no-create-home", "--uid", fmt.Sprint(uid), "--user-group", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", name, err, out)
		}
	}
	gone := func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v %s", name, err, out)
		}
	}
	first, second := 2_100_000_000+os.Getpid()%1_000_000*2, 2_100_000_000+os.Getpid()%1_000_000*2+1
	account(first)
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "test", "--tool", "echo", "--user", name)
	c := d.connectAs(t, "test", first)
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "first account"}); isErr || got != "first account" {
		t.Fatalf("the account the consent was given to: %q (isError %v)", got, isErr)
	}
	_ = c.Close()
	gone()
	account(second)
	t.Cleanup(gone)
	c = d.connectAs(t, "test", second)
	got, isErr := callText(t, c, "echo", map[string]any{"text": "second account"})
	if !isErr || !strings.Contains(got, fmt.Sprintf("when the name was uid %d, not uid %d", first, second)) {
		t.Fatalf("the new account of the name: %q (isError %v), want it denied: the consent was given to the old one", got, isErr)
	}
	d.record(t, "tool.call", func(r map[string]any) bool {
		return str(r, "user") == name && str(r, "decision") == "deny" && strings.Contains(str(r, "reason"), "inherits no consent")
	})
}
