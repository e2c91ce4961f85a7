package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestSystemdUnitsVerify(t *testing.T) {
	setup(t)
	_, err := exec.LookPath("systemd-analyze")
	testenv.Require(t, err == nil, "systemd-analyze")
	dir := t.TempDir()
	for _, u := range []string{"mcpcaged.service", "mcpcaged.socket"} {
		b, err := os.ReadFile(repoFile(t, "packaging/systemd/"+u))
		must(t, err, "read %s", u)
		// Point ExecStart at the binary under test.
		text := strings.ReplaceAll(string(b), "/usr/bin/mcpcaged", filepath.Join(env.bin, "mcpcaged"))
		must(t, os.WriteFile(filepath.Join(dir, u), []byte(text), 0o644), "write")
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "mcpcaged.socket"), filepath.Join(dir, "mcpcaged.service")).CombinedOutput()
	// Outside a booted system, verify may warn about the missing
	// containerd unit; anything else is a real problem.
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" || strings.Contains(line, "containerd.service") {
			continue
		}
		problems = append(problems, line)
	}
	if err != nil && len(problems) > 0 || len(problems) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
}

// notifySocket listens where sd_notify would write.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	must(t, err, "notify socket")
	t.Cleanup(func() { _ = conn.Close() })
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func waitNotify(t *testing.T, ch <-chan string, want string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-ch:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no sd_notify message containing %q", want)
		}
	}
}

func TestSdNotifyAndReload(t *testing.T) {
	setup(t)
	sock, notes := notifySocket(t)
	d := &daemon{t: t}
	base := startDaemon(t, "") // for its directory layout and config
	base.stop()
	*d = *base
	d.extraEnv = []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=2000000"}
	d.start()
	t.Cleanup(func() { d.stop() })
	ready := waitNotify(t, notes, "READY=1")
	if !strings.Contains(ready, "STATUS=0 sessions; network kernel") {
		t.Fatalf("READY message: %q", ready)
	}
	waitNotify(t, notes, "WATCHDOG=1")

	// SIGHUP re-reads the configuration: a new server becomes usable.
	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	must(t, os.WriteFile(d.config, append(cfg, []byte(fmt.Sprintf("\n[servers.added]\ncommand = [%q]\n", filepath.Join(env.bin, "testserver")))...), 0o644), "edit config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	waitNotify(t, notes, "RELOADING=1")
	waitNotify(t, notes, "READY=1")
	d.waitLog(`msg="configuration reloaded"`)
	c := d.connect(t, "added", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "reloaded"}); got != "reloaded" {
		t.Fatalf("server added by reload: %q", got)
	}
	// A broken configuration is refused and the running one stays.
	must(t, os.WriteFile(d.config, append(cfg, []byte("\n[daemon.bogus]\n")...), 0o644), "break config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	d.waitLog("reload refused")
	c2 := d.connect(t, "added", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c2, "echo", map[string]any{"text": "still"}); got != "still" {
		t.Fatalf("after a refused reload: %q", got)
	}
}

// TestReloadAppliesWhatItCanAndNamesTheRest: a reload changes log_level
// and observer_linger at once, and each setting it cannot change while
// the daemon runs keeps its running value with a warning naming it
// (before, the audit settings and observer_linger changed in the file
// were ignored without a word).
func TestReloadAppliesWhatItCanAndNamesTheRest(t *testing.T) {
	setup(t)
	d := startDaemon(t, "[daemon]\nobserver_linger = \"10m\"\n")
	if k := d.status(t).Kernel; k == nil || !k.Observing || k.ObserverLinger != "10m0s" {
		t.Fatalf("after start: want the observers lingering for 10m, got %+v", k)
	}
	// At the start level (debug) a session logs its start.
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "before"}); got != "before" {
		t.Fatalf("before the reload: %q", got)
	}
	d.waitLog(`level=INFO msg="session started"`)
	must(t, c.Close(), "close the session")
	noSessions := func() {
		t.Helper()
		testenv.WaitFor(t, "the session to end", 20*time.Second, func() (bool, string) {
			n := d.status(t).Sessions
			return n == 0, fmt.Sprint(n, " sessions")
		})
	}
	noSessions()
	if k := d.status(t).Kernel; !k.Observing {
		t.Fatal("the observers did not linger after the session (10m)")
	}

	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	edited := strings.Replace(string(cfg), `observer_linger = "10m"`, `observer_linger = "0s"`+"\naudit_sync = \"batch\"\naudit_keep = 3", 1)
	edited = strings.Replace(edited, `log_level = "debug"`, `log_level = "warn"`, 1)
	if edited == string(cfg) || !strings.Contains(edited, `log_level = "warn"`) {
		t.Fatalf("the test could not edit the configuration:\n%s", cfg)
	}
	must(t, os.WriteFile(d.config, []byte(edited), 0o644), "edit config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	d.waitLog(`msg="log_level changed"`)
	for _, key := range []string{"daemon.audit_sync", "daemon.audit_keep"} {
		if !strings.Contains(d.log.String(), "needs a restart: the running value stays\" key="+key+" ") {
			t.Errorf("no warning that %s needs a restart:\n%s", key, d.log.String())
		}
	}
	st := d.status(t)
	if st.Kernel.ObserverLinger != "0s" || st.Kernel.Observing {
		t.Fatalf("after observer_linger was reloaded as 0s: linger %q, observing %v; want 0s and the lingering observers detached",
			st.Kernel.ObserverLinger, st.Kernel.Observing)
	}
	mark := d.log.Len()
	c2 := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c2, "echo", map[string]any{"text": "after"}); got != "after" {
		t.Fatalf("after the reload: %q", got)
	}
	must(t, c2.Close(), "close the session")
	noSessions()
	if after := d.log.String()[mark:]; strings.Contains(after, "level=INFO") || strings.Contains(after, "level=DEBUG") {
		t.Fatalf("log_level reloaded as warn, yet info or debug lines follow:\n%s", after)
	}
}

