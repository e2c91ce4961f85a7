package relay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// harness runs a relay between pipes the test drives as client and server.
type harness struct {
	t         *testing.T
	clientW   *io.PipeWriter // test writes as the client
	clientR   *bufio.Reader  // test reads what the client receives
	serverR   *bufio.Reader  // test reads what the server receives
	serverW   *io.PipeWriter // test writes as the server
	relay     *Relay
	done      chan End
	clientEOF chan struct{}
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	cinR, cinW := io.Pipe()
	coutR, coutW := io.Pipe()
	sinR, sinW := io.Pipe()
	soutR, soutW := io.Pipe()
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &harness{t: t, clientW: cinW, clientR: bufio.NewReader(coutR), serverR: bufio.NewReader(sinR),
		serverW: soutW, done: make(chan End, 1), clientEOF: make(chan struct{})}
	var once sync.Once
	opts.OnClientEOF = func() { once.Do(func() { close(h.clientEOF) }) }
	h.relay = New(opts, Streams{ClientIn: cinR, ClientOut: coutW, ServerIn: sinW, ServerOut: soutR})
	go func() {
		h.done <- h.relay.Run(func() string { return "the MCP server exited with status 3" })
		coutW.Close()
	}()
	t.Cleanup(func() { cinW.Close(); soutW.Close() })
	return h
}

func (h *harness) line(r *bufio.Reader, who string) string {
	h.t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := r.ReadString('\n'); ch <- res{s, err} }()
	select {
	case x := <-ch:
		if x.err != nil {
			h.t.Fatalf("read from %s: %v (partial %q)", who, x.err, x.s)
		}
		return x.s
	case <-time.After(5 * time.Second):
		h.t.Fatalf("nothing reached the %s", who)
	}
	return ""
}

func (h *harness) fromClient(s string) { h.t.Helper(); h.write(h.clientW, s) }
func (h *harness) fromServer(s string) { h.t.Helper(); h.write(h.serverW, s) }
func (h *harness) write(w io.Writer, s string) {
	h.t.Helper()
	go func() { _, _ = io.WriteString(w, s) }()
}
func (h *harness) toServer() string { h.t.Helper(); return h.line(h.serverR, "server") }
func (h *harness) toClient() string { h.t.Helper(); return h.line(h.clientR, "client") }

func errorCode(t *testing.T, line string) (code int, id string) {
	t.Helper()
	var r struct {
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("not JSON: %q", line)
	}
	return r.Error.Code, string(r.ID)
}

// An error the server could not tie to a request (id null: mcp-go's
// answer to a line it cannot parse) goes to the client as it is, and is
// logged: no client takes it for the answer it waits for, so without the
// line a request the server could not read leaves nothing in the log.
func TestRelayLogsServerErrorForNoRequest(t *testing.T) {
	var log strings.Builder // written before the client gets the error, read after
	h := newHarness(t, Options{Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}` + "\n")
	h.toServer()
	resp := `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}` + "\n"
	h.fromServer(resp)
	if got := h.toClient(); got != resp {
		t.Fatalf("client got %q, want %q", got, resp)
	}
	if got := log.String(); !strings.Contains(got, "server error answering no request passed on") || !strings.Contains(got, "Parse error") {
		t.Fatalf("log %q does not say it", got)
	}
}

func TestRelayPassesBytesUnchanged(t *testing.T) {
	h := newHarness(t, Options{})
	req := "{ \"jsonrpc\" : \"2.0\", \"id\": 9007199254740991, \"method\":\"tools/list\" , \"params\":{\"x\":1.50}}\r\n"
	h.fromClient(req)
	if got := h.toServer(); got != req {
		t.Fatalf("server got %q, want %q", got, req)
	}
	resp := "{\"jsonrpc\":\"2.0\",\"id\":9007199254740991,\"result\":{\"tools\":[],\"unknownKey\":{\"$schema\":1e400}}}\n"
	h.fromServer(resp)
	if got := h.toClient(); got != resp {
		t.Fatalf("client got %q, want %q", got, resp)
	}
	if n := len(h.relay.InFlight()); n != 0 {
		t.Fatalf("%d requests still in flight after the response", n)
	}
}

func TestRelayOutOfOrderResponses(t *testing.T) {
	h := newHarness(t, Options{})
	for _, id := range []string{"1", `"two"`, "3"} {
		h.fromClient(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call"}` + "\n")
		h.toServer()
	}
	for _, id := range []string{"3", "1", `"two"`} {
		resp := `{"jsonrpc":"2.0","id":` + id + `,"result":{}}` + "\n"
		h.fromServer(resp)
		if got := h.toClient(); got != resp {
			t.Fatalf("got %q, want %q", got, resp)
		}
	}
}

func TestRelayBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   string
		code int
		id   string
	}{
		{"not json", "hello\n", wire.CodeParseError, "null"},
		{"truncated json", `{"jsonrpc":"2.0","id":1,"method":` + "\n", wire.CodeParseError, "null"},
		{"invalid utf8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}\n", wire.CodeParseError, "null"},
		{"wrong version", `{"jsonrpc":"1.0","id":4,"method":"x"}` + "\n", wire.CodeInvalidRequest, "4"},
		{"null id request", `{"jsonrpc":"2.0","id":null,"method":"x"}` + "\n", wire.CodeInvalidRequest, "null"},
		{"empty batch", "[]\n", wire.CodeInvalidRequest, "null"},
		{"reserved id", "", 0, ""},
	}
	for _, tt := range tests {
		if tt.in == "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.fromClient(tt.in)
			code, id := errorCode(t, h.toClient())
			if code != tt.code || id != tt.id {
				t.Fatalf("got code %d id %s, want %d %s", code, id, tt.code, tt.id)
			}
			// The session goes on: a good request still passes.
			good := `{"jsonrpc":"2.0","id":7,"method":"ping"}` + "\n"
			h.fromClient(good)
			if got := h.toServer(); got != good {
				t.Fatalf("server got %q after bad input", got)
			}
		})
	}
}

func TestRelayDropsBadServerMessages(t *testing.T) {
	h := newHarness(t, Options{})
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n")
	h.toServer()
	h.fromServer("garbage\n" + `{"jsonrpc":"2.0","id":99,"result":{}}` + "\n" + `{"jsonrpc":"2.0","id":1,"result":{}}` + "\n")
	if got := h.toClient(); !strings.Contains(got, `"id":1,`) {
		t.Fatalf("client got %q, want the correlated response only", got)
	}
	if h.relay.Stats.Malformed[ServerToClient].Load() != 1 || h.relay.Stats.Uncorrelated.Load() != 1 {
		t.Fatalf("malformed=%d uncorrelated=%d, want 1 and 1", h.relay.Stats.Malformed[ServerToClient].Load(), h.relay.Stats.Uncorrelated.Load())
	}
}

func TestRelayServerGoneAnswersPending(t *testing.T) {
	h := newHarness(t, Options{})
	h.fromClient(`{"jsonrpc":"2.0","id":5,"method":"tools/call"}` + "\n")
	h.toServer()
	h.serverW.Close()
	line := h.toClient()
	if code, id := errorCode(t, line); code != wire.CodeServerGone || id != "5" {
		t.Fatalf("got %q", line)
	}
	if !strings.Contains(line, "exited with status 3") {
		t.Fatalf("answer does not explain the exit: %q", line)
	}
	if end := <-h.done; end.Reason != "server_exited" {
		t.Fatalf("end = %+v", end)
	}
}

