package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// remoteServer is the MCP TypeScript SDK's streamable-HTTP example
// server with its in-memory OAuth 2.1 authorization server (strict mode:
// the token must name the MCP server as its resource, RFC 8707), on
// ports of its own.
type remoteServer struct {
	mcpPort, authPort int
	log               *syncBuffer
}

func startRemoteServer(t *testing.T) *remoteServer {
	t.Helper()
	root := repoFile(t, "")
	script := filepath.Join(root, "testdata", "tsclient", "node_modules", "@modelcontextprotocol", "sdk", "dist", "esm", "examples", "server", "simpleStreamableHttp.js")
	_, err := os.Stat(script)
	testenv.Require(t, err == nil, "the MCP TypeScript SDK's example server (make deps: npm ci in testdata/tsclient)")
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	rs := &remoteServer{mcpPort: portOf(t, freePort(t)), authPort: portOf(t, freePort(t)), log: &syncBuffer{}}
	cmd := exec.Command(node, script, "--oauth", "--oauth-strict")
	cmd.Env = append(os.Environ(), fmt.Sprintf("MCP_PORT=%d", rs.mcpPort), fmt.Sprintf("MCP_AUTH_PORT=%d", rs.authPort))
	cmd.Stdout, cmd.Stderr = rs.log, rs.log
	must(t, cmd.Start(), "start the example server")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{rs.mcpPort, rs.authPort} {
		for {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				_ = c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("example server not listening on %d: %s", port, rs.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return rs
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	must(t, err, "address")
	return int(ap.Port())
}

var urlLine = regexp.MustCompile(`(?m)^\s+(http://\S+/authorize\?\S+)$`)

// login runs mcpcage login and plays the browser: it opens the printed
// link, follows the authorization server's redirect to the loopback
// listener, and waits for the command to finish.
func (d *daemon) login(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"--socket", d.socket, "login", "--no-browser"}, args...)...)
	out := &syncBuffer{}
	pr, pw, err := os.Pipe()
	must(t, err, "pipe")
	cmd.Stdout, cmd.Stderr = pw, out
	must(t, cmd.Start(), "start mcpcage login")
	_ = pw.Close()
	var link string
	sc := bufio.NewScanner(pr)
	var seen strings.Builder
	for sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if m := urlLine.FindStringSubmatch(sc.Text()); m != nil {
			link = m[1]
			break
		}
	}
	if link == "" {
		_ = cmd.Wait()
		t.Fatalf("mcpcage login printed no link:\n%s%s", seen.String(), out.String())
	}
	go func() {
		for sc.Scan() {
			_, _ = out.Write([]byte(sc.Text() + "\n"))
		}
	}()
	resp, err := http.Get(link) // the demo authorization server approves at once and redirects to the listener
	must(t, err, "open the sign-in link")
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the sign-in redirect ended with %s", resp.Status)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mcpcage login: %v\n%s%s", err, seen.String(), out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("mcpcage login did not finish:\n%s%s", seen.String(), out.String())
	}
	return seen.String() + out.String()
}

// storedToken reads the access token mcpcaged keeps for root's sign-in
// (the test is root): every output is then searched for it.
func (d *daemon) storedTokens(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(d.dir, "state", "oauth")
	entries, err := os.ReadDir(dir)
	must(t, err, "read the sign-in store")
	var toks []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		must(t, err, "read a sign-in")
		var g struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		must(t, json.Unmarshal(b, &g), "decode a sign-in")
		for _, tok := range []string{g.AccessToken, g.RefreshToken} {
			if tok != "" {
				toks = append(toks, tok)
			}
		}
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		must(t, err, "stat")
		if st.Mode().Perm() != 0o600 {
			t.Errorf("sign-in file mode %v, want 0600", st.Mode().Perm())
		}
	}
	return toks
}