func TestSocketActivation(t *testing.T) {
	setup(t)
	_, err := exec.LookPath("systemd-socket-activate")
	testenv.Require(t, err == nil, "systemd-socket-activate")
	base := startDaemon(t, "")
	base.stop()
	if err := os.Remove(base.socket); !errors.Is(err, fs.ErrNotExist) { // mcpcaged removes it when it stops
		must(t, err, "remove the socket")
	}
	d := *base
	d.t = t
	d.wrap = []string{"systemd-socket-activate", "--listen=" + d.socket}
	d.noWait = true // systemd-socket-activate starts mcpcaged on the first connection
	d.start()
	t.Cleanup(func() { d.stop() })
	testenv.WaitFor(t, "systemd-socket-activate to create the socket", 10*time.Second, func() (bool, string) {
		_, err := os.Stat(d.socket)
		return err == nil, fmt.Sprint(err)
	})
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	d.waitLog("using the socket passed by systemd")
	if got, _ := callText(t, c, "echo", map[string]any{"text": "activated"}); got != "activated" {
		t.Fatalf("echo over the activated socket: %q", got)
	}
}

// TestSessionStartsUnderTheConfigurationOfItsStart: the shim's hand-off
// of its files can take seconds after the daemon admitted the session; a
// reload in between applied only to later sessions, so a session admitted
// before a reload that took an egress host away started after it with
// that host allowed (found by a red-team helper). It now starts under
// what holds when it starts; a server removed in between refuses it.
func TestSessionStartsUnderTheConfigurationOfItsStart(t *testing.T) {
	setup(t) // env.bin is known after setup
	server := func(egress string) string {
		return fmt.Sprintf("[servers.web]\ncommand = [%q]\nnetwork = \"host\"\negress = [%q]\n", filepath.Join(env.bin, "testserver"), egress)
	}
	d := startDaemon(t, testIsTheShim(t)+server("127.0.0.1:1111"))
	base, err := os.ReadFile(d.config)
	must(t, err, "read config")
	reloadTo := func(cfg []byte) { d.reloadTo(t, cfg) }
	// admitThenReload sends a run request, lets the daemon admit it and
	// ask for the files, reloads to cfg, then passes the files.
	admitThenReload := func(cfg []byte) *api.Reply {
		t.Helper()
		run := admitRun(t, d.socket, "web")
		reloadTo(cfg)
		return run.pass(t)
	}
	r := admitThenReload(bytes.Replace(base, []byte("127.0.0.1:1111"), []byte("127.0.0.1:2222"), 1))
	if !r.OK {
		t.Fatalf("reply %+v, want the session started", r)
	}
	start := d.record(t, "session.start", func(rec map[string]any) bool { return str(rec, "session") == r.Session })
	if eg := fmt.Sprint(start["sandbox"].(map[string]any)["egress"]); eg != "[127.0.0.1:2222]" {
		t.Errorf("the session started with egress %s, want the reloaded [127.0.0.1:2222]", eg)
	}
	// The server removed meanwhile: refused, with the reason.
	r = admitThenReload([]byte(strings.Split(string(base), "[servers.web]")[0]))
	if r.OK || r.Code != api.CodeUnknownServer || !strings.Contains(r.Error, "web") {
		t.Fatalf("reply %+v, want the session refused: its server is gone", r)
	}
}

