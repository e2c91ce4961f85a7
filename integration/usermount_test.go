package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// namedUser returns a non-root user, creating it (uid = gid) once.
func namedUser(t *testing.T, name string, uid int) (int, string) {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command("useradd", "--create-home", "--uid", strconv.Itoa(uid), "--user-group", name).CombinedOutput()
		if _, lerr := user.Lookup(name); err != nil && lerr != nil { // another run may have just added it
			t.Fatalf("useradd %s: %v %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	must(t, err, "lookup %s", name)
	id, _ := strconv.Atoi(u.Uid)
	if gid, _ := strconv.Atoi(u.Gid); gid != id {
		t.Fatalf("user %s has gid %d, want %d (= uid)", name, gid, id)
	}
	return id, u.HomeDir
}

// userFixture is two users, a secret of root's and one of user 1's
// (0644 files in 0700 directories), and a daemon both users can reach.
type userFixture struct {
	d                *daemon
	uid2             int
	home1            string
	home2            string // this fixture's directory in user 2's home
	secretDir        string // root's, 0700
	notesDir         string // user 1's, in their 0700 home
	token, notesText string
}

func newUserFixture(t *testing.T) *userFixture {
	t.Helper()
	_, home1 := testUser(t)
	uid2, home2 := namedUser(t, "mcpcage-itest2", 1743)
	// The users are shared by every run on the machine: each fixture
	// works in a directory of its own in user 2's home.
	run := filepath.Join(home2, fmt.Sprintf("run-%d-%d", os.Getpid(), time.Now().UnixNano()))
	must(t, os.Mkdir(run, 0o755), "mkdir %s", run)
	must(t, os.Chown(run, uid2, uid2), "chown %s", run)
	t.Cleanup(func() { _ = os.RemoveAll(run) })
	f := &userFixture{uid2: uid2, home1: home1, home2: run}
	f.d = startDaemon(t, "")
	for _, p := range []string{env.work, f.d.dir} {
		must(t, os.Chmod(p, 0o755), "open %s to the test users", p)
	}
	must(t, os.Chmod(f.d.socket, 0o666), "open the socket to the test users")

	n := time.Now().UnixNano()
	f.token = fmt.Sprintf("root-flag-%d", n)
	f.secretDir = fmt.Sprintf("/root/mcpcage-itest-secret-%d", n)
	must(t, os.Mkdir(f.secretDir, 0o700), "mkdir secret")
	t.Cleanup(func() { _ = os.RemoveAll(f.secretDir) })
	must(t, os.WriteFile(filepath.Join(f.secretDir, "flag.txt"), []byte(f.token), 0o644), "write flag")

	must(t, os.Chmod(home1, 0o700), "close user 1's home")
	f.notesText = fmt.Sprintf("user1-notes-%d", n)
	f.notesDir = filepath.Join(home1, fmt.Sprintf("notes-%d", n))
	must(t, os.MkdirAll(f.notesDir, 0o755), "mkdir notes")
	must(t, os.WriteFile(filepath.Join(f.notesDir, "notes.txt"), []byte(f.notesText), 0o644), "write notes")
	t.Cleanup(func() { _ = os.RemoveAll(f.notesDir) })
	return f
}

// own makes a directory of user 2's with ok.txt in it.
func (f *userFixture) own(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(f.home2, name)
	must(t, os.RemoveAll(dir), "remove %s", dir)
	must(t, os.Mkdir(dir, 0o755), "mkdir %s", dir)
	must(t, os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("ok"), 0o644), "write ok.txt")
	for _, p := range []string{dir, filepath.Join(dir, "ok.txt")} {
		must(t, os.Chown(p, f.uid2, f.uid2), "chown %s", p)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// symlink makes a symlink of user 2's.
func (f *userFixture) symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Remove(link); !errors.Is(err, fs.ErrNotExist) {
		must(t, err, "remove %s", link)
	}
	must(t, os.Symlink(target, link), "symlink %s", link)
	must(t, os.Lchown(link, f.uid2, f.uid2), "lchown %s", link)
	t.Cleanup(func() { _ = os.Remove(link) })
}

func (f *userFixture) add(t *testing.T, name, mount string) (string, error) {
	t.Helper()
	return f.d.cli(t, f.uid2, "server", "add", name, "--mount", mount, "--", filepath.Join(env.bin, "testserver"))
}

// launch starts a session of user 2's server name: a live session, or
// the shim's error output when the launch was refused.
func (f *userFixture) launch(t *testing.T, name string) (*rawSession, string) {
	t.Helper()
	cmd := f.d.shimCmd(name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(f.uid2), Gid: uint32(f.uid2)}}
	r := startRaw(t, cmd)
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	select {
	case _, ok := <-r.lines:
		if !ok {
			if code := r.wait(); code == 0 {
				t.Fatalf("shim exited 0 without answering")
			}
			return nil, r.stderr.String()
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no answer from shim in 60s; stderr:\n%s", r.stderr.String())
	}
	r.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
	return r, ""
}

var rawIDs atomic.Int64

// call runs a tool in a raw session and returns its text and isError.
func (r *rawSession) call(tool string, args map[string]any) (string, bool) {
	r.t.Helper()
	id := rawIDs.Add(1)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": map[string]any{"name": tool, "arguments": args}})
	r.send(string(b) + "\n")
	var resp struct {
		Result struct {
			Content []struct{ Text string } `json:"content"`
			IsError bool                    `json:"isError"`
		} `json:"result"`
		Error *struct{ Message string } `json:"error"`
	}
	line := r.response(strconv.FormatInt(id, 10))
	if err := json.Unmarshal([]byte(line), &resp); err != nil {
		r.t.Fatalf("tools/call answer: %v: %s", err, line)
	}
	if resp.Error != nil {
		return resp.Error.Message, true
	}
	var text strings.Builder
	for _, c := range resp.Result.Content {
		text.WriteString(c.Text)
	}
	return text.String(), resp.Result.IsError
}

func (r *rawSession) end() {
	r.t.Helper()
	r.closeInput()
	r.wait()
}

// TestUserMountSourcesCheckedAsUser: a second user cannot mount root's
// secret, nor another user's notes, by naming them, by a symlink, or by
// swapping a permitted directory for a symlink after adding the server.
func TestUserMountSourcesCheckedAsUser(t *testing.T) {
	f := newUserFixture(t)
	link := filepath.Join(f.home2, "to-notes")
	f.symlink(t, f.notesDir, link)

	t.Run("add refused", func(t *testing.T) {
		for _, tt := range []struct{ name, src, want string }{
			{"root's 0700 directory", f.secretDir, "not accessible to you"},
			{"0644 file in root's 0700 directory", filepath.Join(f.secretDir, "flag.txt"), "not accessible to you"},
			{"user 1's notes in their 0700 home", f.notesDir, "not accessible to you"},
			{"user 1's 0644 notes file", filepath.Join(f.notesDir, "notes.txt"), "not accessible to you"},
			{"a symlink of one's own to user 1's notes", link, "not accessible to you"},
			{"a /proc magic link to the daemon's root", "/proc/self/root" + f.secretDir, "magic link"},
			{"missing", filepath.Join(f.home2, "nonexistent"), "does not exist"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				out, err := f.add(t, "bad", tt.src+":/data")
				if err == nil || !strings.Contains(out, tt.want) {
					t.Fatalf("server add --mount %s: err=%v, output %q, want an error saying %q", tt.src, err, out, tt.want)
				}
			})
		}
		if list, _ := f.d.cli(t, f.uid2, "servers"); strings.Contains(list, "bad") {
			t.Fatalf("a refused server was stored:\n%s", list)
		}
	})

	t.Run("own directory works", func(t *testing.T) {
		dir := f.own(t, "mine")
		if out, err := f.add(t, "mine", dir+":/data"); err != nil {
			t.Fatalf("server add: %v %s", err, out)
		}
		r, failed := f.launch(t, "mine")
		if r == nil {
			t.Fatalf("launch refused: %s", failed)
		}
		if got, isErr := r.call("read_file", map[string]any{"path": "/data/ok.txt"}); isErr || got != "ok" {
			t.Fatalf("own mount: %q (error %v)", got, isErr)
		}
		r.end()
	})

	for _, forbidden := range []struct{ name, dir, text string }{
		{"root's secret", f.secretDir, f.token},
		{"user 1's notes", f.notesDir, f.notesText},
	} {
		t.Run("swapped to "+forbidden.name+" after add", func(t *testing.T) {
			dir := f.own(t, "box")
			if out, err := f.add(t, "box", dir+":/data"); err != nil {
				t.Fatalf("server add: %v %s", err, out)
			}
			// The permitted directory becomes a symlink to the forbidden one.
			must(t, os.Rename(dir, dir+".real"), "rename")
			t.Cleanup(func() { _ = os.RemoveAll(dir + ".real") })
			f.symlink(t, forbidden.dir, dir)
			r, failed := f.launch(t, "box")
			if r != nil {
				got, _ := r.call("list_dir", map[string]any{"path": "/data"})
				r.end()
				t.Fatalf("launch through the swapped symlink succeeded; /data lists %q", got)
			}
			if !strings.Contains(failed, "not accessible to you") {
				t.Fatalf("launch refused without saying why: %q", failed)
			}
			// Swapped back, the same server starts again: the check is
			// made at each launch, not a verdict stored at add.
			must(t, os.Remove(dir), "remove symlink")
			must(t, os.Rename(dir+".real", dir), "rename back")
			r, failed = f.launch(t, "box")
			if r == nil {
				t.Fatalf("launch after swapping back refused: %s", failed)
			}
			if got, isErr := r.call("read_file", map[string]any{"path": "/data/ok.txt"}); isErr || got != "ok" {
				t.Fatalf("mount after swapping back: %q (error %v)", got, isErr)
			}
			r.end()
		})
	}

	t.Run("swapped during launch", func(t *testing.T) {
		// box and alt trade names as fast as the kernel allows: one is the
		// permitted directory, the other a symlink to root's secret.
		dir := f.own(t, "racebox")
		if out, err := f.add(t, "racebox", dir+":/data"); err != nil {
			t.Fatalf("server add: %v %s", err, out)
		}
		alt := dir + ".alt"
		f.symlink(t, f.secretDir, alt)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var swaps atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE) == nil {
					swaps.Add(1)
				}
			}
		}()
		outcomes := map[string]int{}
		for i := 0; i < 12; i++ {
			r, failed := f.launch(t, "racebox")
			if r == nil {
				switch {
				case strings.Contains(failed, "not accessible to you"):
					outcomes["refused: checked as the user"]++
				case strings.Contains(failed, "changed while the sandbox was set up"):
					outcomes["refused: mounted object is not the checked one"]++
				default:
					close(stop)
					wg.Wait()
					t.Fatalf("launch %d refused for another reason: %q", i, failed)
				}
				continue
			}
			got, _ := r.call("read_file", map[string]any{"path": "/data/flag.txt"})
			ok, _ := r.call("read_file", map[string]any{"path": "/data/ok.txt"})
			r.end()
			if strings.Contains(got, f.token) || ok != "ok" {
				close(stop)
				wg.Wait()
				t.Fatalf("launch %d mounted something other than the checked directory: flag.txt %q, ok.txt %q", i, got, ok)
			}
			outcomes["started with the permitted directory"]++
		}
		close(stop)
		wg.Wait()
		t.Logf("%d swaps; outcomes: %v", swaps.Load(), outcomes)
		if swaps.Load() == 0 {
			t.Fatal("the swapper never swapped")
		}
		// Put the directory back under its name for cleanup.
		if st, err := os.Lstat(dir); err == nil && st.Mode()&os.ModeSymlink != 0 {
			must(t, unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE), "swap back")
		}
	})
	f.d.waitClean("user mount tests")
}

