package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestServerBatchesBesideClientBursts runs, against the real test server
// in both audit sync modes, what the relay's per-direction batch state is
// for: the server sends JSON-RPC batches (protocol 2025-03-26) while the
// client sends bursts of calls and batches of its own. Every call must
// be answered (a relay loop waiting on a hold only the other loop could
// release stalls the session, and the rawSession fails after 60 s without
// output), every server batch must reach the client whole, and the log
// must hold each call's record exactly once, in the order sent.
//
// The stall this guards against was a race of a few instructions between
// the two relay loops; the relay's unit test forces it
// (TestRelayBurstBesideServerBatches). This test runs the same traffic
// end to end, where it is a liveness and completeness check.
func TestServerBatchesBesideClientBursts(t *testing.T) {
	setup(t)
	for _, mode := range []string{"batch", "always"} {
		t.Run(mode, func(t *testing.T) {
			d := startDaemon(t, fmt.Sprintf("[daemon]\ndefault_decision = \"allow\"\naudit_sync = %q\n", mode))
			r := startRaw(t, d.shimCmd("test"))
			r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
			r.response(`"init"`)
			r.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")

			const rounds, perBurst, perBatch = 12, 16, 4
			var sent []string
			batchesSeen := 0
			for round := 0; round < rounds; round++ {
				var b strings.Builder
				want := map[string]string{} // id -> what its answer must contain
				for i := 0; i < perBurst; i++ {
					id := fmt.Sprintf("r%d-%d", round, i)
					if i%4 == 0 {
						// The server answers this one after a batch of perBatch
						// notifications.
						fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%q,"method":"tools/call","params":{"name":"notify_batch","arguments":{"count":%d,"tag":%q}}}`+"\n", id, perBatch, id)
						want[id] = fmt.Sprintf("sent %d", perBatch)
					} else {
						fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%q,"method":"tools/call","params":{"name":"echo","arguments":{"text":%q}}}`+"\n", id, id)
						want[id] = id
					}
					sent = append(sent, id)
				}
				// A client batch of two calls after the burst.
				b.WriteString("[")
				for i := 0; i < 2; i++ {
					id := fmt.Sprintf("r%d-batch%d", round, i)
					if i > 0 {
						b.WriteString(",")
					}
					fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%q,"method":"tools/call","params":{"name":"echo","arguments":{"text":%q}}}`, id, id)
					want[id] = id
					sent = append(sent, id)
				}
				b.WriteString("]\n")
				r.send(b.String())

				for len(want) > 0 {
					line := r.next()
					for _, m := range batchElements(t, line) {
						var env struct {
							ID     string          `json:"id"`
							Method string          `json:"method"`
							Result json.RawMessage `json:"result"`
							Error  json.RawMessage `json:"error"`
						}
						if err := json.Unmarshal(m, &env); err != nil {
							t.Fatalf("%s: not a JSON-RPC message: %v: %.300s", mode, err, m)
						}
						switch {
						case env.Method == "notifications/message":
							continue
						case env.ID == "":
							t.Fatalf("%s: unexpected message: %.300s", mode, m)
						}
						w, ok := want[env.ID]
						if !ok {
							t.Fatalf("%s: an answer to %q, not asked or answered twice: %.300s", mode, env.ID, m)
						}
						if env.Error != nil || !strings.Contains(string(env.Result), w) {
							t.Fatalf("%s: the answer to %s does not hold %q: %.300s", mode, env.ID, w, m)
						}
						delete(want, env.ID)
					}
					if strings.HasPrefix(strings.TrimSpace(line), "[") && strings.Contains(line, "notifications/message") {
						if n := len(batchElements(t, line)); n != perBatch {
							t.Fatalf("%s: a server batch reached the client with %d notifications, want %d: %.300s", mode, n, perBatch, line)
						}
						batchesSeen++
					}
				}
			}
			if want := rounds * perBurst / 4; batchesSeen != want {
				t.Fatalf("%s: the client got %d server batches, want %d", mode, batchesSeen, want)
			}

			var got []string
			for _, rec := range d.auditRecords(t) {
				if rec["type"] == "tool.call" {
					got = append(got, fmt.Sprint(rec["request_id"]))
				}
			}
			if strings.Join(got, " ") != strings.Join(sent, " ") {
				t.Fatalf("%s: tool.call records in the log:\n%s\nwant each call once, in the order sent:\n%s", mode, strings.Join(got, " "), strings.Join(sent, " "))
			}
		})
	}
}

// batchElements is a line's messages: the elements of a batch, or the
// line itself.
func batchElements(t *testing.T, line string) []json.RawMessage {
	t.Helper()
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "[") {
		return []json.RawMessage{json.RawMessage(line)}
	}
	var batch []json.RawMessage
	if err := json.Unmarshal([]byte(line), &batch); err != nil {
		t.Fatalf("a batch line that does not decode: %v: %.300s", err, line)
	}
	return batch
}
