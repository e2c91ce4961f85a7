package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/tcpsockets"
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with the test binary, even when it is killed
	must(t, cmd.Start(), "start the example server")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for _, port := range []int{rs.mcpPort, rs.authPort} {
		testenv.WaitFor(t, fmt.Sprintf("the example server on port %d", port), 30*time.Second, func() (bool, string) {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return false, rs.log.String()
			}
			_ = c.Close()
			return true, ""
		})
	}
	return rs
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	must(t, err, "address")
	return int(ap.Port())
}

var urlLine = regexp.MustCompile(`(?m)^\s+(http://127\.0\.0\.1:\d+/start/\S+)$`)

// loginRun is an mcpcage login --no-browser under way.
type loginRun struct {
	cmd    *exec.Cmd
	link   string        // the link it printed for the browser
	out    *syncBuffer   // all it printed
	copied chan struct{} // closed at the end of its output
}

// startLogin starts mcpcage login --no-browser and reads its output up
// to the link it prints.
func (d *daemon) startLogin(t *testing.T, args ...string) *loginRun {
	t.Helper()
	lr := &loginRun{cmd: exec.Command(filepath.Join(env.bin, "mcpcage"), append([]string{"--socket", d.socket, "login", "--no-browser"}, args...)...),
		out: &syncBuffer{}, copied: make(chan struct{})}
	pr, pw, err := os.Pipe()
	must(t, err, "pipe")
	lr.cmd.Stdout, lr.cmd.Stderr = pw, lr.out
	must(t, lr.cmd.Start(), "start mcpcage login")
	_ = pw.Close()
	sc := bufio.NewScanner(pr)
	for lr.link == "" && sc.Scan() {
		_, _ = lr.out.Write([]byte(sc.Text() + "\n"))
		if m := urlLine.FindStringSubmatch(sc.Text()); m != nil {
			lr.link = m[1]
		}
	}
	if lr.link == "" {
		_ = lr.cmd.Wait()
		t.Fatalf("mcpcage login printed no link:\n%s", lr.out.String())
	}
	go func() {
		defer close(lr.copied)
		for sc.Scan() {
			_, _ = lr.out.Write([]byte(sc.Text() + "\n"))
		}
	}()
	return lr
}

// wait waits for the command to exit and returns how it did, with all
// it printed.
func (lr *loginRun) wait(t *testing.T) (string, error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- lr.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("mcpcage login did not finish:\n%s", lr.out.String())
	}
	// Wait returns once the process has exited, not once its last lines
	// were read: the output is whole only at the pipe's end.
	select {
	case <-lr.copied:
	case <-time.After(10 * time.Second):
		t.Fatalf("mcpcage login's output did not end:\n%s", lr.out.String())
	}
	return lr.out.String(), err
}