// TestMetricsPortTakenDoesNotStopTheDaemon: any local user can bind the
// metrics port first (the default is unprivileged), and mcpcaged exited
// on it, leaving every server down at its next start (found by a
// red-team helper). It now runs on, says so in status, and listens once
// the port is free.
func TestMetricsPortTakenDoesNotStopTheDaemon(t *testing.T) {
	squat, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "take a port")
	addr := squat.Addr().String()
	d := startDaemon(t, "")
	d.stop()
	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	must(t, os.WriteFile(d.config, bytes.Replace(cfg, []byte(`metrics_address = "127.0.0.1:0"`), []byte(fmt.Sprintf("metrics_address = %q", addr)), 1), 0o644), "edit config")
	d.start()
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "up"}); got != "up" {
		t.Fatalf("echo with the metrics port taken: %q", got)
	}
	if m := d.status(t).Metrics; !strings.Contains(m, "not listening") {
		t.Fatalf("status says metrics %q, want why they are not served", m)
	}
	must(t, squat.Close(), "free the port")
	testenv.WaitFor(t, "metrics served once the port is free", 30*time.Second, func() (bool, string) {
		m := d.status(t).Metrics
		return m == addr, m
	})
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err, "scrape")
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
}

// heldRun is a session request the daemon admitted and asked the files
// of, not yet passed: what the daemon does meanwhile is up to the test.
type heldRun struct {
	c       *api.Conn
	in, out *os.File // the ends passed as the client's stdin and stdout
	inW     *os.File // the client's writing end: closing it ends the session
}

// admitRun sends a run request for server and waits until the daemon
// asks for the files.
func admitRun(t *testing.T, socket, server string) *heldRun {
	t.Helper()
	c, err := api.Dial(socket)
	must(t, err, "dial")
	t.Cleanup(func() { _ = c.Close() })
	in, inW, err := os.Pipe()
	must(t, err, "pipe")
	outR, out, err := os.Pipe()
	must(t, err, "pipe")
	t.Cleanup(func() { _, _, _, _ = in.Close(), inW.Close(), outR.Close(), out.Close() })
	b, _ := json.Marshal(api.Request{Op: api.OpRun, Server: server, PassStdio: true, Version: api.Version})
	must(t, c.W.Write(api.FrameRequest, b), "send the request")
	if typ, _, err := c.R.Next(); err != nil || typ != api.FrameFilesWanted {
		t.Fatalf("after the request: frame %q, %v; want the daemon to ask for the files", typ, err)
	}
	return &heldRun{c: c, in: in, out: out, inW: inW}
}

// pass passes the files and returns the daemon's reply.
func (h *heldRun) pass(t *testing.T) *api.Reply {
	t.Helper()
	uc := h.c.Conn.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix(api.AppendFrame(nil, api.FrameFiles, nil), syscall.UnixRights(int(h.in.Fd()), int(h.out.Fd())), nil); err != nil {
		t.Fatalf("pass the files: %v", err)
	}
	for {
		typ, payload, err := h.c.R.Next()
		must(t, err, "read the reply")
		if typ == api.FrameReply {
			var r api.Reply
			must(t, json.Unmarshal(payload, &r), "decode the reply")
			return &r
		}
	}
}
