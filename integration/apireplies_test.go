package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestUnreadRepliesAreBounded: a local user who sends requests and never
// reads the answers held, per connection, a goroutine, a descriptor and
// the whole answer in the daemon, for good and without a bound: 40 such
// connections asking for a large list of consents took 2 GB of root's
// daemon (found by a red-team helper). Now one user has at most 16
// requests whose answers are not read, each answer is dropped once its
// client has not read it for 30 s, and other users are served meanwhile.
func TestUnreadRepliesAreBounded(t *testing.T) {
	uid, d := userDaemon(t)
	// A large answer: consents of the user's own, 16 KiB of patterns each.
	patterns := make([]string, 0, 16)
	for i := range 16 {
		patterns = append(patterns, fmt.Sprintf("%04d%s", i, strings.Repeat("p", 1000)))
	}
	for range 40 {
		args := []string{"grant", "--agent", "exe:/usr/bin/true", "--server", "test"}
		for _, p := range patterns {
			args = append(args, "--tool", p)
		}
		if out, err := d.cli(t, uid, args...); err != nil {
			t.Fatalf("grant as the user: %v %s", err, out)
		}
	}
	// 16 requests whose answers the user's client never reads.
	holder := exec.Command(testdataBin(t, "unreadclient"), d.socket, string(api.OpConsents), "16")
	holder.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	stdin, err := holder.StdinPipe()
	must(t, err, "stdin")
	out := &syncBuffer{}
	holder.Stdout, holder.Stderr = out, out
	must(t, holder.Start(), "start unreadclient")
	defer func() { _ = stdin.Close(); _ = holder.Wait() }()
	testenv.WaitFor(t, "16 requests sent", 30*time.Second, func() (bool, string) {
		return strings.Contains(out.String(), "sent 16"), out.String()
	})
	// A 17th is refused at once, saying why. The daemon takes requests
	// one by one: the refusal comes once all 16 are being answered.
	testenv.WaitFor(t, "a 17th request refused", 30*time.Second, func() (bool, string) {
		got, err := d.cli(t, uid, "consents")
		return err != nil && strings.Contains(got, "requests whose answers are not yet read"), fmt.Sprintf("%v: %.200s", err, got)
	})
	// Another user is served meanwhile.
	if got, err := d.cli(t, 0, "status"); err != nil {
		t.Fatalf("root's status while the user's answers wait: %v %s", err, got)
	}
	// Unread answers are dropped after 30 s: the user is served again.
	testenv.WaitFor(t, "the user's unread answers to be dropped", 90*time.Second, func() (bool, string) {
		got, err := d.cli(t, uid, "consents")
		return err == nil, fmt.Sprintf("%v: %.200s", err, got)
	})
}

// TestUserGrantsAreBounded: a user's grants are kept on root's disk, so
// one grant is bounded (30 grants of 9000 patterns each took 34 MB in 7 s:
// found by a red-team helper); the refusal says what to do.
func TestUserGrantsAreBounded(t *testing.T) {
	uid, d := userDaemon(t)
	args := []string{"grant", "--agent", "exe:/usr/bin/true", "--server", "test"}
	for i := range 257 {
		args = append(args, "--tool", fmt.Sprintf("tool_%d", i))
	}
	out, err := d.cli(t, uid, args...)
	if err == nil || !strings.Contains(out, "257 patterns, at most 256") || !strings.Contains(out, "wider patterns") {
		t.Fatalf("a grant of 257 patterns: %v %s", err, out)
	}
	if out, err := d.cli(t, uid, args[:len(args)-2]...); err != nil {
		t.Fatalf("a grant of 256 patterns: %v %s", err, out)
	}
}