// login runs mcpcage login and plays the browser: it opens the printed
// link, follows the authorization server's redirect to the loopback
// listener, and waits for the command to finish.
func (d *daemon) login(t *testing.T, browser *http.Client, args ...string) string {
	t.Helper()
	lr := d.startLogin(t, args...)
	jar, err := cookiejar.New(nil)
	must(t, err, "cookie jar")
	b := *browser
	b.Jar = jar                 // the start page binds the sign-in to this browser
	resp, err := b.Get(lr.link) // the authorization server approves at once and redirects to the listener
	must(t, err, "open the sign-in link")
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the sign-in redirect ended with %s", resp.Status)
	}
	out, err := lr.wait(t)
	if err != nil {
		t.Fatalf("mcpcage login: %v\n%s", err, out)
	}
	return out
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

	out := d.login(t, http.DefaultClient, "tracker")
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
	// A client that closes its input right after a call still gets the
	// answer: the bridge ends only once the relay has written the last
	// message and the server has answered it.
	r.send(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"greet","arguments":{"name":"Bye"}}}` + "\n")
	r.closeInput()
	if l := recv(`5`); !strings.Contains(l, "Hello, Bye!") {
		t.Fatalf("the call written before the client closed its input: %s", l)
	}
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

	// A sign-in stays with the server it was made for: a user's own remote
	// server, removed and added again under the same name with another
	// url, never receives the first one's token (found by review).
	d.mustCLI(t, "server", "add", "mine", "--url", fmt.Sprintf("http://localhost:%d/mcp", rs.mcpPort), "--host", fmt.Sprintf("localhost:%d", rs.authPort))
	if out := d.login(t, http.DefaultClient, "mine"); !strings.Contains(out, "Signed in to mine") {
		t.Fatalf("login mine: %s", out)
	}
	seen := make(chan string, 16)
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer impostor.Close()
	d.mustCLI(t, "server", "rm", "mine")
	if list := d.mustCLI(t, "tokens"); strings.Contains(list, "mine") {
		t.Fatalf("server rm left its sign-in:\n%s", list)
	}
	d.mustCLI(t, "server", "add", "mine", "--url", impostor.URL+"/mcp")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "mine", "--tool", "*")
	r = startRaw(t, d.shimCmd("mine"))
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	if l := r.response(`"init"`); !strings.Contains(l, "run `mcpcage login mine`") {
		t.Fatalf("answer from the impostor's url: %s", l)
	}
	r.closeInput()
	r.wait()
	for len(seen) > 0 {
		if auth := <-seen; auth != "" {
			t.Fatalf("the server that took the name received %q", auth)
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

	// A client that declared URL-mode elicitation gets the sign-in link
	// in-band (-32042); once the user (the test) has followed it, the
	// client is told and its retry works.
	r = startRaw(t, d.shimCmd("tracker"))
	const urlInit = `{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"form":{},"url":{}}},"clientInfo":{"name":"raw","version":"1"}}}` + "\n"
	r.send(urlInit)
	l := r.response(`"init"`)
	var answer struct {
		Error struct {
			Code int `json:"code"`
			Data struct {
				Elicitations []struct {
					Mode string `json:"mode"`
					ID   string `json:"elicitationId"`
					URL  string `json:"url"`
				} `json:"elicitations"`
			} `json:"data"`
		} `json:"error"`
	}
	must(t, json.Unmarshal([]byte(l), &answer), "decode %s", l)
	if answer.Error.Code != -32042 || len(answer.Error.Data.Elicitations) != 1 || answer.Error.Data.Elicitations[0].Mode != "url" {
		t.Fatalf("answer to a client with URL elicitation: %s", l)
	}
	el := answer.Error.Data.Elicitations[0]
	// Another local user who read the link (it is in the command line of
	// whatever opens it) and follows it, signing in as themselves, is
	// refused at the daemon's listener: the session's user's agent must
	// never act in someone else's account.
	node, err := exec.LookPath("node")
	must(t, err, "node")
	other := exec.Command(node, "-e", "fetch(process.argv[1]).then(r => r.text()).then(t => console.log(t), e => console.log('error: ' + e))", el.URL)
	other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	otherPage, err := other.Output()
	must(t, err, "follow the link as nobody")
	if !strings.Contains(string(otherPage), "came from a program of uid 65534") || strings.Contains(string(otherPage), "signed in to tracker") {
		t.Fatalf("another user following the in-band link got: %s", otherPage)
	}
	if list := d.mustCLI(t, "tokens"); strings.Contains(list, "tracker") {
		t.Fatalf("a sign-in was kept from another user's browser:\n%s", list)
	}
	// Whoever keeps bringing answers with the link's state adds a
	// bounded number of records: the fifth says later ones are not
	// recorded; the link stays (ending it would let them end every link
	// the user is given).
	for range 6 {
		again := exec.Command(node, "-e", "fetch(process.argv[1]).then(r => r.text()).then(t => console.log(t), e => console.log('error: ' + e))", el.URL)
		again.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		page, err := again.Output()
		must(t, err, "follow the link as nobody again")
		if !strings.Contains(string(page), "came from a program of uid 65534") {
			t.Fatalf("another user following the link again got: %s", page)
		}
	}
	refusedRecords := func() (n int, bounded bool) {
		for _, rec := range d.auditRecords(t) {
			if rec["type"] == string(api.RecordSignInFail) && str(rec, "server") == "tracker" && strings.Contains(str(rec, "reason"), "came from a program of uid 65534") {
				n++
				bounded = bounded || strings.Contains(str(rec, "reason"), "later refused answers to this link are not recorded")
			}
		}
		return n, bounded
	}
	testenv.WaitFor(t, "5 records of refused answers, the last saying later ones are not", 10*time.Second, func() (bool, string) {
		n, bounded := refusedRecords()
		return n == 5 && bounded, fmt.Sprintf("%d records, bounded %v", n, bounded)
	})
	if n, _ := refusedRecords(); n != 5 {
		t.Fatalf("%d records of refused answers, want 5 (the sixth and seventh not recorded)", n)
	}
	// Nor can another user have mcpcaged itself bring their answer (as
	// uid 0, which root's session is): they stop at the redirect to the
	// listener, and add a remote server of their own whose url is that
	// answer; signing in to it had the daemon connect there (found by a
	// red-team helper). Now the daemon does not connect: the listener is
	// a program of this host that is not theirs (root's); and were it
	// reached, the listener refuses an answer mcpcaged brings.
	redirect := func() string {
		u, err := url.Parse(el.URL)
		must(t, err, "the link")
		return u.Query().Get("redirect_uri")
	}()
	var stolen string
	stop := &http.Client{CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirect) {
			stolen = req.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := stop.Get(el.URL)
	must(t, err, "follow the link up to its answer")
	_ = resp.Body.Close()
	if stolen == "" {
		t.Fatalf("the link led to no answer for %s", redirect)
	}
	must(t, os.Chmod(d.socket, 0o666), "open the socket to nobody (as the mcpcage group is)")
	for dir := filepath.Dir(d.socket); dir != "/"; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		must(t, err, "stat")
		must(t, os.Chmod(dir, st.Mode().Perm()|0o001), "chmod")
	}
	if out, err := d.cli(t, 65534, "server", "add", "evil", "--url", stolen); err != nil {
		t.Fatalf("server add evil as nobody: %v %s", err, out)
	}
	if out, err := d.cli(t, 65534, "login", "--no-browser", "--wait", "5s", "evil"); err == nil || !strings.Contains(out, "that uid 0 runs, not you") {
		t.Fatalf("nobody's sign-in to a server whose url is root's in-band listener: %v %s; want it not reached (a program of uid 0)", err, out)
	}
	if list := d.mustCLI(t, "tokens"); strings.Contains(list, "tracker") {
		t.Fatalf("a sign-in was kept from an answer mcpcaged brought for another user:\n%s", list)
	}
	resp, err = http.Get(el.URL) // the user's browser: sign-in, then the daemon's own loopback listener
	must(t, err, "follow the in-band sign-in link")
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(page), "signed in to tracker") {
		t.Fatalf("sign-in page: %s %s", resp.Status, page)
	}
	for {
		n := r.next()
		if strings.Contains(n, "notifications/elicitation/complete") && strings.Contains(n, el.ID) {
			break
		}
	}
	r.send(strings.Replace(urlInit, `"id":"init"`, `"id":"init2"`, 1))
	if l := r.response(`"init2"`); !strings.Contains(l, "simple-streamable-http-server") {
		t.Fatalf("initialize after the in-band sign-in: %s", l)
	}
	r.closeInput()
	r.wait()
	if recs := d.mustCLI(t, "audit", "--json", "--type", "signin"); !strings.Contains(recs, `"via":"in-band link"`) {
		t.Fatalf("signin records:\n%s", recs)
	}
}

// testCA writes a CA and a certificate for 127.0.0.1 it signed; it
// returns the CA's, the certificate's and the key's PEM files.
func testCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err, "CA key")
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mcpcage test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err, "CA certificate")
	caCert, err := x509.ParseCertificate(caDER)
	must(t, err, "parse CA")
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err, "leaf key")
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	must(t, err, "leaf certificate")
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	must(t, err, "marshal key")
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600), "write %s", name)
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// issueStack is testdata/remoteserver: an MCP server (mcp-go, streamable
// HTTP) that checks each tool's scope, and an authorization server with
// refresh, revocation and token exchange, both over TLS with a test CA.
type issueStack struct {
	mcpURL, issuer, jwks string
	log                  *syncBuffer
}

func startIssueStack(t *testing.T, dir string, args ...string) *issueStack {
	t.Helper()
	ca, cert, key := testCA(t, dir)
	_ = ca
	st := &issueStack{jwks: filepath.Join(dir, "actor-jwks.json"), log: &syncBuffer{}}
	host, err := os.Hostname()
	must(t, err, "hostname")
	cmd := exec.Command(filepath.Join(env.bin, "remoteserver"), append([]string{"-cert", cert, "-key", key, "-actor-jwks", st.jwks,
		"-actor-issuer", "mcpcage:" + host}, args...)...)
	out, err := cmd.StdoutPipe()
	must(t, err, "pipe")
	cmd.Stderr = st.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start(), "start remoteserver")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	for (st.mcpURL == "" || st.issuer == "") && sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "MCP "); ok {
			st.mcpURL = u
		}
		if u, ok := strings.CutPrefix(sc.Text(), "AS "); ok {
			st.issuer = u
		}
	}
	if st.mcpURL == "" || st.issuer == "" {
		t.Fatalf("remoteserver did not say where it listens: %s", st.log.String())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return st
}

// client trusts the test CA (the test's browser).
func (st *issueStack) client(t *testing.T, ca string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(ca)
	must(t, err, "read CA")
	pool.AppendCertsFromPEM(b)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// admin calls a test control of the authorization server.
func (st *issueStack) admin(t *testing.T, ca, method, path string) map[string]int {
	t.Helper()
	hc := st.client(t, ca)
	req, err := http.NewRequest(method, st.issuer+path, nil)
	must(t, err, "request")
	resp, err := hc.Do(req)
	must(t, err, "admin %s", path)
	defer func() { _ = resp.Body.Close() }()
	var stats map[string]int
	_ = json.NewDecoder(resp.Body).Decode(&stats)
	return stats
}

// TestRemoteAgentScopes: one user's sign-in, two agents. The agent with
// scopes of its own ([agents.itest.scopes]) gets a token the
// authorization server narrowed by token exchange, with an act claim
// naming it (signed by mcpcaged's key, trusted through mcpcage jwks): its
// write call is refused upstream with a clear message; an agent without
// scopes of its own uses the user's sign-in. Tokens are refreshed ahead
// of expiry (rotated refresh tokens); a revoked sign-in ends in the
// mcpcage login hint; TLS is verified with the configured CA and refused
// without it; the 2026-07-28 era crosses the bridge with its headers.
func TestRemoteAgentScopes(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	st := startIssueStack(t, dir, "-ttl", "3s")
	ca := filepath.Join(dir, "ca.pem")
	u, err := url.Parse(st.issuer)
	must(t, err, "issuer")
	sh, err := filepath.EvalSymlinks("/bin/sh")
	must(t, err, "resolve /bin/sh")
	d := consentDaemon(t, fmt.Sprintf(`[servers.issues]
