package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// taintDaemon runs mcpcaged with crm-db (testserver, label
// "confidential", with crmEnv, a TOML inline table's members) and two
// external servers whose calls are logged in dir: hubspot under a deny
// rule from confidential, hubspot-carries under the same rule with when =
// "carries". This test binary is agent itest, granted their tools and
// crm-db's resources.
func taintDaemon(t *testing.T, crmEnv string) (d *daemon, dir string) {
	t.Helper()
	setup(t)
	dir = t.TempDir()
	must(t, os.Chmod(dir, 0o777), "chmod")
	self, err := os.Executable()
	must(t, err, "executable")
	ts := filepath.Join(env.bin, "testserver")
	var b strings.Builder
	fmt.Fprintf(&b, "[daemon]\ndefault_decision = \"deny\"\n[agents.itest]\nexe = [%q]\n", self)
	fmt.Fprintf(&b, "[servers.crm-db]\ncommand = [%q]\nlabels = [\"confidential\"]\nenv = { %s }\n", ts, crmEnv)
	for _, rule := range []struct{ name, when string }{{"hubspot", "tainted"}, {"hubspot-carries", "carries"}} {
		fmt.Fprintf(&b, "[servers.%s]\ncommand = [%q]\nlabels = [%q]\nenv = { TESTSERVER_CALL_LOG = \"/work/%s.log\" }\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n",
			rule.name, ts, rule.name, rule.name, dir)
		fmt.Fprintf(&b, "[[flow]]\nfrom = \"confidential\"\nto = %q\naction = \"deny\"\nwhen = %q\n", rule.name, rule.when)
	}
	d = startDaemon(t, b.String())
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "crm-db", "--resource", "*")
	for _, srv := range []string{"hubspot", "hubspot-carries"} {
		d.mustCLI(t, "grant", "--agent", "itest", "--server", srv, "--tool", "*")
	}
	return d, dir
}

// refusedFlow calls echo of srv with text and wants the deny rule's
// refusal, naming crm-db; the server never got the text.
func refusedFlow(t *testing.T, dir, srv string, c *mcpClient, text string) {
	t.Helper()
	got, isErr := callText(t, c, "echo", map[string]any{"text": text})
	if !isErr || !strings.Contains(got, "crm-db") || !strings.Contains(got, "confidential") {
		t.Fatalf("%s: want a refusal naming crm-db, got %q (isError %v)", srv, got, isErr)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, srv+".log")); strings.Contains(string(log), text) {
		t.Fatalf("%s: the refused call reached the server: %q", srv, log)
	}
}

// TestResourceListTaints: a labelled server's resources/list is its data
// (the names of its files and records), shown to the agent like a
// result. It taints the run, and what it holds is fingerprinted, so a
// flow rule stops the names on their way to an external server (found
// by a red-team helper: lists did not taint, and the customer record a
// resource was named after reached the external server).
func TestResourceListTaints(t *testing.T) {
	d, dir := taintDaemon(t, fmt.Sprintf("TESTSERVER_RESOURCE_NAME = %q", flowRecord))
	crm := d.connect(t, "crm-db", mcp.ProtocolVersion20251125)
	hubspot := d.connect(t, "hubspot", mcp.ProtocolVersion20251125)
	carries := d.connect(t, "hubspot-carries", mcp.ProtocolVersion20251125)

	res, err := crm.ListResources(ctxT(t, 30*time.Second), mcp.ListResourcesRequest{})
	must(t, err, "list crm-db's resources")
	if len(res.Resources) != 1 || res.Resources[0].Name != flowRecord {
		t.Fatalf("crm-db's resources: %+v", res.Resources)
	}
	// Only the token crm-db listed: no detector knows it, its
	// fingerprint does.
	refusedFlow(t, dir, "hubspot", hubspot, "note: portal token "+flowToken)
	refusedFlow(t, dir, "hubspot-carries", carries, "note: portal token "+flowToken)
	taint := d.record(t, "flow.taint", func(r map[string]any) bool { return str(r, "server") == "crm-db" && str(r, "label") == "confidential" })
	if str(taint, "kind") != "resource_list" {
		t.Fatalf("flow.taint: %v", taint)
	}
}

// TestLabelledServersWordsTaint: what a labelled server says beside its
// results (a log notification, here) is its data in its own words, and
// taints the run as a result does, though it holds no token and nothing
// a detector knows (found by a red-team helper: only a notification with
// a high-entropy token or a finding was recorded, so plain words of a
// confidential server went on to an external server).
func TestLabelledServersWordsTaint(t *testing.T) {
	const words = "customer Jane Roe moved to 12 Elm Street, Springfield"
	d, dir := taintDaemon(t, fmt.Sprintf("TESTSERVER_LOG_ON_LIST = %q", words))
	crm := d.connect(t, "crm-db", mcp.ProtocolVersion20251125)
	hubspot := d.connect(t, "hubspot", mcp.ProtocolVersion20251125)
	logged := make(chan string, 4)
	crm.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == "notifications/message" {
			data, _ := n.Params.AdditionalFields["data"].(string)
			logged <- data
		}
	})
	_, err := crm.ListTools(ctxT(t, 30*time.Second), mcp.ListToolsRequest{})
	must(t, err, "list crm-db's tools")
	select {
	case got := <-logged:
		if got != words {
			t.Fatalf("crm-db's log message: %q", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("crm-db's log message did not reach the client")
	}
	refusedFlow(t, dir, "hubspot", hubspot, "Jane Roe moved to 12 Elm Street")
	taint := d.record(t, "flow.taint", func(r map[string]any) bool { return str(r, "server") == "crm-db" && str(r, "label") == "confidential" })
	if str(taint, "kind") != "notification" {
		t.Fatalf("flow.taint: %v", taint)
	}
}