// TestUserMountUnderTmp: a mount target under /tmp leaves the sandbox's
// /tmp sticky and world-writable.
func TestUserMountUnderTmp(t *testing.T) {
	f := newUserFixture(t)
	dir := f.own(t, "tmpmount")
	for _, target := range []string{"/data", "/tmp/data", "/tmp/a/b"} {
		t.Run(target, func(t *testing.T) {
			name := "tmp" + strings.ReplaceAll(target, "/", "-")
			if out, err := f.add(t, name, dir+":"+target); err != nil {
				t.Fatalf("server add: %v %s", err, out)
			}
			r, failed := f.launch(t, name)
			if r == nil {
				t.Fatalf("launch refused: %s", failed)
			}
			defer r.end()
			if got, isErr := r.call("run_command", map[string]any{"command": "/usr/bin/stat", "args": []string{"-c", "%a", "/tmp"}}); isErr || strings.TrimSpace(got) != "1777" {
				t.Errorf("mode of /tmp: %q (error %v), want 1777", got, isErr)
			}
			if got, isErr := r.call("write_file", map[string]any{"path": "/tmp/probe", "content": "x"}); isErr {
				t.Errorf("/tmp not writable: %q", got)
			}
			if got, isErr := r.call("read_file", map[string]any{"path": target + "/ok.txt"}); isErr || got != "ok" {
				t.Errorf("mount at %s: %q (error %v)", target, got, isErr)
			}
		})
	}
}