url = %q
hosts = [%q]
ca_file = %q
[servers.issues-noca]
url = %q
[agents.other]
exe = [%q]
[agents.itest.scopes]
issues = ["read"]
`, st.mcpURL, u.Host, ca, st.mcpURL, sh))
	must(t, os.WriteFile(st.jwks, []byte(d.mustCLI(t, "jwks")), 0o644), "write the actor key set")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "issues", "--tool", "*")
	d.mustCLI(t, "grant", "--agent", "other", "--any-script", "--server", "issues", "--tool", "*")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "issues-noca", "--tool", "*")

	// Without the CA, the TLS failure is one clear line.
	r := startRaw(t, d.shimCmd("issues-noca"))
	r.send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	if l := r.response(`1`); !strings.Contains(l, "certificate is signed by an authority this host does not trust: set ca_file in [servers.issues-noca]") {
		t.Fatalf("TLS failure without ca_file: %s", l)
	}
	r.closeInput()
	r.wait()

	if out := d.login(t, st.client(t, ca), "issues"); !strings.Contains(out, "scopes: read write") {
		t.Fatalf("login: %s", out)
	}
	tokens := d.storedTokens(t)

	call := func(r *rawSession, id int, tool, args string) string {
		t.Helper()
		r.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`+"\n", id, tool, args))
		return r.response(strconv.Itoa(id))
	}
	// The narrowed agent: token exchange, act claim, read only.
	r = startRaw(t, d.shimCmd("issues"))
	r.initialize()
	who := call(r, 2, "whoami", `{}`)
	if !strings.Contains(who, `\"act\":{\"iss\":\"mcpcage:`) || !strings.Contains(who, `\"sub\":\"itest\"`) || !strings.Contains(who, `\"scope\":\"read\"`) || !strings.Contains(who, `\"sub\":\"alice\"`) {
		t.Fatalf("whoami of the narrowed agent: %s", who)
	}
	if l := call(r, 3, "create_issue", `{"title":"x"}`); !strings.Contains(l, `issues refused the call: it needs scope \"write\"`) || !strings.Contains(l, `"code":-32006`) {
		t.Fatalf("write call of a read-scoped agent: %s", l)
	}
	if l := call(r, 4, "list_issues", `{}`); !strings.Contains(l, "printer is on fire") {
		t.Fatalf("read call of a read-scoped agent: %s", l)
	}
	// The server forgets its sessions (as after an idle timeout): the
	// bridge opens a new one with the client's initialize; the client's
	// session goes on.
	mcpBase := strings.TrimSuffix(st.mcpURL, "/mcp")
	resp, err := st.client(t, ca).Post(mcpBase+"/admin/forget-sessions", "", nil)
	must(t, err, "forget sessions")
	_ = resp.Body.Close()
	if l := call(r, 5, "list_issues", `{}`); !strings.Contains(l, "printer is on fire") {
		t.Fatalf("call after the server forgot the session: %s", l)
	}
	r.closeInput()
	r.wait()

	// An agent without scopes of its own: the user's sign-in, in the
	// 2026-07-28 era.
	sr := startRaw(t, d.viaShell("issues"))
	sr.send(`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{` + era2Meta + `}}` + "\n")
	if l := sr.response(`1`); !strings.Contains(l, "remote-test-server") {
		t.Fatalf("server/discover over the bridge: %s", l)
	}
	era2 := func(id int, tool, args string) string {
		t.Helper()
		sr.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s,%s}}`+"\n", id, tool, args, era2Meta))
		return sr.response(strconv.Itoa(id))
	}
	if l := era2(2, "create_issue", `{"title":"from other"}`); !strings.Contains(l, "created: from other") {
		t.Fatalf("write call with the user's sign-in: %s", l)
	}
	if l := era2(3, "whoami", `{}`); !strings.Contains(l, `\"act\":null`) || !strings.Contains(l, `read write`) {
		t.Fatalf("whoami with the user's sign-in: %s", l)
	}
	// Refreshed ahead of expiry: calls keep working across token lifetimes.
	deadline := time.Now().Add(60 * time.Second)
	for id := 10; st.admin(t, ca, "GET", "/admin/stats")["refresh_token"] < 2; id++ {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh within 60s: %v", st.admin(t, ca, "GET", "/admin/stats"))
		}
		if l := era2(id, "list_issues", `{}`); !strings.Contains(l, "printer is on fire") {
			t.Fatalf("call %d across refreshes: %s", id, l)
		}
	}
	// Revoked: the next call says to sign in again.
	st.admin(t, ca, "POST", "/admin/revoke-all")
	if l := era2(100, "list_issues", `{}`); !strings.Contains(l, "needs you to sign in again") || !strings.Contains(l, "run `mcpcage login issues`") {
		t.Fatalf("call after the sign-in was revoked: %s", l)
	}
	sr.closeInput()
	sr.wait()

	recs := d.mustCLI(t, "audit", "--json", "--server", "issues", "--type", "session.start")
	if !strings.Contains(recs, `"via":"token-exchange"`) || !strings.Contains(recs, `"act":"itest"`) || !strings.Contains(recs, `"via":"user-signin"`) {
		t.Fatalf("session.start records do not say which sign-in each session used:\n%s", recs)
	}
	audit, err := os.ReadFile(filepath.Join(d.dir, "log", "audit.jsonl"))
	must(t, err, "read the audit log")
	for _, tok := range tokens {
		if strings.Contains(string(audit), tok) || strings.Contains(d.log.String(), tok) {
			t.Error("a token appears in the audit log or the daemon's log")
		}
	}
}

