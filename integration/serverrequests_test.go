package integration

import (
	"context"
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