// A user's mount over another user's private directory: the launch's
// deny_paths search sees what the user reaches, so a denied entry in
// their own tree is masked, and the masks (in the spec they may print and
// the sandbox's mountinfo) name nothing inside the private directory.
func TestUserMountDenySearchSeesAsTheUser(t *testing.T) {
	f := newUserFixture(t)
	dir := f.own(t, "denyview")
	private := filepath.Join(dir, "other", "clients", "acme-corp-private", ".aws")
	must(t, os.MkdirAll(private, 0o755), "mkdir %s", private)
	must(t, os.Chmod(filepath.Join(dir, "other"), 0o700), "close other") // root's
	mine := filepath.Join(dir, "mine", ".ssh")
	must(t, os.MkdirAll(mine, 0o755), "mkdir %s", mine)
	for _, p := range []string{filepath.Dir(mine), mine} {
		must(t, os.Chown(p, f.uid2, f.uid2), "chown %s", p)
	}
	if out, err := f.add(t, "denyview", dir+":/data"); err != nil {
		t.Fatalf("server add: %v %s", err, out)
	}
	spec, err := f.d.cli(t, f.uid2, "servers", "show", "denyview", "--spec")
	if err != nil {
		t.Fatalf("servers show --spec: %v %s", err, spec)
	}
	if !strings.Contains(spec, `"/data/mine/.ssh"`) || strings.Contains(spec, "acme-corp-private") {
		t.Fatalf("spec: want /data/mine/.ssh masked and no name from the private directory:\n%s", spec)
	}
	r, failed := f.launch(t, "denyview")
	if r == nil {
		t.Fatalf("launch refused: %s", failed)
	}
	defer r.end()
	mi, isErr := r.call("read_file", map[string]any{"path": "/proc/self/mountinfo"})
	if isErr || !strings.Contains(mi, "/data/mine/.ssh") || strings.Contains(mi, "acme-corp-private") {
		t.Fatalf("mountinfo (error %v): want /data/mine/.ssh masked and no name from the private directory:\n%s", isErr, mi)
	}
}