// TestRemoteServer: a stdio client reaches an OAuth-protected
// streamable-HTTP server through mcpcage run. Before the sign-in every
// request is answered with the sign-in hint; mcpcage login (the test
// plays the browser) registers mcpcage dynamically, signs in with PKCE
// and the resource indicator (the strict example refuses a token without
// it); then consent, audit and filtering apply as for a local server,
// the server's own notifications (its GET stream) reach the client, and
// the token appears in no output, record, log or process argument.
func TestRemoteServer(t *testing.T) {
	setup(t)
	rs := startRemoteServer(t)
	d := consentDaemon(t, fmt.Sprintf("[servers.tracker]\nurl = \"http://localhost:%d/mcp\"\nhosts = [\"localhost:%d\"]\n", rs.mcpPort, rs.authPort))

	// Not signed in: the client is told what to run.
	r := startRaw(t, d.shimCmd("tracker"))
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	line := r.response(`"init"`)
	if !strings.Contains(line, "tracker needs you to sign in: run `mcpcage login tracker`") || !strings.Contains(line, `"code":-32005`) {
		t.Fatalf("answer before the sign-in: %s", line)
	}
	r.closeInput()
	r.wait()

	out := d.login(t, "tracker")
	if !strings.Contains(out, "Signed in to tracker (scopes: mcp:tools") {
		t.Fatalf("mcpcage login output:\n%s", out)
	}
	tokens := d.storedTokens(t)
	if len(tokens) == 0 {
		t.Fatal("no token kept after the sign-in")
	}
	list := d.mustCLI(t, "tokens")
	if !strings.Contains(list, "tracker") || !strings.Contains(list, "mcp:tools") {
		t.Fatalf("mcpcage tokens:\n%s", list)
	}

	d.mustCLI(t, "grant", "--agent", "itest", "--server", "tracker", "--tool", "greet", "--tool", "start-notification-stream")
	r = startRaw(t, d.shimCmd("tracker"))
	var stream strings.Builder
	recv := func(id string) string {
		l := r.response(id)
		stream.WriteString(l)
		return l
	}
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	if l := recv(`"init"`); !strings.Contains(l, "simple-streamable-http-server") {
		t.Fatalf("initialize through the bridge: %s", l)
	}
	r.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
	r.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"greet","arguments":{"name":"Ada"}}}` + "\n")
	if l := recv(`2`); !strings.Contains(l, "Hello, Ada!") {
		t.Fatalf("greet through the bridge: %s", l)
	}
	// Consent as for a local server: no consent covers multi-greet.
	r.send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"multi-greet","arguments":{"name":"Ada"}}}` + "\n")
	if l := recv(`3`); !strings.Contains(l, "mcpcage") || !strings.Contains(l, `"isError":true`) {
		t.Fatalf("an ungranted call was not refused: %s", l)
	}
	// The server's own notifications travel on its GET stream.
	r.send(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"start-notification-stream","arguments":{"interval":20,"count":3}}}` + "\n")
	notes := 0
	for notes < 3 {
		l := r.next()
		stream.WriteString(l)
		if strings.Contains(l, `"notifications/message"`) {
			notes++
		}
	}
	r.closeInput()
	if code := r.wait(); code != 0 {
		t.Fatalf("shim exit %d; stderr:\n%s", code, r.stderr.String())
	}

	// Audit: the session names the sign-in; the call names agent and user.
	recs := d.mustCLI(t, "audit", "--json", "--server", "tracker")
	var sawStart, sawCall, sawSignIn bool
	for _, l := range strings.Split(strings.TrimSpace(recs), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		switch rec["type"] {
		case "session.start":
			if up, ok := rec["remote"].(map[string]any); ok && up["signin"] != nil && up["issuer"] != nil {
				sawStart = true
			}
		case "tool.call":
			if rec["tool"] == "greet" && rec["agent"] == "itest" && rec["user"] == "root" {
				sawCall = true
			}
		case "signin":
			sawSignIn = true
		}
	}
	if !sawStart || !sawCall || !sawSignIn {
		t.Fatalf("audit: session.start with the sign-in %v, tool.call greet by itest for root %v, signin %v:\n%s", sawStart, sawCall, sawSignIn, recs)
	}

	// The token is nowhere but the daemon's store.
	audit, err := os.ReadFile(filepath.Join(d.dir, "log", "audit.jsonl"))
	must(t, err, "read the audit log")
	ps, _ := exec.Command("ps", "-eo", "args").Output()
	for _, tok := range tokens {
		for name, text := range map[string]string{"audit log": string(audit), "daemon log": d.log.String(), "client stream": stream.String(),
			"login output": out, "tokens output": list, "process arguments": string(ps), "shim stderr": r.stderr.String()} {
			if strings.Contains(text, tok) {
				t.Errorf("the token appears in the %s", name)
			}
		}
	}

	// Signed out: the next session is told to sign in again.
	d.mustCLI(t, "logout", "tracker")
	r = startRaw(t, d.shimCmd("tracker"))
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	if l := r.response(`"init"`); !strings.Contains(l, "run `mcpcage login tracker`") {
		t.Fatalf("answer after the sign-out: %s", l)
	}
	r.closeInput()
	r.wait()
}