func TestRelayClientTooLarge(t *testing.T) {
	h := newHarness(t, Options{MaxMessageBytes: 4096})
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"` + strings.Repeat("a", 10000) + `"}}` + "\n")
	if code, _ := errorCode(t, h.toClient()); code != wire.CodeTooLarge {
		t.Fatalf("code = %d", code)
	}
	select {
	case <-h.clientEOF:
	case <-time.After(5 * time.Second):
		t.Fatal("session did not start ending")
	}
	// The relay closed the server's stdin: the server sees EOF.
	if _, err := h.serverR.ReadString('\n'); err != io.EOF {
		t.Fatalf("server stdin: %v, want EOF", err)
	}
	h.serverW.Close()
	if end := <-h.done; end.Reason != "client_message_too_large" || end.Err == nil {
		t.Fatalf("end = %+v", end)
	}
}

func TestRelayServerTooLarge(t *testing.T) {
	h := newHarness(t, Options{MaxMessageBytes: 4096})
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"x"}` + "\n")
	h.toServer()
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":"` + strings.Repeat("a", 10000) + `"}` + "\n")
	line := h.toClient()
	if code, id := errorCode(t, line); code != wire.CodeServerGone || id != "1" || !strings.Contains(line, "max_message_bytes") {
		t.Fatalf("got %q", line)
	}
	if end := <-h.done; end.Reason != "server_message_too_large" {
		t.Fatalf("end = %+v", end)
	}
}

type denyMethod string

func (d denyMethod) FromClient(e *wire.Envelope, _ []byte) Verdict {
	if e.Method == string(d) {
		return Verdict{Deny: true, Reason: "not granted"}
	}
	return Verdict{}
}
func (denyMethod) FromServer(*wire.Envelope, []byte, string) Verdict { return Verdict{} }

func TestRelayBatchElementsDecidedAlone(t *testing.T) {
	h := newHarness(t, Options{Inspector: denyMethod("tools/call")})
	a := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	b := `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`
	c := `{"jsonrpc":"2.0","method":"notifications/x"}`
	h.fromClient("[" + a + ", " + b + "," + c + "]\n")
	if code, id := errorCode(t, h.toClient()); code != wire.CodeDenied || id != "2" {
		t.Fatalf("denied element answered with %d id %s", code, id)
	}
	if got, want := h.toServer(), "["+a+","+c+"]\n"; got != want {
		t.Fatalf("server got %q, want %q", got, want)
	}
	// A batch that passes whole is forwarded as received.
	whole := "[" + `{"jsonrpc":"2.0","id":3,"method":"tools/list"}` + " , " + c + "]\n"
	h.fromClient(whole)
	if got := h.toServer(); got != whole {
		t.Fatalf("server got %q, want %q", got, whole)
	}
}

func TestRelayOwnNamespaceReserved(t *testing.T) {
	h := newHarness(t, Options{})
	// A response in the namespace never reaches the server.
	h.fromClient(`{"jsonrpc":"2.0","id":"` + OwnIDPrefix + `99","result":{}}` + "\n")
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n"
	h.fromClient(ping)
	if got := h.toServer(); got != ping {
		t.Fatalf("server got %q, want the ping right after the reserved-id response", got)
	}
	// A server request using the reserved namespace is refused.
	h.fromServer(`{"jsonrpc":"2.0","id":"` + OwnIDPrefix + `1","method":"roots/list"}` + "\n")
	if code, _ := errorCode(t, h.toServer()); code != wire.CodeInvalidRequest {
		t.Fatalf("code = %d", code)
	}
}

