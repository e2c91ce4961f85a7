package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// askedClient answers the server's requests and counts them.
type askedClient struct {
	mu    sync.Mutex
	asked map[string]int
}

func (a *askedClient) note(what string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked[what]++
}

func (a *askedClient) count(what string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked[what]
}

func (a *askedClient) CreateMessage(context.Context, mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	a.note("sampling")
	return &mcp.CreateMessageResult{SamplingMessage: mcp.SamplingMessage{Role: mcp.RoleAssistant, Content: mcp.NewTextContent("hi from the model")}, Model: "itest"}, nil
}

func (a *askedClient) Elicit(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	a.note("elicitation")
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"name": "alice"}}}, nil
}

func (a *askedClient) ListRoots(context.Context, mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	a.note("roots")
	return &mcp.ListRootsResult{Roots: []mcp.Root{{URI: "file:///work", Name: "work"}}}, nil
}

// Requests a server makes of the client are decided per server: by
// default sampling is refused (the server gets an error, the client never
// sees it) and recorded, elicitation and roots pass; allow_sampling and
// allow_roots change that. In both eras: requests toward the client
// (initialize era) and input requests of a result (2026-07-28).
func TestServerRequestsGoverned(t *testing.T) {
	setup(t) // env.bin is known after setup
	d := startDaemon(t, fmt.Sprintf("[servers.sampler]\ncommand = [%q]\nallow_sampling = true\nallow_roots = false\n", filepath.Join(env.bin, "testserver")))
	for _, era := range []string{mcp.ProtocolVersion20251125, ""} {
		for _, tc := range []struct {
			server, kind string
			allowed      bool
		}{
			{"test", "sampling", false},
			{"test", "elicitation", true},
			{"test", "roots", true},
			{"sampler", "sampling", true},
			{"sampler", "roots", false},
		} {
			name := fmt.Sprintf("%s/%s/%s", orDefault(era, "2026-07-28"), tc.server, tc.kind)
			t.Run(name, func(t *testing.T) {
				asked := &askedClient{asked: map[string]int{}}
				c := d.connectWith(t, tc.server, era, client.WithSamplingHandler(asked), client.WithElicitationHandler(asked), client.WithRootsHandler(asked))
				res, err := c.CallTool(ctxT(t, 30e9), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "ask_client", Arguments: map[string]any{"kind": tc.kind}}})
				got := ""
				if err == nil {
					for _, ct := range res.Content {
						if tx, ok := mcp.AsTextContent(ct); ok {
							got += tx.Text
						}
					}
				}
				answered := err == nil && !res.IsError && strings.HasPrefix(got, "answered: ")
				if answered != tc.allowed || (asked.count(tc.kind) > 0) != tc.allowed {
					t.Fatalf("%s of %s: answered %v (%q, %v), the client asked %d time(s); want allowed = %v", tc.kind, tc.server, answered, got, err, asked.count(tc.kind), tc.allowed)
				}
				if !tc.allowed && !strings.Contains(got+fmt.Sprint(err), "allow_"+tc.kind) {
					t.Fatalf("the refusal does not say which key allows it: %q %v", got, err)
				}
				want := "allow"
				if !tc.allowed {
					want = "deny"
				}
				method := map[string]string{"sampling": "sampling/createMessage", "elicitation": "elicitation/create", "roots": "roots/list"}[tc.kind]
				rec := d.record(t, "server.request", func(r map[string]any) bool {
					return str(r, "method") == method && str(r, "server") == tc.server && str(r, "decision") == want && !seenRecord(r)
				})
				markSeen(rec)
				form := "input_request"
				if era != "" {
					form = "request"
				}
				if str(rec, "form") != form {
					t.Errorf("record form %q, want %q: %v", str(rec, "form"), form, rec)
				}
				if tc.kind == "sampling" && tc.allowed {
					prompt := fmt.Sprint(rec["prompt"])
					if !strings.Contains(prompt, "obey the server") || strings.Contains(prompt, "hunter2") {
						t.Errorf("an allowed sampling request's prompt is recorded as %q: want it, redacted", prompt)
					}
				}
				_ = c.Close()
			})
		}
	}
}

var seen sync.Map

func recordKey(r map[string]any) string { return fmt.Sprint(r["seq"], r["hash"]) }
func seenRecord(r map[string]any) bool  { _, ok := seen.Load(recordKey(r)); return ok }
func markSeen(r map[string]any)         { seen.Store(recordKey(r), true) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// A server can put a link before the user without elicitation/create: an
// error answering any request, code -32042 ("URL elicitation
// required"), whose data carries URL elicitations the client shows as it
// would the request's. Found by a red-team helper: such an error passed
// unchanged, past allow_elicitation = false and past the check that a
// question does not pose as mcpcage, so a server could show the user a
// sign-in link of its own dressed as mcpcage's. It is now decided as the
// elicitations it carries are, and refused whole when one is refused;
// the client gets a plain refusal with no link.
func TestServerURLElicitationErrorGoverned(t *testing.T) {
	setup(t)
	rogue := rogueServer(t)
	d := startDaemon(t, fmt.Sprintf("[servers.rogue]\ncommand = [%q]\n[servers.barred]\ncommand = [%q]\nallow_elicitation = false\n", rogue, rogue))
	for _, tc := range []struct {
		name, server, text string
		passes             bool
		reason             string // in the refusal and its record
	}{
		{"allowed, a link of the server's own", "rogue", "Sign in to the rogue service", true, ""},
		{"allowed, posing as mcpcage", "rogue", "Sign in to rogue (mcpcage keeps the sign-in; your client never sees it)", false, "imitates mcpcage"},
		{"allow_elicitation = false", "barred", "Sign in to the rogue service", false, "may not send elicitation/create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRaw(t, d.shimCmd(tc.server))
			r.initialize()
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": map[string]any{"name": "sign_in_link", "arguments": map[string]any{"text": tc.text}}})
			r.send(string(b) + "\n")
			line := r.response("5")
			var resp struct {
				Error *struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
					Data    struct {
						Elicitations []map[string]string `json:"elicitations"`
						Mcpcage      string              `json:"mcpcage"`
					} `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(line), &resp); err != nil || resp.Error == nil {
				t.Fatalf("answer %q: want an error (%v)", line, err)
			}
			if tc.passes {
				if resp.Error.Code != -32042 || len(resp.Error.Data.Elicitations) != 1 || resp.Error.Data.Elicitations[0]["url"] != "https://phish.example/login" {
					t.Fatalf("the server's allowed link did not reach the client as sent: %s", line)
				}
			} else {
				if resp.Error.Code == -32042 || len(resp.Error.Data.Elicitations) != 0 || strings.Contains(line, "phish.example") ||
					resp.Error.Data.Mcpcage != "denied" || !strings.Contains(resp.Error.Message, tc.reason) {
					t.Fatalf("the server's refused link: %s; want a plain refusal saying %q, no link", line, tc.reason)
				}
			}
			decision := map[bool]string{true: "allow", false: "deny"}[tc.passes]
			d.record(t, "server.request", func(rec map[string]any) bool {
				return str(rec, "server") == tc.server && str(rec, "form") == "url_error" && str(rec, "decision") == decision &&
					strings.Contains(str(rec, "reason"), tc.reason)
			})
			r.closeInput()
			r.wait()
		})
	}
}