// TestSignInHeldToUserRemoteHosts: a user's own remote server added while
// user_remote_hosts allowed its hosts is held to the setting as it is
// now: once an administrator narrows it, mcpcage login for that server
// is refused before the daemon contacts anything (as its sessions are).
func TestSignInHeldToUserRemoteHosts(t *testing.T) {
	setup(t)
	rs := startRemoteServer(t)
	d := consentDaemon(t, "")
	d.mustCLI(t, "server", "add", "mine", "--url", fmt.Sprintf("http://localhost:%d/mcp", rs.mcpPort), "--host", fmt.Sprintf("localhost:%d", rs.authPort))
	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	must(t, os.WriteFile(d.config, []byte(strings.Replace(string(cfg), "[daemon]\n", "[daemon]\nuser_remote_hosts = [\"*.example.com\"]\n", 1)), 0o644), "edit config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	testenv.WaitFor(t, "mcpcage login mine to be refused", 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(env.bin, "mcpcage"), "--socket", d.socket, "login", "--no-browser", "mine").CombinedOutput()
		return err != nil && strings.Contains(string(out), "may not reach localhost"), string(out)
	})
}

// TestSignInRefusesAMixedUpAnswer: the mix-up attack (RFC 9207). A user
// signs in to two remote servers, "honest" (whose authorization server
// names itself in its answers) and "evil". Evil's authorization server
// sends the browser on to honest's, with the state and loopback listener
// of the user's sign-in at evil, and a client and PKCE challenge of the
// attacker's own. Honest's answer reaches the sign-in's listener:
// mcpcaged, taking it for evil's, would send honest's code to evil's
// token endpoint, and the attacker would redeem it at honest, with its
// own client and verifier, for the user's account there. The answer is
// refused, naming both servers; evil's token endpoint is sent no code;
// the refusal is in the audit log. So is the variant in which the
// attacker's client at honest has a redirect URI that already holds
// ?iss=<evil>, so that honest's answer names evil first and honest
// second. Both through mcpcage login and through the in-band link (the
// daemon's own listener). A plain sign-in to honest, whose answer names
// honest, works.
func TestSignInRefusesAMixedUpAnswer(t *testing.T) {
	setup(t)
	hdir, edir := t.TempDir(), t.TempDir()
	honest := startIssueStack(t, hdir, "-iss-param")
	evil := startIssueStack(t, edir)
	hca, eca := filepath.Join(hdir, "ca.pem"), filepath.Join(edir, "ca.pem")
	hu, err := url.Parse(honest.issuer)
	must(t, err, "honest issuer")
	eu, err := url.Parse(evil.issuer)
	must(t, err, "evil issuer")
	d := consentDaemon(t, fmt.Sprintf(`[servers.honest]
url = %q
hosts = [%q]
ca_file = %q
[servers.evil]
url = %q
hosts = [%q]
ca_file = %q
`, honest.mcpURL, hu.Host, hca, evil.mcpURL, eu.Host, eca))
	// The user's browser trusts both servers.
	pool := x509.NewCertPool()
	for _, ca := range []string{hca, eca} {
		b, err := os.ReadFile(ca)
		must(t, err, "read CA")
		pool.AppendCertsFromPEM(b)
	}
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	// The honest server names itself: mcpcage login hands its iss on.
	if out := d.login(t, browser, "honest"); !strings.Contains(out, "Signed in to honest") {
		t.Fatalf("sign-in to honest: %s", out)
	}
	presented := honest.admin(t, hca, http.MethodGet, "/admin/stats")["code_presented"]

	// mixUp is evil's authorization server at work: given the user's
	// authorization request to evil, it sends the browser (b) on to
	// honest's, with a client of its own registered there for the
	// request's listener (with suffix added to the redirect URI) and its
	// own PKCE challenge; honest approves and answers to that listener.
	sum := sha256.Sum256([]byte("the attacker's verifier, which mcpcaged never sees"))
	mixUp := func(b *http.Client, atEvil *url.URL, suffix, resource string) (*http.Response, []byte) {
		t.Helper()
		redirect := atEvil.Query().Get("redirect_uri") + suffix
		reg, err := browser.Post(honest.issuer+"/register", "application/json", strings.NewReader(fmt.Sprintf(`{"redirect_uris":[%q]}`, redirect)))
		must(t, err, "register the attacker's client at honest")
		var client struct {
			ID string `json:"client_id"`
		}
		must(t, json.NewDecoder(reg.Body).Decode(&client), "registration")
		_ = reg.Body.Close()
		to := honest.issuer + "/authorize?" + url.Values{"response_type": {"code"}, "client_id": {client.ID}, "redirect_uri": {redirect},
			"state": {atEvil.Query().Get("state")}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
			"resource": {resource}, "scope": {"read write"}}.Encode()
		resp, err := b.Get(to)
		must(t, err, "the browser sent on to honest")
		page, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp, page
	}
	noCodeAtEvil := func(how string, said string) {
		t.Helper()
		if n := evil.admin(t, eca, http.MethodGet, "/admin/stats")["code_presented"]; n != 0 {
			t.Fatalf("%s: evil's token endpoint was sent %d codes: honest's code reached the attacker:\n%s", how, n, said)
		}
	}
	mixedUp := func(out string) bool {
		return strings.Contains(out, fmt.Sprintf("the answer comes from authorization server %q, but this sign-in went to %q", honest.issuer, evil.issuer)) ||
			strings.Contains(out, "mix-up attack")
	}
	variants := []struct {
		name, suffix string
		resource     string                // the resource the attacker's request at honest names
		refusal      func(out string) bool // the refusal as mcpcage login prints it, or the listener's page (HTML) shows it
	}{
		{"honest names itself", "", honest.mcpURL, mixedUp},
		{"honest's answer names evil first", "?iss=" + url.QueryEscape(evil.issuer), honest.mcpURL, func(out string) bool {
			return strings.Contains(out, `the answer gives "iss" 2 times: refused`) || strings.Contains(out, `the answer gives &#34;iss&#34; 2 times: refused`)
		}},
		// An error answer (honest refuses the request: another resource)
		// is checked against the issuer too: it is not evil's to end.
		{"honest's error answer", "", "https://elsewhere.example/mcp", mixedUp},
	}

	for _, v := range variants {
		// The sign-in at evil, through mcpcage login.
		lr := d.startLogin(t, "evil")
		jar, err := cookiejar.New(nil)
		must(t, err, "cookie jar")
		b := *browser
		b.Jar = jar
		var atEvil *url.URL
		b.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host == eu.Host {
				atEvil = req.URL // evil's authorization endpoint: the attacker takes over from here
				return http.ErrUseLastResponse
			}
			return nil
		}
		resp, err := b.Get(lr.link)
		must(t, err, "open the sign-in link")
		_ = resp.Body.Close()
		if atEvil == nil {
			t.Fatalf("the sign-in link did not lead to evil's authorization server (%s)", resp.Status)
		}
		b.CheckRedirect = nil
		mixUp(&b, atEvil, v.suffix, v.resource)
		out, err := lr.wait(t)
		noCodeAtEvil("mcpcage login, "+v.name, out)
		if err == nil || !v.refusal(out) {
			t.Fatalf("mcpcage login evil with honest's answer (%s): %v\n%s", v.name, err, out)
		}

		// The same through the in-band link, whose answer comes back to
		// the daemon's own listener.
		r := startRaw(t, d.shimCmd("evil"))
		r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"url":{}}},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
		l := r.response(`"init"`)
		var elicit struct {
			Error struct {
				Data struct {
					Elicitations []struct {
						URL string `json:"url"`
					} `json:"elicitations"`
				} `json:"data"`
			} `json:"error"`
		}
		must(t, json.Unmarshal([]byte(l), &elicit), "decode %s", l)
		if len(elicit.Error.Data.Elicitations) != 1 {
			t.Fatalf("no in-band sign-in link: %s", l)
		}
		atEvil, err = url.Parse(elicit.Error.Data.Elicitations[0].URL)
		must(t, err, "the in-band link")
		if atEvil.Host != eu.Host {
			t.Fatalf("the in-band link leads to %s, not evil's authorization server", atEvil.Host)
		}
		resp, page := mixUp(browser, atEvil, v.suffix, v.resource)
		noCodeAtEvil("in-band, "+v.name, string(page))
		if !strings.Contains(string(page), "signing in to evil failed") || !v.refusal(string(page)) {
			t.Fatalf("in-band (%s): the listener's page for honest's answer: %s %s", v.name, resp.Status, page)
		}
		r.closeInput()
		r.wait()
	}

	if n := honest.admin(t, hca, http.MethodGet, "/admin/stats")["code_presented"]; n != presented {
		t.Errorf("honest's token endpoint was sent %d codes since the first sign-in", n-presented)
	}
	// A link opened twice abandons the sign-in in mcpcage login, and in
	// mcpcaged too: it is recorded, and no code can finish it later.
	lr := d.startLogin(t, "honest")
	noFollow := *browser
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for range 2 {
		resp, err := noFollow.Get(lr.link)
		must(t, err, "open the sign-in link")
		_ = resp.Body.Close()
	}
	if out, err := lr.wait(t); err == nil || !strings.Contains(out, "the sign-in link was opened twice") {
		t.Fatalf("mcpcage login with its link opened twice: %v\n%s", err, out)
	}

	recs := d.mustCLI(t, "audit", "--json", "--type", "signin.fail")
	if !strings.Contains(recs, "mcpcage login ended the sign-in: the sign-in link was opened twice") {
		t.Fatalf("signin.fail records, want the abandoned sign-in:\n%s", recs)
	}
	if n := strings.Count(recs, "mix-up attack"); n < 4 || !strings.Contains(recs, `\"iss\" 2 times`) {
		t.Fatalf("signin.fail records, want the refusals (%d name the mix-up):\n%s", n, recs)
	}
	if list := d.mustCLI(t, "tokens"); strings.Contains(list, "evil") || !strings.Contains(list, "honest") {
		t.Fatalf("mcpcage tokens, want honest's sign-in and none to evil:\n%s", list)
	}
}

