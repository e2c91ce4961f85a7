package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// One message, several readings (issue: Security I, section 1). Each line
// below reached a denied tool on the landed tree with at least one of the
// three servers: the policy read one thing, the server executed another.
// Every one must now be refused before the server sees it, the denied
// tool must never run (the servers log every call they receive), and the
// audit log must say what was refused.
func TestParserDifferentialsRefused(t *testing.T) {
	setup(t)
	everything := requireEverything(t)
	for _, srv := range []struct {
		name, command, denied string
		text                  string // echo's argument
		logEnv                string // the server's call-log variable; "" when it has none
	}{
		{"mcpgo", fmt.Sprintf("[%q]", filepath.Join(env.bin, "testserver")), "env", "text", "TESTSERVER_TOOL_LOG"},
		{"python", fmt.Sprintf("[\"/usr/bin/python3\", %q]", filepath.Join(env.bin, "pyserver.py")), "secret", "text", "CALL_LOG"},
		{"everything", fmt.Sprintf("[%q, \"stdio\"]", everything), "get-env", "message", ""},
	} {
		t.Run(srv.name, func(t *testing.T) {
			work := t.TempDir()
			must(t, os.Chmod(work, 0o777), "chmod")
			conf := fmt.Sprintf("[servers.%s]\ncommand = %s\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n", srv.name, srv.command, work)
			if srv.logEnv != "" {
				conf += fmt.Sprintf("env = { %s = \"/work/calls.log\" }\n", srv.logEnv)
			}
			d := consentDaemon(t, conf)
			d.mustCLI(t, "grant", "--agent", "itest", "--server", srv.name, "--tool", "echo", "--when", "args."+srv.text+`.startsWith("ok")`)

			D := srv.denied
			text := func(s string) string {
				s = strings.ReplaceAll(s, "text", srv.text)
				return strings.ReplaceAll(s, "TEXTCASE", strings.ToUpper(srv.text[:1])+srv.text[1:])
			}
			attacks := []struct {
				class, line string
				id          string // the id the refusal answers; "null" when the id itself is unreadable; "" for none
			}{
				{"escaped params name", `{"jsonrpc":"2.0","id":101,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}},"p\u0061rams":{"name":"` + D + `"}}`, "101"},
				{"escaped id name", `{"jsonrpc":"2.0","\u0069d":102,"method":"tools/call","params":{"name":"` + D + `"}}`, "null"},
				{"id in another letter case", `{"jsonrpc":"2.0","ID":103,"method":"tools/call","params":{"name":"` + D + `"}}`, "null"},
				{"params in another letter case", `{"jsonrpc":"2.0","id":104,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}},"Params":{"name":"` + D + `"}}`, "104"},
				{"name in another letter case", `{"jsonrpc":"2.0","id":105,"method":"tools/call","params":{"name":"` + D + `","Name":"echo","arguments":{"text":"ok"}}}`, "105"},
				{"duplicate name", `{"jsonrpc":"2.0","id":106,"method":"tools/call","params":{"name":"` + D + `","name":"echo","arguments":{"text":"ok"}}}`, "106"},
				{"decided method as a notification", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"` + D + `"}}`, ""},
				{"argument a condition reads, in another letter case", `{"jsonrpc":"2.0","id":108,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok","TEXTCASE":"evil"}}}`, "108"},
				{"params spelled with a long s (Unicode folding)", `{"jsonrpc":"2.0","id":109,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}},"param\u017f":{"name":"` + D + `"}}`, "109"},
				{"a carriage return hides a second message (universal newlines)", "{\"jsonrpc\":\"2.0\",\"id\":111,\"method\":\"ping\",\"params\":\r{\"jsonrpc\":\"2.0\",\"id\":111,\"method\":\"tools/call\",\"params\":{\"name\":\"" + D + "\"}}\r}", "null"},
				{"escaped method name in params", `{"jsonrpc":"2.0","id":110,"method":"tools/call","params":{"n\u0061me":"` + D + `","arguments":{"text":"ok"}}}`, "110"},
				// 2^53+1 is 2^53 to a server that reads doubles: its answer
				// to one request would be taken for another's.
				{"an id beyond 2^53", `{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}}}`, "9007199254740993"},
				{"an id with an exponent", `{"jsonrpc":"2.0","id":1e2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}}}`, "1e2"},
			}
			r := startRaw(t, d.shimCmd(srv.name))
			r.initialize()
			for _, a := range attacks {
				r.send(text(a.line) + "\n")
			}
			// The marker: an allowed call sent after every attack. The
			// relay answers refusals in order, before it.
			r.send(text(`{"jsonrpc":"2.0","id":200,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok-marker"}}}`) + "\n")
			answers := map[string][]string{}
			for {
				line := r.next()
				var m struct {
					ID     json.RawMessage `json:"id"`
					Result json.RawMessage `json:"result"`
					Error  *struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("answer %s: %v", line, err)
				}
				if len(m.ID) == 0 {
					continue // a notification from the server
				}
				if string(m.ID) == "200" {
					if !strings.Contains(line, "ok-marker") {
						t.Fatalf("the allowed marker call failed: %s", line)
					}
					break
				}
				if m.Error == nil || m.Error.Code != -32600 {
					t.Errorf("id %s: want a -32600 refusal, got %s", m.ID, line)
					continue
				}
				answers[string(m.ID)] = append(answers[string(m.ID)], m.Error.Message)
			}
			for _, a := range attacks {
				switch {
				case a.id == "":
				case a.id == "null":
					if len(answers["null"]) == 0 {
						t.Errorf("%s: no refusal", a.class)
					} else {
						answers["null"] = answers["null"][1:]
					}
				case len(answers[a.id]) != 1:
					t.Errorf("%s: %d refusals for id %s, want 1", a.class, len(answers[a.id]), a.id)
				case !strings.Contains(answers[a.id][0], "ambiguous"):
					t.Errorf("%s: the refusal does not say why: %q", a.class, answers[a.id][0])
				}
			}
			r.closeInput()
			r.wait()

			// The server ran the marker and nothing else.
			if srv.logEnv != "" {
				calls, err := os.ReadFile(filepath.Join(work, "calls.log"))
				must(t, err, "server call log")
				if string(calls) != "call echo\n" {
					t.Errorf("the server received calls besides the marker:\n%s", calls)
				}
			} else if strings.Contains(d.log.String(), "request the client never sent") {
				t.Errorf("the server answered a request the relay never forwarded:\n%s", d.log.String())
			}

			// Every refusal is on the record, with its reason; no call of
			// the denied tool is.
			var refused []string
			testenv.WaitFor(t, fmt.Sprintf("%d message.refused records", len(attacks)), 20*time.Second, func() (bool, string) {
				refused = nil
				for _, rec := range d.auditRecords(t) {
					if rec["type"] == "message.refused" && rec["server"] == srv.name {
						refused = append(refused, fmt.Sprint(rec["reason"]))
					}
					if rec["type"] == "tool.call" && rec["tool"] == D {
						t.Fatalf("the audit log records a call of the denied tool: %v", rec)
					}
				}
				return len(refused) >= len(attacks), fmt.Sprintf("%d records: %q", len(refused), refused)
			})
			for _, reason := range refused {
				if !strings.Contains(reason, "ambiguous") && !strings.Contains(reason, "notification") {
					t.Errorf("refusal record without a reason: %q", reason)
				}
			}
		})
	}
}