// TestUserMountTargetsWhereTheUserChangesNothing: a mount target of a
// user's own server lies where the user can change nothing on its way.
// runc (before 1.1.14, CVE-2024-45310) resolves a target once and makes
// it by name afterwards, as root: with a target inside the user's own
// mounted directory (or below a directory of theirs on the host's view),
// a user who swaps a directory on the way for a symlink in a loop had
// root create an empty file wherever the symlink pointed (/etc/nologin
// would keep every other user from logging in; found by a red-team
// helper, within a few dozen launches). Such targets are refused at
// `server add` and at every launch, before runc runs.
func TestUserMountTargetsWhereTheUserChangesNothing(t *testing.T) {
	f := newUserFixture(t)
	victim := filepath.Join(env.runDir, fmt.Sprintf("victim-%d", time.Now().UnixNano()))
	must(t, os.Mkdir(victim, 0o755), "mkdir %s", victim) // root's: user 2 cannot write it
	t.Cleanup(func() { _ = os.RemoveAll(victim) })
	// User 2's directory on the host's view (/var), beside their home.
	onHost := filepath.Join(env.runDir, fmt.Sprintf("user2-%d", time.Now().UnixNano()))
	must(t, os.Mkdir(onHost, 0o755), "mkdir %s", onHost)
	must(t, os.Chown(onHost, f.uid2, f.uid2), "chown %s", onHost)
	t.Cleanup(func() { _ = os.RemoveAll(onHost) })
	w := f.own(t, "w")
	for _, dir := range []string{w, onHost} {
		a := filepath.Join(dir, "a")
		must(t, os.Mkdir(a, 0o755), "mkdir %s", a)
		must(t, os.Chown(a, f.uid2, f.uid2), "chown %s", a)
		f.symlink(t, victim, filepath.Join(dir, "a.link"))
	}
	bin := filepath.Join(env.bin, "testserver")
	add := func(name string, mounts ...string) (string, error) {
		args := []string{"server", "add", name}
		for _, m := range mounts {
			args = append(args, "--mount", m)
		}
		return f.d.cli(t, f.uid2, append(args, "--", bin)...)
	}
	for _, tc := range []struct {
		name   string
		mounts []string
		swap   string // the directory user 2 swaps for a.link
		want   string
	}{
		{"inside-own-mount", []string{w + ":/w:rw", "/etc/hostname:/w/a/planted"}, w, "lies inside the mount at /w"},
		{"inside-own-mount-ro", []string{w + ":/w", "/etc/hostname:/w/a/planted"}, w, "lies inside the mount at /w"},
		{"below-own-host-dir", []string{"/etc/hostname:" + filepath.Join(onHost, "a", "planted")}, onHost, "is not root's alone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := add(tc.name, tc.mounts...)
			if err != nil {
				if !strings.Contains(out, tc.want) || !strings.Contains(out, "a directory you can change") {
					t.Fatalf("add refused with %q, want %q", out, tc.want)
				}
				return
			}
			t.Errorf("add of %v accepted: %s", tc.mounts, out)
			ents, _ := os.ReadDir(victim)
			for _, e := range ents {
				must(t, os.RemoveAll(filepath.Join(victim, e.Name())), "empty %s", victim) // a case before planted it
			}
			// What that allows: user 2 swaps a/ and a.link in a loop while
			// launching the server.
			sw := exec.Command(filepath.Join(env.bin, "hostile"), "exchange-loop", filepath.Join(tc.swap, "a"), filepath.Join(tc.swap, "a.link"))
			sw.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(f.uid2), Gid: uint32(f.uid2)}}
			must(t, sw.Start(), "start the swapper")
			defer func() { _ = sw.Process.Kill(); _ = sw.Wait() }()
			for i := range 100 {
				if r, _ := f.launch(t, tc.name); r != nil {
					r.end()
				}
				if ents, _ := os.ReadDir(victim); len(ents) > 0 {
					t.Fatalf("launch %d: root made %s in %s, a directory of root's user 2 cannot write", i, ents[0].Name(), victim)
				}
			}
		})
	}

	// A top-level symlink of the host (/lib -> usr/lib) leads into the
	// host's view: the way is checked as the host has it (refused here:
	// runc would resolve it in the sandbox's copy of the link).
	if _, err := os.Lstat("/lib"); err == nil {
		if out, err := add("via-link", "/etc/hostname:/lib/mcpcage-itest-x/planted"); err == nil || !strings.Contains(out, "is not a directory") {
			t.Errorf("add with a target through /lib: %v %s", err, out)
		}
	}

	// Where the user changes nothing on the way: a new top-level
	// directory, the sandbox's own /home and /tmp, below root's directories.
	if out, err := add("fine", w+":/w:rw", "/etc/hostname:/home/u/hostname", "/etc/hostname:/tmp/x/hostname", w+":/usr/share/doc"); err != nil {
		t.Fatalf("add: %v %s", err, out)
	}
	r, out := f.launch(t, "fine")
	if r == nil {
		t.Fatalf("launch: %s", out)
	}
	defer r.end()
	for _, p := range []string{"/w/ok.txt", "/usr/share/doc/ok.txt"} {
		if got, _ := r.call("read_file", map[string]any{"path": p}); got != "ok" {
			t.Errorf("%s reads %q", p, got)
		}
	}
}