// TestSignInRegistrationsAreBounded: a local user who begins sign-ins and
// abandons them at once, each with a new loopback port (as mcpcage login
// listens), has mcpcaged register a client at the authorization server
// for each; past the per-user bound mcpcaged refuses, with when to try
// again, and registers nothing more.
func TestSignInRegistrationsAreBounded(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	st := startIssueStack(t, dir)
	ca := filepath.Join(dir, "ca.pem")
	u, err := url.Parse(st.issuer)
	must(t, err, "issuer")
	d := consentDaemon(t, fmt.Sprintf("[servers.issues]\nurl = %q\nhosts = [%q]\nca_file = %q\n", st.mcpURL, u.Host, ca))
	registered := func() int { return st.admin(t, ca, http.MethodGet, "/admin/stats")["register"] }
	before := registered()
	const bound = 20 // daemon/oauth maxRegistrations
	var refusal error
	n := 0
	for ; n <= bound; n++ {
		var start api.LoginStart
		refusal = api.Call(d.socket, api.Request{Op: api.OpLogin, Server: "issues", Redirect: fmt.Sprintf("http://127.0.0.1:%d/callback", 41000+n)}, &start)
		if refusal != nil {
			break
		}
		err := api.Call(d.socket, api.Request{Op: api.OpLoginDone, State: start.State, AuthIssuerSent: true, AuthRefused: "abandoned by the test"}, nil)
		if err == nil || !strings.Contains(err.Error(), "abandoned by the test") {
			t.Fatalf("sign-in %d, abandoned: %v", n+1, err)
		}
	}
	if n != bound || refusal == nil || !strings.Contains(refusal.Error(), "registered 20 clients") || !strings.Contains(refusal.Error(), "try again in") {
		t.Fatalf("after %d sign-ins begun and abandoned: %v; want the registrations' bound after %d", n, refusal, bound)
	}
	if got := registered() - before; got != bound {
		t.Fatalf("the authorization server saw %d registrations, want %d", got, bound)
	}
}