func TestRelayServerRequestsCorrelate(t *testing.T) {
	h := newHarness(t, Options{})
	req := `{"jsonrpc":"2.0","id":0,"method":"roots/list"}` + "\n"
	h.fromServer(req)
	if got := h.toClient(); got != req {
		t.Fatalf("client got %q", got)
	}
	resp := `{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}` + "\n"
	h.fromClient(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n") // not asked for: dropped
	h.fromClient(resp)
	if got := h.toServer(); got != resp {
		t.Fatalf("server got %q", got)
	}
}

func TestRelayClaims(t *testing.T) {
	tests := []struct {
		name, msg string
		want      Claims
	}{
		{"initialize", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"c","version":"1"},"capabilities":{}}}`,
			Claims{Era: EraInitialize, ProtocolVersion: "2025-11-25", ClientInfo: json.RawMessage(`{"name":"c","version":"1"}`)}},
		{"stateless", `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"d"}}}}`,
			Claims{Era: EraStateless, ProtocolVersion: "2026-07-28", ClientInfo: json.RawMessage(`{"name":"d"}`)}},
		{"re-encoded", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{ "version" : "1", "n\u0061me":"c" },"capabilities":{}}}`,
			Claims{Era: EraInitialize, ProtocolVersion: "2025-11-25", ClientInfo: json.RawMessage(`{"name":"c","version":"1"}`)}},
		// Found by a red-team helper: readers' parsers refused the
		// record (1e400), and parsers disagree on the name.
		{"a number beyond float64", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"c","x":1e400},"capabilities":{}}}`,
			Claims{Era: EraInitialize, ProtocolVersion: "2025-11-25", ClientInfo: json.RawMessage(`{"sent":"{\"name\":\"c\",\"x\":1e400}","unreadable":"number 1e400 is outside the range every parser reads alike"}`)}},
		{"a name twice", `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"evil","name":"claude-code"}}}}`,
			Claims{Era: EraStateless, ProtocolVersion: "2026-07-28", ClientInfo: json.RawMessage(`{"sent":"{\"name\":\"evil\",\"name\":\"claude-code\"}","unreadable":"duplicate member \"name\""}`)}},
		{"too long", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"` + strings.Repeat("a", 5000) + `"},"capabilities":{}}}`,
			Claims{Era: EraInitialize, ProtocolVersion: "2025-11-25", ClientInfo: json.RawMessage(`{"sent":"{\"name\":\"` + strings.Repeat("a", 247) + `","unreadable":"5011 bytes, over 4096"}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.fromClient(tt.msg + "\n")
			h.toServer()
			got := h.relay.Claims()
			if got.Era != tt.want.Era || got.ProtocolVersion != tt.want.ProtocolVersion || string(got.ClientInfo) != string(tt.want.ClientInfo) {
				t.Fatalf("claims = %+v (client info %s), want %+v (%s)", got, got.ClientInfo, tt.want, tt.want.ClientInfo)
			}
		})
	}
}

func TestRelayRestoresMangledNumericID(t *testing.T) {
	h := newHarness(t, Options{})
	h.fromClient(`{"jsonrpc":"2.0","id":100,"method":"ping"}` + "\n")
	h.toServer()
	// A server that parsed the id as float64 may write it back in
	// another form.
	h.fromServer(`{"jsonrpc":"2.0","id":1e2,"result":{}}` + "\n")
	if got, want := h.toClient(), `{"jsonrpc":"2.0","id":100,"result":{}}`+"\n"; got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
}

func TestRelayCallsAt(t *testing.T) {
	h := newHarness(t, Options{})
	before := time.Now()
	h.fromClient(`{"jsonrpc":"2.0","id":1,"method":"tools/call"}` + "\n")
	h.toServer()
	during := time.Now()
	if got := h.relay.CallsAt(during, "tools/call"); len(got) != 1 || got[0].ID != "1" {
		t.Fatalf("in flight: %+v", got)
	}
	h.fromServer(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n")
	h.toClient()
	after := time.Now().Add(time.Millisecond)
	if got := h.relay.CallsAt(during, "tools/call"); len(got) != 1 {
		t.Fatalf("answered call no longer attributed to a moment it was in flight: %+v", got)
	}
	if got := h.relay.CallsAt(after, "tools/call"); len(got) != 0 {
		t.Fatalf("attributed after its answer: %+v", got)
	}
	if got := h.relay.CallsAt(before.Add(-time.Second), "tools/call"); len(got) != 0 {
		t.Fatalf("attributed before it was sent: %+v", got)
	}
	if got := h.relay.CallsAt(during, "tools/list"); len(got) != 0 {
		t.Fatalf("wrong method: %+v", got)
	}
}

func TestRelayCancelledRequestsLeaveTheTable(t *testing.T) {
	h := newHarness(t, Options{})
	// Far more cancellations than the table holds, from a server that, as
	// the spec asks, never answers a cancelled request.
	const n = 2*maxPending + 1
	go func() {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			b.Reset()
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"sleep"}}`+"\n", i)
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"timeout"}}`+"\n", i)
			if _, err := io.WriteString(h.clientW, b.String()); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 2*n; i++ {
		h.toServer() // every request and every cancellation is forwarded
	}
	// The session is alive: a new request passes.
	ok := `{"jsonrpc":"2.0","id":"after","method":"tools/call","params":{"name":"echo"}}` + "\n"
	h.fromClient(ok)
	if got := h.toServer(); got != ok {
		t.Fatalf("server got %q after the cancellations, want the request", got)
	}
	// The client loop handled the last cancellation before this request,
	// so the table now holds this request alone.
	if got := h.relay.InFlight(); len(got) != 1 || got[0].ID != `"after"` {
		t.Fatalf("%d requests pending after the cancellations, want only \"after\": %+v", len(got), got[:min(len(got), 3)])
	}
	// A late answer to a cancelled request is dropped quietly; the answer
	// sent after it is the first thing the client sees.
	h.fromServer(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"content":[],"isError":true}}`+"\n", n))
	resp := `{"jsonrpc":"2.0","id":"after","result":{"content":[]}}` + "\n"
	h.fromServer(resp)
	if got := h.toClient(); got != resp {
		t.Fatalf("client got %q, want %q", got, resp)
	}
	if u := h.relay.Stats.Uncorrelated.Load(); u != 0 {
		t.Fatalf("late answer to a cancelled request counted as uncorrelated (%d)", u)
	}
	// When the server dies, the client hears only of what it still waits for.
	h.fromClient(`{"jsonrpc":"2.0","id":"last","method":"tools/call","params":{"name":"echo"}}` + "\n")
	h.toServer()
	h.serverW.Close()
	if code, id := errorCode(t, h.toClient()); code != wire.CodeServerGone || id != `"last"` {
		t.Fatalf("server gone: code %d id %s, want %d for \"last\"", code, id, wire.CodeServerGone)
	}
	if _, err := h.clientR.ReadString('\n'); err != io.EOF {
		t.Fatalf("more answers after the server died: %v", err)
	}
}