// TestHomeMountTargetsHoldNoOtherTarget: an administrator's server whose
// "~" mount holds another mount's target would have runc make that
// target through the delegating user's own directory, the way
// TestUserMountTargetsWhereTheUserChangesNothing shows: its sessions are
// refused, saying so.
func TestHomeMountTargetsHoldNoOtherTarget(t *testing.T) {
	setup(t)
	uid, home := testUser(t)
	w := filepath.Join(home, fmt.Sprintf("w-%d", time.Now().UnixNano()))
	must(t, os.Mkdir(w, 0o755), "mkdir %s", w)
	must(t, os.Chown(w, uid, uid), "chown %s", w)
	t.Cleanup(func() { _ = os.RemoveAll(w) })
	d := startDaemon(t, fmt.Sprintf("[servers.h]\ncommand = [%q]\nmounts = [{ source = \"~/%s\", target = \"/w\", readonly = false }, { source = \"/etc/hostname\", target = \"/w/a/planted\" }]\n",
		filepath.Join(env.bin, "testserver"), filepath.Base(w)))
	d.openToOtherUsers(t)
	cmd := d.shimCmd("h")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Stdin = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "lies inside the mount of ~/") {
		t.Fatalf("session: %v, want it refused; stderr:\n%s", err, stderr.String())
	}
}