// TestRemoteServerLargeAnswersKeepTheDaemonSmall: a remote server (or a
// user's own remote server) answers the calls a session has in flight,
// all at once, each with an answer near max_message_bytes, half as JSON
// bodies and half as SSE events. mcpcaged reads one such answer at a
// time past 64 KiB (the others wait, and so do the server's writes), so
// its peak memory grows by about one answer, not by all of them; every
// answer still reaches the client whole.
func TestRemoteServerLargeAnswersKeepTheDaemonSmall(t *testing.T) {
	const (
		calls    = 32
		textSize = 6 << 20 // of max_message_bytes = 8 MiB
	)
	text := strings.Repeat("x", textSize)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		answer := func(result string) string {
			return `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + result + `}`
		}
		switch {
		case req.Method == "initialize":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, answer(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"big","version":"1"}}`))
		case len(req.ID) == 0:
			w.WriteHeader(http.StatusAccepted)
		case req.Method == "tools/call":
			n, _ := strconv.Atoi(string(req.ID))
			body := answer(`{"content":[{"type":"text","text":"` + text + `"}]}`)
			if n%2 == 0 {
				w.Header().Set("Content-Type", "text/event-stream")
				body = "data: " + body + "\n\n"
			} else {
				w.Header().Set("Content-Type", "application/json")
			}
			w.(http.Flusher).Flush() // no Content-Length: the answer's size is known only at its end
			for len(body) > 0 {
				k := min(len(body), 64<<10)
				if _, err := io.WriteString(w, body[:k]); err != nil {
					return
				}
				body = body[k:]
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, answer(`{"tools":[]}`))
		}
	}))
	t.Cleanup(srv.Close)
	d := startDaemon(t, fmt.Sprintf("[daemon]\nmax_message_bytes = \"8MiB\"\n[servers.big]\nurl = %q\n", srv.URL+"/mcp"))
	r := startRaw(t, d.shimCmd("big"))
	r.initialize()
	before := peakRSS(t, d.cmd.Process.Pid)
	var burst strings.Builder
	for i := 1; i <= calls; i++ {
		fmt.Fprintf(&burst, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"big","arguments":{}}}`+"\n", i)
	}
	r.send(burst.String())
	seen := map[string]bool{}
	for len(seen) < calls {
		line := r.next()
		var a struct {
			ID     json.RawMessage `json:"id"`
			Result struct {
				Content []struct{ Text string } `json:"content"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil || len(a.ID) == 0 {
			t.Fatalf("unexpected line %.300s (%v)", line, err)
		}
		if len(a.Result.Content) != 1 || len(a.Result.Content[0].Text) != textSize {
			t.Fatalf("answer %s is not whole: %.300s", a.ID, line)
		}
		seen[string(a.ID)] = true
	}
	grew := peakRSS(t, d.cmd.Process.Pid) - before
	t.Logf("mcpcaged's peak memory grew by %d MiB for %d answers of %d MiB", grew>>20, calls, textSize>>20)
	// One answer read at a time is a few of its size (the read buffer,
	// the relay's line, the write to the client, garbage not yet
	// collected); all of them at once would be calls times that.
	if limit := int64(16 * textSize); grew > limit {
		t.Fatalf("mcpcaged's peak memory grew by %d MiB, over %d MiB, for %d answers of %d MiB: answers were held at once", grew>>20, limit>>20, calls, textSize>>20)
	}
	r.closeInput()
	if code := r.wait(); code != 0 {
		t.Fatalf("shim exit %d; stderr:\n%s", code, r.stderr.String())
	}
}