func TestRelayServerCancelsItsRequest(t *testing.T) {
	h := newHarness(t, Options{})
	req := `{"jsonrpc":"2.0","id":"r1","method":"roots/list"}` + "\n"
	h.fromServer(req)
	h.toClient()
	cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r1"}}` + "\n"
	h.fromServer(cancel)
	if got := h.toClient(); got != cancel {
		t.Fatalf("client got %q, want the cancellation", got)
	}
	// The client's late answer is not forwarded; the next message is.
	h.fromClient(`{"jsonrpc":"2.0","id":"r1","result":{"roots":[]}}` + "\n")
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n"
	h.fromClient(ping)
	if got := h.toServer(); got != ping {
		t.Fatalf("server got %q, want the ping (the late answer dropped)", got)
	}
	// A server cannot cancel the daemon's own requests to the client.
	h.fromServer(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"` + OwnIDPrefix + `1"}}` + "\n")
	marker := `{"jsonrpc":"2.0","method":"notifications/message","params":{}}` + "\n"
	h.fromServer(marker)
	if got := h.toClient(); got != marker {
		t.Fatalf("client got %q, want the marker (the forged cancellation dropped)", got)
	}
}

func TestRelayRestoresMangledNumericIDInBatch(t *testing.T) {
	h := newHarness(t, Options{})
	h.fromClient(`[{"jsonrpc":"2.0","id":100,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]` + "\n")
	h.toServer()
	h.fromServer(`[{"jsonrpc":"2.0","id":1e2,"result":{}},{"jsonrpc":"2.0","id":2,"result":{}}]` + "\n")
	want := `[{"jsonrpc":"2.0","id":100,"result":{}},{"jsonrpc":"2.0","id":2,"result":{}}]` + "\n"
	if got := h.toClient(); got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
}

// replaceResult rewrites every tools/list result, as the policy's list
// filter does.
type replaceResult struct{}

func (replaceResult) FromClient(*wire.Envelope, []byte) Verdict { return Verdict{} }
func (replaceResult) FromServer(e *wire.Envelope, msg []byte, request string) Verdict {
	if request != "tools/list" {
		return Verdict{}
	}
	whole := e.Whole.Of(msg)
	sp := wire.Span{Start: e.Result.Start - e.Whole.Start, End: e.Result.End - e.Whole.Start}
	return Verdict{Replace: wire.Splice(whole, sp, []byte(`{"tools":[]}`))}
}

func TestRelayRestoresMangledNumericIDInRewrittenResponse(t *testing.T) {
	h := newHarness(t, Options{Inspector: replaceResult{}})
	h.fromClient(`{"jsonrpc":"2.0","id":100,"method":"tools/list"}` + "\n")
	h.toServer()
	h.fromServer(`{"jsonrpc":"2.0","id":1e2,"result":{"tools":[{"name":"x"}]}}` + "\n")
	if got, want := h.toClient(), `{"jsonrpc":"2.0","id":100,"result":{"tools":[]}}`+"\n"; got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
}

// TestRelayFullTableSaysSo: the request past maxPending is refused for
// what it is, not as a duplicate id.
func TestRelayFullTableSaysSo(t *testing.T) {
	h := newHarness(t, Options{})
	go func() {
		var b strings.Builder
		for i := 1; i <= maxPending+1; i++ {
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"sleep"}}`+"\n", i)
		}
		_, _ = io.WriteString(h.clientW, b.String())
	}()
	for i := 0; i < maxPending; i++ {
		h.toServer()
	}
	got := h.toClient()
	if !strings.Contains(got, fmt.Sprintf(`"id":%d`, maxPending+1)) || !strings.Contains(got, "too many pending requests") {
		t.Fatalf("client got %q, want the refusal of the request past the limit", got)
	}
}

