package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// TestUserServersLimited: a user stores at most MaxServersPerUser servers
// of MaxServerBytes each through `mcpcage server add`; the add past either
// is refused with a message naming the limit, and the user can replace a
// stored server or remove one to make room.
func TestUserServersLimited(t *testing.T) {
	uid, d := userDaemon(t)
	bin := filepath.Join(env.bin, "testserver")
	add := func(name string, args ...string) (string, error) {
		return d.cli(t, uid, append([]string{"server", "add", name}, append(args, "--", bin)...)...)
	}
	for i := range userservers.MaxServersPerUser {
		if out, err := add(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatalf("add %d: %v %s", i, err, out)
		}
	}
	want := fmt.Sprintf("the most one user may store is %d", userservers.MaxServersPerUser)
	if out, err := add("one-more"); err == nil || !strings.Contains(out, want) {
		t.Fatalf("add past the limit: %v %s (want %q)", err, out, want)
	}
	if out, err := add("s0", "--env", "A=b"); err != nil {
		t.Fatalf("replacing a stored server at the limit: %v %s", err, out)
	}
	if out, err := d.cli(t, uid, "server", "rm", "s1"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if out, err := add("one-more"); err != nil {
		t.Fatalf("add after a remove: %v %s", err, out)
	}

	big := "BIG=" + strings.Repeat("v", userservers.MaxServerBytes)
	want = fmt.Sprintf("one server may take at most %d", userservers.MaxServerBytes)
	if out, err := d.cli(t, uid, "server", "rm", "s2"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	if out, err := add("big", "--env", big); err == nil || !strings.Contains(out, want) {
		t.Fatalf("add of a definition over %d bytes: %v %s (want %q)", userservers.MaxServerBytes, err, out, want)
	}
	// The daemon logs a refusal before it answers.
	if log := d.log.String(); !strings.Contains(log, "user server refused") || !strings.Contains(log, "big") {
		t.Errorf("no log line of the refusal:\n%s", log)
	}
}

// TestUserServerChurnKeepsSeriesBounded: users name their own servers and
// add and remove them at will; their metrics all count under one server
// label, so `server add tN; run tN; server rm tN` leaves no series per
// name behind.
func TestUserServerChurnKeepsSeriesBounded(t *testing.T) {
	uid, d := userDaemon(t)
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	bin := filepath.Join(env.bin, "testserver")
	const passes = 3
	for i := range passes {
		name := fmt.Sprintf("churn%d", i)
		if out, err := d.cli(t, uid, "server", "add", name, "--", bin); err != nil {
			t.Fatalf("add %s: %v %s", name, err, out)
		}
		c := d.connectAs(t, name, uid)
		callText(t, c, "echo", map[string]any{"text": "x"})
		_ = c.Close()
		if out, err := d.cli(t, uid, "server", "rm", name); err != nil {
			t.Fatalf("rm %s: %v %s", name, err, out)
		}
	}
	body := scrape(t, st.Metrics)
	if lines := grepLines(body, `server="churn`); lines != "" {
		t.Errorf("series named after users' servers:\n%s", lines)
	}
	for _, series := range []string{
		`mcpcage_messages_total{direction="client_to_server",server="(user)"}`,
		`mcpcage_sessions_total{agent="unknown",server="(user)"}`,
	} {
		if got := metricValue(t, body, series); got < passes {
			t.Errorf("%s = %v, want at least %d (one per pass)\n%s", series, got, passes, grepLines(body, `server="`))
		}
	}
}