// TestUserRemoteServerReachesOnlyTheUsersOwnPrograms: mcpcaged connects
// to remote servers as root. A user's own remote server whose url names
// a program of this host (loopback here) is reached only when that
// program is the user's: one of root's is refused before any request
// reaches it (it would take the user's requests for root's), and the
// refusal is the client's error; the user's own local server answers.
// Before, `mcpcage server add x --url http://127.0.0.1:PORT/...` had the
// daemon send any user's requests to whatever root runs on that port.
func TestUserRemoteServerReachesOnlyTheUsersOwnPrograms(t *testing.T) {
	uid, d := userDaemon(t)
	var rootRequests atomic.Int32
	rootSvc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rootRequests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":"init","result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"root-service","version":"1"}}}`)
	}))
	t.Cleanup(rootSvc.Close)

	// The user's own server: node, as the user, on a port of its choosing.
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	own := exec.Command(node, "-e", `const s = require('http').createServer((q, r) => {
  let b = ''; q.on('data', d => b += d); q.on('end', () => {
    const m = JSON.parse(b);
    if (m.id === undefined) { r.writeHead(202); r.end(); return; }
    r.writeHead(200, {'Content-Type': 'application/json'});
    r.end(JSON.stringify({jsonrpc: '2.0', id: m.id, result: {protocolVersion: '2025-11-25', capabilities: {}, serverInfo: {name: 'users-own', version: '1'}}}));
  });
}); s.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));`)
	own.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}, Pdeathsig: syscall.SIGKILL}
	out, err := own.StdoutPipe()
	must(t, err, "stdout of the user's server")
	must(t, own.Start(), "start the user's server")
	t.Cleanup(func() { _ = own.Process.Kill(); _ = own.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	must(t, err, "the user's server's port")
	ownPort := strings.TrimSpace(strings.TrimPrefix(line, "port "))

	add := func(name, url string) {
		t.Helper()
		if out, err := d.cli(t, uid, "server", "add", name, "--url", url); err != nil {
			t.Fatalf("server add %s: %v %s", name, err, out)
		}
	}
	add("roots", rootSvc.URL+"/mcp")
	add("mine", "http://127.0.0.1:"+ownPort+"/mcp")
	d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	defer func() { d.shimCred = nil }()
	initialize := func(name string, during func()) string {
		t.Helper()
		r := startRaw(t, d.shimCmd(name))
		r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
		l := r.response(`"init"`)
		during()
		r.closeInput()
		r.wait()
		return l
	}
	if l := initialize("roots", func() {}); !strings.Contains(l, "that uid 0 runs, not you") || !strings.Contains(l, `"error"`) {
		t.Fatalf("a user's server at root's program: %s", l)
	}
	if n := rootRequests.Load(); n != 0 {
		t.Fatalf("root's program got %d requests of the user's server", n)
	}
	// The daemon's connection is the user's for the kernel (made with
	// the user's credentials: a host firewall's owner match sees the
	// user, not root).
	ownEnd := netip.MustParseAddrPort("127.0.0.1:" + ownPort)
	var sock tcpsockets.Socket
	var found bool
	l := initialize("mine", func() {
		var err error
		sock, found, err = tcpsockets.ConnectedTo(ownEnd)
		must(t, err, "the daemon's connection to the user's server")
	})
	if !strings.Contains(l, "users-own") {
		t.Fatalf("a user's server at the user's own program: %s", l)
	}
	if !found || sock.UID != uint32(uid) {
		t.Fatalf("the daemon's connection to the user's server: %+v (found %v), want uid %d's", sock, found, uid)
	}
	// The refusal is in the log (the client's error is the record of
	// the session's end).
	if !strings.Contains(d.log.String(), "that uid 0 runs") {
		t.Errorf("the daemon's log does not say why the user's server was refused:\n%s", d.log.String())
	}
}

// An administrator's remote server on this host's loopback is reached
// only when the program listening there is one of its local_users' (root when
// unset). Found by a red-team helper: any user who took the port while
// the service was down (a restart, a crash) received every user's token
// and calls. Here uid 65534 listens on the port: the session's first
// message is refused, saying why, and nothing reaches the listener; with
// local_users = ["root", "65534"] it is reached.
func TestAdminRemoteServerOnLoopbackIsItsUsers(t *testing.T) {
	setup(t)
	node, err := exec.LookPath("node")
	testenv.Require(t, err == nil, "node")
	port := portOf(t, freePort(t))
	squatter := exec.Command(node, "-e", `require('http').createServer((q, s) => { console.log('request ' + q.method + ' ' + (q.headers.authorization || '')); s.writeHead(404); s.end() }).listen(+process.argv[1], '127.0.0.1', () => console.log('listening'))`, fmt.Sprint(port))
	heard := &syncBuffer{}
	squatter.Stdout, squatter.Stderr = heard, heard
	squatter.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	must(t, squatter.Start(), "start the listener as uid 65534")
	t.Cleanup(func() { _ = squatter.Process.Kill(); _ = squatter.Wait() })
	testenv.WaitFor(t, "the listener of uid 65534", 30*time.Second, func() (bool, string) {
		return strings.Contains(heard.String(), "listening"), heard.String()
	})
	d := consentDaemon(t, fmt.Sprintf("[servers.taken]\nurl = \"http://127.0.0.1:%d/mcp\"\n[servers.nobodys]\nurl = \"http://127.0.0.1:%d/mcp\"\nlocal_users = [\"root\", \"65534\"]\n", port, port))
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n"

	r := startRaw(t, d.shimCmd("taken"))
	r.send(initialize)
	if l := r.response("1"); !strings.Contains(l, `"error"`) || !strings.Contains(l, "uid 65534 runs, not one of the server's local_users") {
		t.Fatalf("initialize through a server whose port uid 65534 took: %s; want it refused, saying why", l)
	}
	if strings.Contains(heard.String(), "request") {
		t.Fatalf("the listener of uid 65534 was sent a request: %s", heard.String())
	}
	r.closeInput()
	r.wait()

	r = startRaw(t, d.shimCmd("nobodys"))
	r.send(initialize)
	r.response("1") // an error: the listener answers 404
	testenv.WaitFor(t, "the request at the listener of local_user", 30*time.Second, func() (bool, string) {
		return strings.Contains(heard.String(), "request POST"), heard.String()
	})
	r.closeInput()
	r.wait()
}

// TestAgentSignInCannotWidenItsScopes: an agent held to scopes
// ([agents.itest.scopes] issues = ["read"]) whose sign-in link is widened
// before the browser opens it (its client is given the link in-band) and
// whose authorization server leaves scope out of the token answer (RFC
// 6749 §5.1 allows it when it is what was asked). Found by a red-team
// helper: the sign-in recorded the scopes mcpcaged asked for, and the
// agent's calls carried a token that held write. The token's own scope
// (a JWT here) is now what the sign-in records (without either, the
// sign-in is refused: oauth TestAgentSignInNeedsTheGrantedScopes), so
// the agent is told to sign in again and its calls never carry it.
func TestAgentSignInCannotWidenItsScopes(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	st := startIssueStack(t, dir, "-omit-scope")
	ca := filepath.Join(dir, "ca.pem")
	u, err := url.Parse(st.issuer)
	must(t, err, "issuer")
	d := consentDaemon(t, fmt.Sprintf("[servers.issues]\nurl = %q\nhosts = [%q]\nca_file = %q\n[agents.itest.scopes]\nissues = [\"read\"]\n", st.mcpURL, u.Host, ca))
	must(t, os.WriteFile(st.jwks, []byte(d.mustCLI(t, "jwks")), 0o644), "write the actor key set")
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "issues", "--tool", "*")
	browser := st.client(t, ca)
	browser.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasSuffix(req.URL.Path, "/authorize") { // the agent widens the link
			q := req.URL.Query()
			q.Set("scope", "read write")
			req.URL.RawQuery = q.Encode()
		}
		return nil
	}
	out := d.login(t, browser, "--agent", "itest", "issues")
	if !strings.Contains(out, "write") {
		t.Fatalf("login of the widened link: %s; want the sign-in to say the scopes it holds", out)
	}
	r := startRaw(t, d.shimCmd("issues"))
	r.initialize()
	r.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}` + "\n")
	if who := r.response("2"); strings.Contains(who, `write`) && !strings.Contains(who, "may no longer use") || !strings.Contains(who, "sign in") {
		t.Fatalf("whoami of an agent held to read, after a widened sign-in: %s; want it told to sign in again, with no token of scope write used", who)
	}
	r.closeInput()
	r.wait()
}
