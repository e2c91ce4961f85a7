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

// TestResourceListTaints: a labelled server's resources/list is its data
// (the names of its files and records), shown to the agent like a
// result. It taints the run, and what it holds is fingerprinted, so a
// flow rule stops the names on their way to an external server (found
// by a red-team helper: lists did not taint, and the customer record a
// resource was named after reached the external server).
func TestResourceListTaints(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777), "chmod")
	self, err := os.Executable()
	must(t, err, "executable")
	ts := filepath.Join(env.bin, "testserver")
	var b strings.Builder
	fmt.Fprintf(&b, "[daemon]\ndefault_decision = \"deny\"\n[agents.itest]\nexe = [%q]\n", self)
	fmt.Fprintf(&b, "[servers.crm-db]\ncommand = [%q]\nlabels = [\"confidential\"]\nenv = { TESTSERVER_RESOURCE_NAME = %q }\n", ts, flowRecord)
	for _, rule := range []struct{ name, when string }{{"hubspot", "tainted"}, {"hubspot-carries", "carries"}} {
		fmt.Fprintf(&b, "[servers.%s]\ncommand = [%q]\nlabels = [%q]\nenv = { TESTSERVER_CALL_LOG = \"/work/%s.log\" }\nmounts = [{ source = %q, target = \"/work\", readonly = false }]\n",
			rule.name, ts, rule.name, rule.name, dir)
		fmt.Fprintf(&b, "[[flow]]\nfrom = \"confidential\"\nto = %q\naction = \"deny\"\nwhen = %q\n", rule.name, rule.when)
	}
	d := startDaemon(t, b.String())
	d.mustCLI(t, "grant", "--agent", "itest", "--server", "crm-db", "--resource", "*")
	for _, srv := range []string{"hubspot", "hubspot-carries"} {
		d.mustCLI(t, "grant", "--agent", "itest", "--server", srv, "--tool", "*")
	}
	v := mcp.ProtocolVersion20251125
	crm := d.connect(t, "crm-db", v)
	hubspot := d.connect(t, "hubspot", v)
	carries := d.connect(t, "hubspot-carries", v)

	res, err := crm.ListResources(ctxT(t, 30*time.Second), mcp.ListResourcesRequest{})
	must(t, err, "list crm-db's resources")
	if len(res.Resources) != 1 || res.Resources[0].Name != flowRecord {
		t.Fatalf("crm-db's resources: %+v", res.Resources)
	}
	// Only the token crm-db listed: no detector knows it, its
	// fingerprint does.
	for _, c := range []struct {
		srv    string
		client *mcpClient
	}{{"hubspot", hubspot}, {"hubspot-carries", carries}} {
		text, isErr := callText(t, c.client, "echo", map[string]any{"text": "note: portal token " + flowToken})
		if !isErr || !strings.Contains(text, "crm-db") || !strings.Contains(text, "confidential") {
			t.Fatalf("%s: want a refusal naming crm-db, got %q (isError %v)", c.srv, text, isErr)
		}
		if log, _ := os.ReadFile(filepath.Join(dir, c.srv+".log")); strings.Contains(string(log), flowToken) {
			t.Fatalf("%s: the refused call reached the server: %q", c.srv, log)
		}
	}
	taint := d.record(t, "flow.taint", func(r map[string]any) bool { return str(r, "server") == "crm-db" && str(r, "label") == "confidential" })
	if str(taint, "kind") != "resource_list" {
		t.Fatalf("flow.taint: %v", taint)
	}
}
