package integration

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// subordinateUser creates a user for this test alone (a system user: no
// home, no subordinate ids of useradd's choosing) that owns count (at
// most 16) subordinate uids from start (usermod --add-subuids, in
// /etc/subuid); both are removed when the test ends. Name and range are
// this process's own (by pid), so that runs at once on the machine never
// share them.
func subordinateUser(t *testing.T, count uint32) (u *user.User, start uint32) {
	t.Helper()
	if count > 16 {
		t.Fatalf("subordinateUser: %d subordinate uids, at most 16", count)
	}
	name := fmt.Sprintf("mcpcage-sub%d", os.Getpid())
	start = 2_000_000_000 + uint32(os.Getpid())*16 // pid_max is at most 2^22
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v %s", name, err, out)
		}
	})
	ids := fmt.Sprintf("%d-%d", start, start+count-1)
	if out, err := exec.Command("usermod", "--add-subuids", ids, name).CombinedOutput(); err != nil {
		t.Fatalf("usermod --add-subuids %s %s: %v %s", ids, name, err, out)
	}
	t.Cleanup(func() { // before userdel
		if out, err := exec.Command("usermod", "--del-subuids", ids, name).CombinedOutput(); err != nil {
			t.Errorf("usermod --del-subuids %s %s: %v %s", ids, name, err, out)
		}
	})
	u, err := user.Lookup(name)
	must(t, err, "look up %s", name)
	return u, start
}

// TestSubordinateUIDsCountAsTheirOwner: a local user with subordinate
// uids (/etc/subuid) acts as any of them through a user namespace of its
// own (newuidmap, here through unshare --map-users), and the daemon took
// each for a user: every per-user bound multiplied by 65,536 (found by a
// red-team helper: 330 uids holding 32 idle connections each kept the
// daemon at its descriptor limit, and other users' shims were refused; a
// user stored 20 times its secrets' quota). Now a subordinate uid counts
// toward its owner's bounds, and keeps no secrets of its own; another
// user is served meanwhile.
func TestSubordinateUIDsCountAsTheirOwner(t *testing.T) {
	setup(t)
	_, err := exec.LookPath("newuidmap")
	testenv.Require(t, err == nil, "newuidmap (package uidmap; scripts/deps.sh installs it)")
	const subs = 16
	owner, start := subordinateUser(t, subs)
	ownerUID, _ := strconv.Atoi(owner.Uid)
	ownerGID, _ := strconv.Atoi(owner.Gid)
	otherUID, _ := testUser(t)
	d := startDaemon(t, "")
	d.openToOtherUsers(t)
	// The owner's own client (mcpcage refuses a socket root does not
	// serve, and root is unmapped in the owner's namespace).
	raw := testdataBin(t, "rawclient")

	// asSub runs rawclient as the owner's k-th subordinate uid, as the
	// owner would: in a user namespace it maps its subordinate uids into.
	asSub := func(k int, args ...string) *exec.Cmd {
		cmd := exec.Command("unshare", append([]string{"--user", fmt.Sprintf("--map-users=%d,0,%d", start, subs), "--setuid", strconv.Itoa(k), "--", raw}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(ownerUID), Gid: uint32(ownerGID)}, Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	// The attack: four subordinate uids hold 8 connections each without
	// a request, 32 together, as many as one user may.
	var stop []func()
	for k := range 4 {
		holder := asSub(k, "hold", d.socket, "8")
		stdin, err := holder.StdinPipe()
		must(t, err, "stdin")
		out := &syncBuffer{}
		holder.Stdout, holder.Stderr = out, out
		must(t, holder.Start(), "start rawclient as subordinate uid %d", start+uint32(k))
		stop = append(stop, func() { _ = stdin.Close(); _ = holder.Wait() })
		t.Cleanup(stop[k])
		testenv.WaitFor(t, fmt.Sprintf("subordinate uid %d to hold 8 connections", start+uint32(k)), 20*time.Second, func() (bool, string) {
			return strings.Contains(out.String(), "open 8"), out.String()
		})
	}
	refused := func(out string, err error) bool {
		return err != nil && strings.Contains(out, "32 connections that have not sent their request open, the most one user may")
	}
	// A fifth subordinate uid is refused: it counts as its owner.
	fifth := start + 4
	testenv.WaitFor(t, "a fifth subordinate uid refused for its owner's connections", 20*time.Second, func() (bool, string) {
		out, err := asSub(4, "ask", d.socket, string(api.OpStatus)).CombinedOutput()
		want := fmt.Sprintf("uid %d counts as its owner %s (uid %d, /etc/subuid)", fifth, owner.Username, ownerUID)
		return refused(string(out), err) && strings.Contains(string(out), want), fmt.Sprintf("%v: %s", err, out)
	})
	// So is the owner itself.
	testenv.WaitFor(t, "the owner refused", 20*time.Second, func() (bool, string) {
		out, err := d.cli(t, ownerUID, "status")
		return refused(out, err), fmt.Sprintf("%v: %s", err, out)
	})
	d.waitLog("charged_to=" + owner.Username)
	// Another user is served meanwhile, and so is root.
	for _, uid := range []int{otherUID, 0} {
		if out, err := d.cli(t, uid, "status"); err != nil {
			t.Fatalf("uid %d's status while the owner's subordinate uids hold their connections: %v %s", uid, err, out)
		}
	}

	// A subordinate uid keeps no secrets on root's disk: its owner would
	// have 65,536 stores. The refusal says whose uid it is and what to do.
	for _, s := range stop {
		s() // their connections close: the owner's slots come free
	}
	var out string
	testenv.WaitFor(t, "a secret set by a subordinate uid answered, not refused as busy", 20*time.Second, func() (bool, string) {
		cmd := asSub(5, "ask", d.socket, string(api.OpSecretSet), "token")
		cmd.Stdin = strings.NewReader("a-subordinate-uid-s-value\n")
		var b []byte
		b, err = cmd.CombinedOutput()
		out = string(b)
		return !refused(out, err), fmt.Sprintf("%v: %s", err, out)
	})
	want := fmt.Sprintf("uid %d is a subordinate uid of %s (/etc/subuid)", start+5, owner.Username)
	if err == nil || !strings.Contains(out, want) || !strings.Contains(out, "as "+owner.Username) {
		t.Fatalf("secret set by subordinate uid %d: %v %s; want a refusal with %q that says to set it as %s", start+5, err, out, want, owner.Username)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "state", "user-secrets", strconv.FormatUint(uint64(start+5), 10))); !os.IsNotExist(err) {
		t.Fatalf("a store was made for subordinate uid %d: %v", start+5, err)
	}
	// Nor consents of its own: they are kept by name (uid:N), each
	// name bounded on its own.
	b, err := asSub(6, "grant", d.socket, "test", "echo").CombinedOutput()
	if want := fmt.Sprintf("uid %d is a subordinate uid of %s (/etc/subuid): mcpcaged keeps consents for accounts", start+6, owner.Username); err == nil || !strings.Contains(string(b), want) {
		t.Fatalf("a grant by subordinate uid %d: %v %s; want a refusal with %q", start+6, err, b, want)
	}
	if out, err := d.cli(t, 0, "consents", "--all"); err != nil || strings.Contains(out, fmt.Sprintf("uid:%d", start+6)) {
		t.Fatalf("consents after the refused grant: %v %s", err, out)
	}
}
