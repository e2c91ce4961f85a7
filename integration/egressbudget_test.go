package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The kernel's egress tries are shared by every session of every user,
// and nothing bounded one user's part: a user's servers (long egress
// lists, names answering with many addresses, many sessions) could fill
// them, and every other user's host-network sessions then reached
// nothing (found by a red-team helper). Now one user's sessions hold at
// most egress_entries_per_user entries together: the session that would
// pass it is refused with what to do, another user's sessions are not
// affected, and the room comes back when a session ends.
func TestEgressBudgetPerUser(t *testing.T) {
	setup(t)
	uid, _ := testUser(t)
	service := listenHTTP(t, "127.0.0.2:0")
	_, port, _ := net.SplitHostPort(service)
	// 30 hosts: about 32 IPv4 entries a session with the built-in DNS
	// rules, so one session fits a budget of 48 and two do not.
	var list []string
	for i := 2; i < 32; i++ {
		list = append(list, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.%d:%s", i, port)))
	}
	d := startDaemon(t, fmt.Sprintf("[daemon]\negress_entries_per_user = 48\n\n[servers.wide]\ncommand = [%q]\nnetwork = \"host\"\negress = [%s]\n",
		filepath.Join(env.bin, "testserver"), strings.Join(list, ", ")))
	get := func(c *mcpClient) string {
		got, _ := callText(t, c, "http_get", map[string]any{"url": "http://" + service + "/"})
		return got
	}
	d.openToOtherUsers(t)
	first := d.connectAs(t, "wide", uid)
	if got := get(first); !strings.Contains(got, "reached") {
		t.Fatalf("the user's first session: GET %s: %q", service, got)
	}
	// The user's second session would take the user past the budget.
	d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	out, err := d.shimCmd("wide").CombinedOutput()
	d.shimCred = nil
	if err == nil || !strings.Contains(string(out), "egress_entries_per_user") || !strings.Contains(string(out), fmt.Sprintf("sessions of uid %d would then hold", uid)) {
		t.Fatalf("a second session of the user over the budget: %v, %s", err, out)
	}
	// Another user (root here) has a budget of its own.
	other := d.connect(t, "wide", "")
	if got := get(other); !strings.Contains(got, "reached") {
		t.Fatalf("another user's session while the first is at its budget: GET %s: %q", service, got)
	}
	// The first session's end gives its entries back.
	must(t, first.Close(), "close the user's first session")
	testenv.WaitFor(t, "the user's egress entries to come back", 30*time.Second, func() (bool, string) {
		// stdin from /dev/null: a session that starts and ends at once.
		d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		out, err := d.shimCmd("wide").CombinedOutput()
		d.shimCred = nil
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	})
	second := d.connectAs(t, "wide", uid)
	if got := get(second); !strings.Contains(got, "reached") {
		t.Fatalf("the user's session once the first ended: GET %s: %q", service, got)
	}
}