// eventLog is what a test saw happen, in order.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// loggedWriter logs each write to the client.
type loggedWriter struct{ log *eventLog }

func (w loggedWriter) Write(b []byte) (int, error) {
	w.log.add("client got " + strings.TrimSpace(string(b)))
	return len(b), nil
}

// seenServer logs each server message it is asked about.
type seenServer struct{ log *eventLog }

func (seenServer) FromClient(*wire.Envelope, []byte) Verdict { return Verdict{} }
func (s seenServer) FromServer(e *wire.Envelope, msg []byte, _ string) Verdict {
	s.log.add("inspected " + string(e.ID.Of(msg)))
	if string(e.ID.Of(msg)) == "2" {
		return Verdict{Deny: true, Reason: "test"}
	}
	return Verdict{}
}

// Responses the server sends together reach the client in one write;
// one it sends alone is written at once. AfterServerMessage runs once the
// messages read so far are dealt with (after the client has them, or
// after they were dropped), never before, and once more when the server's
// output ends.
func TestRelayServerMessagesCoalescedAndAfter(t *testing.T) {
	resp := func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"result":{}}` }
	tests := []struct {
		name     string
		together bool
		want     []string
	}{
		{"one at a time", false, []string{
			"after", // before the first message: nothing to do
			"inspected 1", "client got " + resp("1"), "after",
			"inspected 2", "after", // dropped: the client gets nothing from the server for it
			"inspected 3", "client got " + resp("3"), "after",
		}},
		{"together", true, []string{
			"after",
			"inspected 1", "inspected 2", "inspected 3", "client got " + resp("1") + "\n" + resp("3"), "after",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &eventLog{}
			cinR, cinW := io.Pipe()
			sinR, sinW := io.Pipe()
			soutR, soutW := io.Pipe()
			go func() { _, _ = io.Copy(io.Discard, sinR) }()
			r := New(Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler), Inspector: seenServer{log},
				AfterServerMessage: func() { log.add("after") }},
				Streams{ClientIn: cinR, ClientOut: loggedWriter{log}, ServerIn: sinW, ServerOut: soutR})
			done := make(chan End, 1)
			go func() { done <- r.Run(nil) }()
			for _, id := range []string{"1", "2", "3"} {
				if _, err := io.WriteString(cinW, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`+"\n"); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, func() bool { return len(r.InFlight()) == 3 })
			if tt.together {
				if _, err := io.WriteString(soutW, resp("1")+"\n"+resp("2")+"\n"+resp("3")+"\n"); err != nil {
					t.Fatal(err)
				}
			} else {
				for i, id := range []string{"1", "2", "3"} {
					if _, err := io.WriteString(soutW, resp(id)+"\n"); err != nil {
						t.Fatal(err)
					}
					// The relay has dealt with it: after ran for it.
					waitUntil(t, func() bool { return count(log.get(), "after") == i+2 })
				}
			}
			soutW.Close()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the relay did not end after the server's output did")
			}
			cinW.Close()
			got := log.get()
			// The end: the loop's last call; the relay's answer for the
			// request whose response was dropped may come before or after it.
			if len(got) < len(tt.want) || strings.Join(got[:len(tt.want)], "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("events:\n%s\nwant them to begin with:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if n := count(got[len(tt.want):], "after"); n != 1 {
				t.Fatalf("after the server's output ended: %d calls, want 1 (events %q)", n, got[len(tt.want):])
			}
		})
	}
}

// count is how many of events are e.
func count(events []string, e string) int {
	n := 0
	for _, x := range events {
		if x == e {
			n++
		}
	}
	return n
}

// waitUntil polls cond until it holds or 10 s pass.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Ids a server reading doubles would take for others are refused before
// they reach it: 2^53+1 and 2^53 are one number there, so the answer to
// a tools/list (id 2^53+1) would be taken for the answer to a ping (2^53)
// and the list would skip its filter.
func TestRelayRefusesIDsBeyondDoubles(t *testing.T) {
	h := newHarness(t, Options{})
	h.fromClient(`{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/list"}` + "\n")
	code, id := errorCode(t, h.toClient())
	if code != wire.CodeInvalidRequest || id != "9007199254740993" {
		t.Fatalf("refusal code %d id %s, want -32600 for 9007199254740993", code, id)
	}
	h.fromClient(`{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}` + "\n")
	if got := h.toServer(); !strings.Contains(got, "9007199254740991") {
		t.Fatalf("server got %q, want the ping with the largest exact id (the refused request never)", got)
	}
}

// A cancellation whose requestId a receiver could read as another
// request than the relay does (a second one, or one in another letter
// case, which mcp-go reads) is dropped, in both directions: it would
// cancel a request the relay keeps waiting for, or the daemon's own.
func TestRelayDropsAmbiguousCancellations(t *testing.T) {
	for _, params := range []string{
		`{"requestId":"r1","REQUESTID":"` + OwnIDPrefix + `1"}`,
		`{"requestId":"r1","requestId":"` + OwnIDPrefix + `1"}`,
		`{"request\u0049d":"r1"}`,
	} {
		t.Run(params, func(t *testing.T) {
			h := newHarness(t, Options{})
			// The client's cancellation of its request.
			req := `{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"sleep"}}` + "\n"
			h.fromClient(req)
			h.toServer()
			h.fromClient(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":` + params + `}` + "\n")
			ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n"
			h.fromClient(ping)
			if got := h.toServer(); got != ping {
				t.Fatalf("server got %q, want the ping (the cancellation dropped)", got)
			}
			resp := `{"jsonrpc":"2.0","id":"r1","result":{"content":[]}}` + "\n"
			h.fromServer(resp)
			if got := h.toClient(); got != resp {
				t.Fatalf("client got %q, want the answer to its request, still pending", got)
			}
			// The server's cancellation of its request to the client.
			h.fromServer(`{"jsonrpc":"2.0","id":"r1","method":"roots/list"}` + "\n")
			h.toClient()
			h.fromServer(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":` + params + `}` + "\n")
			marker := `{"jsonrpc":"2.0","method":"notifications/message","params":{}}` + "\n"
			h.fromServer(marker)
			if got := h.toClient(); got != marker {
				t.Fatalf("client got %q, want the marker (the cancellation dropped)", got)
			}
		})
	}
}
