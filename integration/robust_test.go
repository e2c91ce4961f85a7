package integration

// Robustness: many sessions opened and closed (some clients killed
// mid-call), hostile traffic from the client and from the server, and
// containerd restarted under a live session. Each test is bounded in time
// (well under two minutes on a loaded 2-core VM).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// footprint is what a daemon holds that sessions could leak, counted from
// outside: its goroutines and open files, and the containers, tasks,
// containerd shims, mounts, cgroups, FIFO directories, BPF map entries,
// pinned links and attached BPF links of its namespace.
type footprint struct {
	goroutines, fds              int
	containers, tasks, shims     int
	mounts, cgroups, fifos       int
	sessions                     int // live sessions, as status says
	warm                         int // prepared sandboxes in the warm pool
	kernelSessions, egress, deny int // BPF map entries
	pins, links                  int
}

// goroutineSlack is how many more goroutines than at the start a daemon
// may run once it is idle again: the Go runtime's and net/http's own
// come and go (a scrape, a status request) and are no leak.
const goroutineSlack = 5

// noKeepAlive scrapes without leaving a connection (one more goroutine and
// file in the daemon) open between scrapes.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// footprint counts what the daemon holds now.
func (d *daemon) footprint(t *testing.T) footprint {
	t.Helper()
	// A warm sandbox being prepared is a container of no session for a
	// moment: count once the pool is settled.
	var st api.Status
	testenv.WaitFor(t, "the warm pool to settle", 30*time.Second, func() (bool, string) {
		st = d.status(t)
		return st.Warm == nil || st.Warm.Building == 0, fmt.Sprintf("%+v", st.Warm)
	})
	resp, err := noKeepAlive.Get("http://" + st.Metrics + "/metrics")
	must(t, err, "scrape")
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read in full
	must(t, err, "read the metrics")
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	must(t, err, "list the daemon's files")
	f := footprint{
		goroutines:     int(metricValue(t, string(body), "go_goroutines")),
		fds:            len(fds),
		containers:     len(d.containers()),
		tasks:          len(d.tasks()),
		cgroups:        len(cgroupsOf(d.namespace)),
		sessions:       st.Sessions,
		warm:           warmCount(st),
		kernelSessions: st.Kernel.Sessions, egress: st.Kernel.EgressEntries, deny: st.Kernel.DenyEntries,
		links: d.cgroupLinks(t),
	}
	for _, p := range runProcesses() {
		if i := slices.Index(p.args, "-namespace"); i >= 0 && i+1 < len(p.args) && p.args[i+1] == d.namespace {
			f.shims++
		}
	}
	for _, m := range runMounts() {
		if strings.Contains(m.line, d.namespace) || strings.Contains(m.line, d.dir+"/") {
			f.mounts++
		}
	}
	// Per-session FIFO directories: containerd's copier's, and the
	// server's own stdio (with mcpcage-init).
	for _, dir := range []string{"fifo", "stdio"} {
		fifos, _ := os.ReadDir(filepath.Join(d.dir, "state", dir)) // absent: none
		f.fifos += len(fifos)
	}
	// The observers' links and pins are not counted: they are the same
	// few for any number of sessions, and linger after the last one.
	pins, _ := os.ReadDir(filepath.Join(pinRoot(), d.namespace)) // absent: none
	for _, p := range pins {
		if !strings.HasPrefix(p.Name(), "obs-") {
			f.pins++
		}
	}
	return f
}

// leaked describes how now exceeds the baseline, "" when it does not.
func (f footprint) leaked(base footprint) string {
	var out []string
	check := func(what string, now, was, slack int) {
		if now > was+slack {
			out = append(out, fmt.Sprintf("%s %d (was %d)", what, now, was))
		}
	}
	check("goroutines", f.goroutines, base.goroutines, goroutineSlack)
	check("open files", f.fds, base.fds, 0)
	check("containers", f.containers, base.containers, 0)
	check("tasks", f.tasks, base.tasks, 0)
	check("containerd shims", f.shims, base.shims, 0)
	check("mounts", f.mounts, base.mounts, 0)
	check("cgroups", f.cgroups, base.cgroups, 0)
	check("FIFO directories", f.fifos, base.fifos, 0)
	check("sessions", f.sessions, base.sessions, 0)
	// One prepared sandbox per server and user at most; the counts above
	// include theirs, the same at both ends.
	check("warm sandboxes", f.warm, base.warm, 0)
	check("BPF sessions entries", f.kernelSessions, base.kernelSessions, 0)
	check("BPF egress entries", f.egress, base.egress, 0)
	check("BPF deny entries", f.deny, base.deny, 0)
	check("pinned links", f.pins, base.pins, 0)
	check("attached BPF links", f.links, base.links, 0)
	return strings.Join(out, ", ")
}

// waitFootprint waits until the daemon holds no more than base.
func (d *daemon) waitFootprint(t *testing.T, what string, base footprint, within time.Duration) {
	t.Helper()
	testenv.WaitFor(t, what+" to leave the daemon as it was", within, func() (bool, string) {
		left := d.footprint(t).leaked(base)
		return left == "", left
	})
}

// shimProc is one `mcpcage run` driven line by line, for code that must
// not call t.Fatal (it runs outside the test's goroutine): every step
// returns an error instead. A timer kills the shim after limit, so no
// step blocks longer.
type shimProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	outF   *os.File // out's pipe
	stderr *syncBuffer
	timer  *time.Timer
	// skipped are the last lines response read that were not the
	// response it waited for (a notification, or an answer to another
	// id: an error answer with id null is for no request).
	skipped []string
}

func (d *daemon) startShim(name string, limit time.Duration) (*shimProc, error) {
	p := &shimProc{cmd: d.shimCmd(name), stderr: &syncBuffer{}}
	p.cmd.Stderr = p.stderr
	// The daemon holds the passed stderr until the session ends: Wait
	// waits for that, within bounds.
	p.cmd.WaitDelay = limit
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReaderSize(stdout, 1<<20)
	p.outF, _ = stdout.(*os.File)
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	// The daemon holds the other end of stdout until the session ends:
	// reads are bounded too, whatever it does.
	if f, ok := stdout.(*os.File); ok {
		_ = f.SetReadDeadline(time.Now().Add(limit)) // a pipe without deadlines is bounded by the timer's kill alone
	}
	p.timer = time.AfterFunc(limit, func() { _ = p.cmd.Process.Kill() }) // a session over its time: its reads fail
	return p, nil
}

// unread says what the client has not read of the shim's stdout: in its
// buffer, and in the pipe (FIONREAD).
func (p *shimProc) unread() string {
	inPipe := "unknown"
	if p.outF != nil {
		if raw, err := p.outF.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
					inPipe = strconv.Itoa(n)
				}
			})
		}
	}
	return fmt.Sprintf("unread: %d bytes buffered, %s in the pipe", p.out.Buffered(), inPipe)
}

func (p *shimProc) send(s string) error {
	_, err := io.WriteString(p.in, s)
	return err
}

// response reads lines until the response to id (raw JSON).
func (p *shimProc) response(id string) (string, error) {
	for {
		line, err := p.out.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("waiting for the response to %s: %w; stderr %q", id, err, p.stderr.String())
		}
		var env struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal([]byte(line), &env) == nil && string(env.ID) == id {
			return line, nil
		}
		if len(p.skipped) == maxSkipped {
			p.skipped = p.skipped[1:]
		}
		p.skipped = append(p.skipped, fmt.Sprintf("%.300s", line))
	}
}

// maxSkipped bounds shimProc.skipped.
const maxSkipped = 8

func (p *shimProc) initialize() error {
	if err := p.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"robust","version":"1"}}}` + "\n"); err != nil {
		return err
	}
	if _, err := p.response(`"init"`); err != nil {
		return err
	}
	return p.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
}

// wait closes stdin and waits for the shim; it returns its exit code.
func (p *shimProc) wait() (int, error) {
	_ = p.in.Close() // a shim already gone is fine
	_, _ = io.Copy(io.Discard, p.out)
	err := p.cmd.Wait()
	p.timer.Stop()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, err
	}
	return p.cmd.ProcessState.ExitCode(), nil
}

func callLine(id int, tool, args string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`+"\n", id, tool, args)
}

// churnSession is one short session: an echo and a clean close, or, with
// kill, a slow call the shim is SIGKILLed in the middle of. Either way it
// returns once the daemon has ended the session (it closes the client's
// output then).
func (d *daemon) churnSession(i int, kill bool) error {
	p, err := d.startShim("test", 60*time.Second)
	if err != nil {
		return err
	}
	// A stall is looked into while the shim still lives (its kill at the
	// minute ends the session, and the state with it).
	if p.outF != nil {
		_ = p.outF.SetReadDeadline(time.Now().Add(churnAnswerWait))
	}
	err = p.churn("churn-"+strconv.Itoa(i), kill)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.timer.Stop()
		// No answer in time: where the daemon waits, before the client
		// lets go (a rare stall seen in CI), whether an answer waits
		// unread in the client's pipe (then the daemon did write it),
		// what the server does, and whether its exit lets the answer
		// through.
		err = fmt.Errorf("%w (%s; lines read that were not the answer: %q)", err, p.unread(), p.skipped)
		err = fmt.Errorf("%w%s; then the client had %s", err, d.serverState(p), p.unread())
		d.dumpGoroutines(fmt.Sprintf("session %d: %v", i, err))
		_ = p.cmd.Process.Kill()
	}
	code, werr := p.wait()
	switch {
	case err != nil:
		return err
	case werr != nil:
		return fmt.Errorf("wait for the shim: %w", werr)
	case !kill && code != 0:
		return fmt.Errorf("shim exited %d after a clean close; stderr %q", code, p.stderr.String())
	}
	return nil
}

// serverState says, for a session that stalled, what its server does:
// the state and system call of each of its threads, and its goroutines (a
// Go server's, the test server's, which SIGQUIT makes it write to its
// stderr, the client's); then what the audit log holds of the session (a
// tool.result and its latency: when the daemon had the server's answer).
// The session and its server are found by the shim's pid in the daemon's
// "session started" line. The server exits on the signal.
func (d *daemon) serverState(p *shimProc) string {
	peer := fmt.Sprintf(" peer_pid=%d ", p.cmd.Process.Pid)
	pid, session := 0, ""
	for _, line := range strings.Split(d.log.String(), "\n") {
		if !strings.Contains(line, `msg="session started"`) || !strings.Contains(line, peer) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "pid="); ok {
				pid, _ = strconv.Atoi(v)
			} else if v, ok := strings.CutPrefix(f, "session="); ok {
				session = v
			}
		}
	}
	if pid == 0 {
		return "; its server was not found in the daemon's log"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "; its server, pid %d:", pid)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, t.Name())
		stat, _ := os.ReadFile(dir + "stat")
		wchan, _ := os.ReadFile(dir + "wchan")
		sc, _ := os.ReadFile(dir + "syscall")
		state := ""
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) {
			state = string(stat[i+2])
		}
		fmt.Fprintf(&b, " thread %s %s %s (syscall %s);", t.Name(), state, wchan, bytes.TrimSpace(sc))
	}
	before := p.stderr.Len()
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		fmt.Fprintf(&b, " SIGQUIT: %v", err)
	} else {
		// Written once it stops growing (within 3 s).
		for last, end := -1, time.Now().Add(3*time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			n := p.stderr.Len()
			if n == last && strings.Contains(p.stderr.String()[before:], "goroutine ") {
				break
			}
			last = n
		}
		fmt.Fprintf(&b, " its goroutines (SIGQUIT): %s", p.stderr.String()[before:])
	}
	// Then what the daemon recorded: a result is recorded once the relay
	// has dealt with it (the server's exit may just have let it through).
	time.Sleep(time.Second)
	fmt.Fprintf(&b, "; then its audit records (session %s):", session)
	files, _ := filepath.Glob(filepath.Join(d.dir, "log", "audit.jsonl*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			var r map[string]any
			if !strings.Contains(line, `"session":"`+session+`"`) || json.Unmarshal([]byte(line), &r) != nil {
				continue
			}
			fmt.Fprintf(&b, " %v", r["type"])
			if id, ok := r["request_id"]; ok {
				fmt.Fprintf(&b, " (request %v", id)
				if lat, ok := r["latency_ms"]; ok {
					fmt.Fprintf(&b, ", answered after %v ms", lat)
				}
				b.WriteString(")")
			}
			b.WriteString(";")
		}
	}
	return b.String()
}

// churnAnswerWait is how long a churn session waits for an answer
// before it is looked into as a stall (within the shim's minute).
const churnAnswerWait = 45 * time.Second

func (p *shimProc) churn(text string, kill bool) error {
	if err := p.initialize(); err != nil {
		return err
	}
	if kill {
		// The echo is answered after the server has read the sleep (one
		// stream, in order): the sleep is in flight when the shim dies.
		if err := p.send(callLine(1, "sleep", `{"ms":60000}`) + callLine(2, "echo", `{"text":"`+text+`"}`)); err != nil {
			return err
		}
		if _, err := p.response("2"); err != nil {
			return err
		}
		if err := p.cmd.Process.Kill(); err != nil {
			return fmt.Errorf("kill the shim: %w", err)
		}
		return nil
	}
	if err := p.send(callLine(1, "echo", `{"text":"`+text+`"}`)); err != nil {
		return err
	}
	line, err := p.response("1")
	if err == nil && !strings.Contains(line, text) {
		err = fmt.Errorf("echo answered %.200q", line)
	}
	return err
}

// Churn size. The target is 500 sessions (the figure), every
// 10th client SIGKILLed in the middle of a call. A session (runc create
// and start, eBPF registration, stop ladder, task and container
// deletion; one session in eight at most finds a warm sandbox, since
// eight run at once for one server and user) costs about 0.2 to 0.4 s of
// wall time with 8 in flight on the 2-core development VM: 500 in 112 s
// in a CI run, 155 in 63 s while another full run shared the machine.
// The test starts sessions until the target or churnBudget, whichever
// comes first (so a quiet machine reaches 500; a shared one fewer), and
// fails below churnFloor, which would no longer be churn. A leak of a
// session's anything shows hundreds of times over in the footprint. The
// run says how many it reached.
const (
	churnTarget    = 500
	churnBudget    = 180 * time.Second
	churnFloor     = 100
	churnWorkers   = 8
	churnKillEvery = 10
)

func TestRobustChurn(t *testing.T) {
	testStart := time.Now()
	d := startDaemon(t, "")
	testenv.Require(t, d.status(t).Kernel != nil, "the eBPF layer (status shows no kernel section)")
	// One session first: what the daemon sets up once, on first use, is
	// not a leak.
	must(t, d.churnSession(-1, false), "warm-up session")
	d.waitClean("the warm-up session")
	// ... and the warm sandbox its end prepares, which churn takes and
	// prepares again: one at the start and at the end.
	d.waitWarm(t, 1)
	base := d.footprint(t)

	start := time.Now()
	t.Logf("daemon and warm-up session ready after %v", time.Since(testStart).Round(time.Millisecond))
	jobs := make(chan int)
	errs := make(chan error, churnTarget)
	var wg sync.WaitGroup
	for w := 0; w < churnWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := d.churnSession(i, i%churnKillEvery == churnKillEvery-1); err != nil {
					errs <- fmt.Errorf("session %d: %w", i, err)
				}
			}
		}()
	}
	n := 0
	for ; n < churnTarget && time.Since(start) < churnBudget; n++ {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	close(errs)
	t.Logf("%d sessions (%d clients killed mid-call) in %v", n, n/churnKillEvery, time.Since(start).Round(time.Millisecond))
	var failed []string
	for err := range errs {
		failed = append(failed, err.Error())
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d sessions failed:\n%s", len(failed), n, strings.Join(failed, "\n"))
	}
	if n < churnFloor {
		t.Fatalf("only %d sessions in %v, want at least %d", n, churnBudget, churnFloor)
	}
	settle := time.Now()
	d.waitFootprint(t, fmt.Sprintf("%d sessions", n), base, 60*time.Second)
	t.Logf("back to the footprint of before in %v: %+v", time.Since(settle).Round(time.Millisecond), base)
	if ok, why := d.answers(); !ok {
		t.Fatalf("after the churn: %s", why)
	}
}

// rogueServer is testdata/rogue (the misbehaving server), built once.
func rogueServer(t *testing.T) string {
	t.Helper()
	setup(t)
	return testdataBin(t, "rogue")
}

// testdataBins are the programs of testdata/ built for this run.
var testdataBins struct {
	mu    sync.Mutex
	built map[string]error
}

// testdataBin builds testdata/NAME (static) beside the other binaries,
// once per run, and returns its path.
func testdataBin(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(env.bin, name)
	testdataBins.mu.Lock()
	defer testdataBins.mu.Unlock()
	err, done := testdataBins.built[name]
	if !done {
		cmd := exec.Command("go", "build", "-o", path, "./testdata/"+name)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("build testdata/%s: %v\n%s", name, berr, out)
		}
		if testdataBins.built == nil {
			testdataBins.built = map[string]error{}
		}
		testdataBins.built[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// hostileDaemon runs mcpcaged with a 1 MiB message cap, the test server
// and the rogue server.
func hostileDaemon(t *testing.T) *daemon {
	t.Helper()
	return startDaemon(t, fmt.Sprintf("[daemon]\nmax_message_bytes = \"1MiB\"\naudit_sync = \"batch\"\n\n[servers.rogue]\ncommand = [%q]\n", rogueServer(t)))
}

// maxRSS bounds mcpcaged's resident memory, at its peak, under attack.
const maxRSS = 200 << 20

// peakRSS returns the most memory process pid has had resident (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err, "read the daemon's status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" && f[2] == "kB" {
			kib, err := strconv.ParseInt(f[1], 10, 64)
			must(t, err, "parse %q", line)
			return kib << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// bystander is a well-behaved session that calls echo without pause while
// other sessions attack the daemon.
type bystander struct {
	calls atomic.Int64
	mu    sync.Mutex
	err   error
}

func (d *daemon) bystander(t *testing.T) *bystander {
	t.Helper()
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	b := &bystander{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			text := fmt.Sprintf("bystander-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}}})
			cancel()
			if err == nil && (res.IsError || len(res.Content) != 1) {
				err = fmt.Errorf("echo answered %+v", res)
			}
			if err == nil {
				if tc, ok := mcp.AsTextContent(res.Content[0]); !ok || tc.Text != text {
					err = fmt.Errorf("echo of %q answered %+v", text, res.Content[0])
				}
			}
			if err != nil {
				b.mu.Lock()
				b.err = fmt.Errorf("call %d: %w", i, err)
				b.mu.Unlock()
				return
			}
			b.calls.Add(1)
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return b
}

// stillServes checks the daemon after an attack: it runs, answers a
// status request, the bystander's calls go on, and its memory stayed
// bounded.
func (d *daemon) stillServes(t *testing.T, b *bystander) {
	t.Helper()
	select {
	case <-d.exited:
		t.Fatalf("mcpcaged exited (%v)", d.cmd.ProcessState)
	default:
	}
	if ok, why := d.answers(); !ok {
		t.Fatalf("mcpcaged does not answer a status request: %s", why)
	}
	from := b.calls.Load()
	testenv.WaitFor(t, "three more calls of the bystander session", 30*time.Second, func() (bool, string) {
		b.mu.Lock()
		err := b.err
		b.mu.Unlock()
		if err != nil {
			t.Fatalf("the bystander session was disturbed: %v", err)
		}
		n := b.calls.Load() - from
		return n >= 3, fmt.Sprintf("%d calls", n)
	})
	peak := peakRSS(t, d.cmd.Process.Pid)
	if peak > maxRSS {
		t.Fatalf("mcpcaged's resident memory peaked at %d MiB, want under %d MiB", peak>>20, maxRSS>>20)
	}
	t.Logf("mcpcaged's peak resident memory so far: %d MiB", peak>>20)
}

// waitSettled waits until the daemon runs n sessions, with as many
// containers and tasks besides those of its warm sandboxes (with none
// being prepared).
func (d *daemon) waitSettled(t *testing.T, what string, n int) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%s: %d session(s) left, with their containers and tasks", what, n), 30*time.Second, func() (bool, string) {
		st := d.status(t)
		c, k, w := len(d.containers()), len(d.tasks()), warmCount(st)
		building := st.Warm != nil && st.Warm.Building > 0
		return st.Sessions == n && c-w == n && k-w == n && !building, fmt.Sprintf("%d sessions, %d containers, %d tasks, %d warm sandboxes (%v being prepared)", st.Sessions, c, k, w, building)
	})
}

// hostileShim starts an initialized session of server, or fails the test.
func (d *daemon) hostileShim(t *testing.T, server string) *shimProc {
	t.Helper()
	p, err := d.startShim(server, 90*time.Second)
	must(t, err, "start the shim")
	t.Cleanup(func() { _, _ = p.wait() }) // ended already, or ended now
	must(t, p.initialize(), "initialize")
	return p
}

// until reads lines up to the response to id and returns them, the
// response last.
func (p *shimProc) until(t *testing.T, id string) []string {
	t.Helper()
	var lines []string
	for {
		line, err := p.out.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for the response to %s: %v; read %d lines (%.300q); shim stderr %q", id, err, len(lines), lines, p.stderr.String())
		}
		lines = append(lines, line)
		var env struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal([]byte(line), &env) == nil && string(env.ID) == id {
			return lines
		}
	}
}

// errorCode returns the JSON-RPC error code of a response, 0 for none.
func errorCode(line string) int {
	var r struct {
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(line), &r) != nil || r.Error == nil {
		return 0
	}
	return r.Error.Code
}

func TestRobustHostileClient(t *testing.T) {
	d := hostileDaemon(t)
	b := d.bystander(t)
	echo := func(t *testing.T, p *shimProc, id int, text string) {
		t.Helper()
		must(t, p.send(callLine(id, "echo", `{"text":"`+text+`"}`)), "send an echo")
		if lines := p.until(t, strconv.Itoa(id)); !strings.Contains(lines[len(lines)-1], text) {
			t.Fatalf("echo after the attack answered %.300q", lines[len(lines)-1])
		}
	}
	t.Run("unterminated line beyond max_message_bytes", func(t *testing.T) {
		p := d.hostileShim(t, "test")
		wrote := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(p.in, io.MultiReader(strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`),
				io.LimitReader(repeatReader('z'), 64<<20))) // the session ends long before: the write fails then
			wrote <- n
		}()
		lines := p.until(t, "null")
		if last := lines[len(lines)-1]; errorCode(last) != -32004 || !strings.Contains(last, "max_message_bytes") {
			t.Fatalf("got %.300q, want a -32004 error naming max_message_bytes", last)
		}
		if code, err := p.wait(); err != nil || code != 1 {
			t.Fatalf("shim exit %d (%v), want 1", code, err)
		}
		if !strings.Contains(p.stderr.String(), "max_message_bytes") {
			t.Fatalf("shim stderr %q does not name max_message_bytes", p.stderr.String())
		}
		if n := <-wrote; n >= 64<<20 {
			t.Fatalf("the daemon read all %d bytes of an unterminated line, with a 1 MiB cap", n)
		}
		d.waitSettled(t, "the oversized session ended", 1)
		d.stillServes(t, b)
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		p := d.hostileShim(t, "test")
		must(t, p.send("\xff\xfe\xfd\n"), "send")
		lines := p.until(t, "null")
		if errorCode(lines[len(lines)-1]) != -32700 {
			t.Fatalf("a line of invalid UTF-8 answered %.300q, want a -32700 parse error", lines[len(lines)-1])
		}
		// In a string of a valid envelope: refused, or passed on for the
		// server to refuse; never echoed back as a success.
		must(t, p.send(callLine(2, "echo", `{"text":"bad `+"\xff\xfe"+` bytes"}`)), "send")
		must(t, p.send(callLine(3, "echo", `{"text":"after"}`)), "send")
		lines = p.until(t, "3")
		for _, l := range lines[:len(lines)-1] {
			if strings.Contains(l, "bad ") && errorCode(l) == 0 && !strings.Contains(l, `"isError":true`) {
				t.Fatalf("invalid UTF-8 was relayed and echoed: %.300q", l)
			}
		}
		echo(t, p, 4, "still here")
		d.stillServes(t, b)
	})
	t.Run("deep nesting", func(t *testing.T) {
		p := d.hostileShim(t, "test")
		const depth = 100000
		must(t, p.send(strings.Repeat("[", depth)+"\n"), "send")
		lines := p.until(t, "null")
		if errorCode(lines[len(lines)-1]) == 0 {
			t.Fatalf("%d unclosed brackets answered %.300q, want an error", depth, lines[len(lines)-1])
		}
		deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		must(t, p.send(callLine(2, "echo", `{"text":"deep","nested":`+deep+`}`)), "send")
		must(t, p.send(callLine(3, "echo", `{"text":"after"}`)), "send")
		lines = p.until(t, "3")
		refused := false
		for _, l := range lines[:len(lines)-1] {
			refused = refused || errorCode(l) != 0 || strings.Contains(l, `"isError":true`)
			if strings.Contains(l, `"deep"`) && errorCode(l) == 0 && !strings.Contains(l, `"isError":true`) {
				t.Fatalf("a message nested %d deep was answered as a success: %.300q", depth, l)
			}
		}
		if !refused {
			t.Fatalf("a message nested %d deep got no error: %q", depth, lines)
		}
		echo(t, p, 4, "still here")
		d.stillServes(t, b)
	})
	t.Run("10000 pending requests", func(t *testing.T) {
		p := d.hostileShim(t, "rogue") // reads on and never answers "hang"
		const n = 10000
		var reqs strings.Builder
		for i := 0; i < n; i++ {
			reqs.WriteString(callLine(100000+i, "hang", `{}`))
		}
		must(t, p.send(reqs.String()), "send %d requests", n)
		// The pending table is full now: one more request is refused
		// at once, with a reason that is true.
		must(t, p.send(`{"jsonrpc":"2.0","id":"probe","method":"tools/call","params":{"name":"echo","arguments":{"text":"probe"}}}`+"\n"), "send")
		lines := p.until(t, `"probe"`)
		last := lines[len(lines)-1]
		if errorCode(last) == 0 && !strings.Contains(last, "probe") {
			t.Fatalf("the request after %d pending ones answered %.300q", n, last)
		}
		if errorCode(last) != 0 && strings.Contains(last, "already in use") {
			// DAEMON BUG (reported): Relay.filter (daemon/relay/filter.go)
			// refuses a request that finds the pending table full with
			// the text meant for a duplicate id; table.add does not say
			// which of the two it was.
			t.Errorf("the request after %d pending ones was refused as a duplicate id, which it is not: %.300q", n, last)
		}
		d.stillServes(t, b)
		// When the client leaves, every pending request is answered.
		_ = p.in.Close() // the end of the client's input
		answered := map[string]bool{}
		sc := bufio.NewScanner(p.out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &r) == nil && errorCode(sc.Text()) != 0 {
				answered[string(r.ID)] = true
			}
		}
		missing := 0
		for i := 0; i < n; i++ {
			if !answered[strconv.Itoa(100000+i)] {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("%d of %d pending requests got no answer when the session ended; shim stderr %q", missing, n, p.stderr.String())
		}
		d.waitSettled(t, "the session with 10000 pending requests ended", 1)
		d.stillServes(t, b)
	})
	t.Run("duplicate ids", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		must(t, p.send(callLine(7, "hang", `{}`)+callLine(7, "echo", `{"text":"twin"}`)), "send")
		lines := p.until(t, "7")
		if last := lines[len(lines)-1]; errorCode(last) == 0 || strings.Contains(last, "twin") {
			t.Fatalf("a second request with a pending id answered %.300q, want an error", last)
		}
		echo(t, p, 8, "still here")
		d.stillServes(t, b)
	})
	t.Run("responses to nothing", func(t *testing.T) {
		p := d.hostileShim(t, "test")
		must(t, p.send(`{"jsonrpc":"2.0","id":"nobody","result":{}}`+"\n"+`{"jsonrpc":"2.0","id":99,"error":{"code":1,"message":"x"}}`+"\n"), "send")
		echo(t, p, 1, "still here") // answered after them: they were dealt with
		d.waitLog("dropped response from client to a request the server never sent")
		d.stillServes(t, b)
	})
	t.Run("client stops reading while the server floods", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		must(t, p.send(callLine(1, "flood_stdout", `{"mib":512}`)), "send")
		// Never read again. The relay holds what the pipe cannot take.
		st := d.status(t)
		testenv.WaitFor(t, "the flood to begin", 30*time.Second, func() (bool, string) {
			v := metricValue(t, scrape(t, st.Metrics), `mcpcage_messages_total{direction="server_to_client",server="rogue"}`)
			return v >= 3, fmt.Sprintf("%v messages from the rogue server", v)
		})
		d.stillServes(t, b)
		// The client dies; the process that held its output still holds
		// it, unread. The session must end all the same.
		// DAEMON BUG (reported): it does not. Relay.serverLoop stays
		// blocked writing to the passed stdout, which has no deadline, so
		// the session, its container and task stay until the output is
		// read or closed (here: by the clean-up of this test).
		must(t, p.cmd.Process.Kill(), "kill the shim")
		d.waitSettled(t, "the session of a client that died not reading", 1)
		d.stillServes(t, b)
	})
}

// repeatReader reads c forever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// One server's refused messages (each one recorded, as many as it
// writes) take at most their share of a busy audit queue, and another
// session's refusal is on the record. Red team on f69adaf: the rogue's
// records filled the queue and the other session's were dropped. The
// daemon's audit writer is stalled (mcpcaged-failpoints) while the rogue
// writes, as a busy machine stalls it by chance.
func TestAServersRefusalsLeaveOthersRoomInTheAudit(t *testing.T) {
	stall := filepath.Join(t.TempDir(), "stall")
	d := startDaemon(t, fmt.Sprintf("[servers.rogue]\ncommand = [%q]\n", rogueServer(t)), failpoints("MCPCAGE_FAILPOINT_AUDIT_STALL="+stall))
	other := d.hostileShim(t, "rogue")
	p := d.hostileShim(t, "rogue")
	must(t, os.WriteFile(stall, nil, 0o644), "stall the audit writer")
	const count = 6000 // more than the queue holds
	must(t, p.send(callLine(1, "flood_ambiguous", fmt.Sprintf(`{"count":%d}`, count))), "send")
	if lines := p.until(t, "1"); !strings.Contains(lines[len(lines)-1], fmt.Sprintf("wrote %d ambiguous", count)) {
		t.Fatalf("flood_ambiguous answered %.300q", lines[len(lines)-1])
	}
	// The refusal is queued before the client is answered.
	must(t, other.send(`{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call"}`+"\n"), "send")
	if lines := other.until(t, "7"); !strings.Contains(lines[len(lines)-1], "ambiguous") {
		t.Fatalf("the ambiguous request was answered %.300q", lines[len(lines)-1])
	}
	must(t, os.Remove(stall), "let the audit writer go on")
	d.record(t, string(api.RecordMessageRefused), func(r map[string]any) bool { return str(r, "direction") == "client_to_server" })
	rogue := 0
	for _, r := range d.auditRecords(t) {
		if str(r, "type") == string(api.RecordMessageRefused) && str(r, "direction") == "server_to_client" {
			rogue++
		}
	}
	if rogue == 0 || rogue >= count {
		t.Fatalf("%d of the rogue's %d refusals recorded, want some and not all (the queue was full)", rogue, count)
	}
	t.Logf("%d of the rogue's %d refusals recorded while the writer stalled", rogue, count)
}

func TestRobustHostileServer(t *testing.T) {
	d := hostileDaemon(t)
	b := d.bystander(t)
	t.Run("stdout flood", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		const mib = 128
		must(t, p.send(callLine(1, "flood_stdout", fmt.Sprintf(`{"mib":%d}`, mib))), "send")
		lines := p.until(t, "1")
		if last := lines[len(lines)-1]; !strings.Contains(last, fmt.Sprintf("flooded %d MiB", mib)) {
			t.Fatalf("flood_stdout answered %.300q", last)
		}
		notes := 0
		for _, l := range lines[:len(lines)-1] {
			switch {
			case strings.Contains(l, "notifications/message"):
				notes++
			case strings.Contains(l, "forged-"):
				t.Fatalf("a response to a request nobody sent reached the client: %.200q", l)
			default:
				t.Fatalf("the client got %.200q during the flood", l)
			}
		}
		if notes != mib*16 {
			t.Fatalf("the client got %d notifications, want %d", notes, mib*16)
		}
		d.stillServes(t, b)
		if code, err := p.wait(); err != nil || code != 0 {
			t.Fatalf("shim exit %d (%v), want 0; stderr %q", code, err, p.stderr.String())
		}
		d.waitSettled(t, "the flooding session ended", 1)
	})
	t.Run("endless line", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		must(t, p.send(callLine(1, "flood_line", `{}`)), "send")
		lines := p.until(t, "1")
		if last := lines[len(lines)-1]; errorCode(last) == 0 || !strings.Contains(last, "max_message_bytes") {
			t.Fatalf("a call whose server sends an endless line answered %.300q, want an error naming max_message_bytes", last)
		}
		if code, err := p.wait(); err != nil || code == 0 {
			t.Fatalf("shim exit %d (%v), want non-zero", code, err)
		}
		if !strings.Contains(p.stderr.String(), "max_message_bytes") {
			t.Fatalf("shim stderr %q does not name max_message_bytes", p.stderr.String())
		}
		d.waitSettled(t, "the endless line's session ended", 1)
		d.stillServes(t, b)
	})
	t.Run("stderr flood", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		const mib = 128
		must(t, p.send(callLine(1, "flood_stderr", fmt.Sprintf(`{"mib":%d}`, mib))), "send")
		lines := p.until(t, "1")
		if last := lines[len(lines)-1]; !strings.Contains(last, fmt.Sprintf("wrote %d MiB to stderr", mib)) {
			t.Fatalf("flood_stderr answered %.300q", last)
		}
		d.stillServes(t, b)
		if code, err := p.wait(); err != nil || code != 0 {
			t.Fatalf("shim exit %d (%v), want 0", code, err)
		}
		if got := p.stderr.Len(); got < mib<<20 {
			t.Fatalf("the client got %d bytes of the server's stderr, want %d", got, mib<<20)
		}
		d.waitSettled(t, "the stderr flood's session ended", 1)
	})
	t.Run("exit mid-message", func(t *testing.T) {
		p := d.hostileShim(t, "rogue")
		must(t, p.send(callLine(1, "exit_mid_message", `{}`)), "send")
		lines := p.until(t, "1")
		if last := lines[len(lines)-1]; errorCode(last) == 0 || !strings.Contains(last, "status 3") {
			t.Fatalf("a call whose server died mid-answer got %.300q, want an error naming exit status 3", last)
		}
		for _, l := range lines {
			if strings.Contains(l, "never finished") {
				t.Fatalf("half a message reached the client: %.300q", l)
			}
		}
		if code, err := p.wait(); err != nil || code != 3 {
			t.Fatalf("shim exit %d (%v), want the server's 3", code, err)
		}
		if !strings.Contains(p.stderr.String(), `server "rogue" exited with status 3`) {
			t.Fatalf("shim stderr %q", p.stderr.String())
		}
		d.waitSettled(t, "the session of a server that died mid-message ended", 1)
		d.stillServes(t, b)
	})
}

// privateContainerd is a containerd of one test's own, which the test
// may kill and restart; the run's containerd is shared by every test.
type privateContainerd struct {
	t                  *testing.T
	dir, address, conf string
	log                *os.File
	cmd                *exec.Cmd
	exited             chan struct{}
}

// startPrivateContainerd starts a containerd with its own root, state and
// socket, in the run's directory (whose leftovers teardown reports). At
// the end of the test it removes what the test's daemons left in it and
// stops it.
func startPrivateContainerd(t *testing.T) *privateContainerd {
	t.Helper()
	setup(t)
	dir, err := os.MkdirTemp(env.work, "cd-")
	must(t, err, "containerd directory")
	c := &privateContainerd{t: t, dir: dir, address: filepath.Join(dir, "containerd.sock"), conf: filepath.Join(dir, "containerd.toml")}
	must(t, os.WriteFile(c.conf, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644), "containerd config")
	c.log, err = os.Create(filepath.Join(dir, "containerd.log"))
	must(t, err, "containerd log")
	t.Cleanup(c.remove)
	c.start()
	return c
}

func (c *privateContainerd) start() {
	c.t.Helper()
	c.cmd = exec.Command("containerd", "--config", c.conf, "--root", filepath.Join(c.dir, "root"),
		"--state", filepath.Join(c.dir, "state"), "--address", c.address)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	must(c.t, c.cmd.Start(), "start containerd")
	c.exited = make(chan struct{})
	cmd, exited := c.cmd, c.exited
	go func() { _ = cmd.Wait(); close(exited) }() // the exit is awaited through exited
	testenv.WaitFor(c.t, "the private containerd to answer", 30*time.Second, func() (bool, string) {
		out, err := exec.Command("ctr", "--address", c.address, "version").CombinedOutput()
		return err == nil, fmt.Sprintf("%v %s", err, out)
	})
}

// kill SIGKILLs containerd; its shims and their tasks live on.
func (c *privateContainerd) kill() {
	c.t.Helper()
	must(c.t, c.cmd.Process.Kill(), "kill containerd")
	<-c.exited
}

// remove deletes the tasks and containers left in every namespace, stops
// containerd, ends what outlived it (shims, mounts) and removes its
// directory.
func (c *privateContainerd) remove() {
	ctr := func(args ...string) []string {
		out, _ := exec.Command("ctr", append([]string{"--address", c.address}, args...)...).Output() // what fails is found below
		return strings.Fields(string(out))
	}
	for _, ns := range ctr("namespaces", "ls", "-q") {
		for _, id := range ctr("-n", ns, "tasks", "ls", "-q") {
			ctr("-n", ns, "tasks", "rm", "-f", id)
		}
		for _, id := range ctr("-n", ns, "containers", "ls", "-q") {
			ctr("-n", ns, "containers", "rm", id)
		}
	}
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM) // an exit under way is awaited below
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	for _, p := range runProcesses() {
		if slices.ContainsFunc(p.args, func(a string) bool { return strings.Contains(a, c.dir+"/") }) {
			c.t.Errorf("killed what outlived the private containerd: %s", p)
			_ = syscall.Kill(p.pid, syscall.SIGKILL) // gone meanwhile is as good
		}
	}
	for _, m := range runMounts() {
		if strings.Contains(m.line, c.dir+"/") {
			c.t.Errorf("unmounted what outlived the private containerd: %s", m.line)
			_ = syscall.Unmount(m.point, syscall.MNT_DETACH) // reported above
		}
	}
	_ = c.log.Close() // written by containerd only
	if c.t.Failed() {
		b, _ := os.ReadFile(c.log.Name())
		c.t.Logf("private containerd log (tail):\n%s", tail(string(b), 4000))
	}
	if err := os.RemoveAll(c.dir); err != nil {
		c.t.Errorf("remove the private containerd's directory: %v", err)
	}
}

// restartGrace bounds how long a session may outlive the loss of its
// containerd: the daemon must notice (its task's exit stream breaks at
// once) and end the session, not serve a server it can no longer stop.
const restartGrace = 30 * time.Second

func TestRobustContainerdRestart(t *testing.T) {
	cd := startPrivateContainerd(t)
	d := startDaemonOn(t, cd.address, "")
	p, err := d.startShim("test", 2*time.Minute)
	must(t, err, "start the shim")
	t.Cleanup(func() { _, _ = p.wait() }) // ended already, or ended now
	must(t, p.initialize(), "initialize")
	// A call in flight, on its way to the server: the echo after it is
	// answered once the server has read both.
	must(t, p.send(callLine(1, "sleep", `{"ms":60000}`)+callLine(2, "echo", `{"text":"live"}`)), "send")
	if _, err := p.response("2"); err != nil {
		t.Fatal(err)
	}
	// From here on the client's output is read in the background; ended
	// is closed at its end, which is the end of the session.
	var mu sync.Mutex
	var lines []string
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			line, err := p.out.ReadString('\n')
			if line != "" {
				mu.Lock()
				lines = append(lines, line)
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()

	cd.kill()
	cd.start()

	over, _ := testenv.Poll(restartGrace, func() (bool, string) {
		select {
		case <-ended:
			return true, ""
		default:
			return false, ""
		}
	})
	if !over {
		// DAEMON BUG (reported): the session goes on as if nothing had
		// happened, while the daemon has lost its task's exit status (its
		// "session ended" log says exit_code=-1) and nothing tells the
		// client. Record what it does, then end it.
		must(t, p.send(callLine(3, "echo", `{"text":"still"}`)), "send")
		answered, _ := testenv.Poll(10*time.Second, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"still"`) }), ""
		})
		code, err := p.wait()
		<-ended
		t.Errorf("the session outlived the restart of its containerd by %v (a new call answered: %v); when its client closed it, the shim exited %d (%v) with stderr %q",
			restartGrace, answered, code, err, p.stderr.String())
	} else {
		// The session ended: its pending call is answered with an error,
		// and the shim says in one line what happened.
		code, err := p.wait()
		must(t, err, "wait for the shim")
		stderr := p.stderr.String()
		mu.Lock()
		answer := ""
		for _, l := range lines {
			if strings.HasPrefix(l, `{"jsonrpc":"2.0","id":1,`) {
				answer = l
			}
		}
		mu.Unlock()
		if errorCode(answer) == 0 && !strings.Contains(answer, `"isError":true`) {
			t.Errorf("the call in flight when containerd restarted was answered %.300q, want an error", answer)
		}
		if code == 0 {
			t.Errorf("the shim exited 0 when containerd restarted under its session")
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "mcpcage: ") || !strings.Contains(stderr, "containerd") {
			t.Errorf("shim stderr %q, want one line that names containerd", stderr)
		}
	}

	// Once the daemon sees containerd again, a new session works.
	testenv.WaitFor(t, "mcpcaged to reach the restarted containerd", 30*time.Second, func() (bool, string) {
		st := d.status(t).Containerd
		return strings.HasPrefix(st, "connected"), st
	})
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got, isErr := callText(t, c, "echo", map[string]any{"text": "after the restart"}); isErr || got != "after the restart" {
		t.Fatalf("echo after the restart: %q (isError %v)", got, isErr)
	}
	_ = c.Close() // the shim's exit is waited for below
	if code := c.shimExit(t); code != 0 {
		t.Errorf("the session after the restart: shim exit %d, stderr %q", code, c.stderr.String())
	}
	// Nothing is left of either session: not the container and task of
	// the one containerd lost track of for a while.
	d.waitClean("the sessions before and after the restart")
}

// warmCount is how many prepared sandboxes status shows.
func warmCount(st api.Status) int {
	if st.Warm == nil {
		return 0
	}
	return len(st.Warm.Entries)
}

// waitWarm waits until the warm pool holds n prepared sandboxes and
// prepares none.
func (d *daemon) waitWarm(t *testing.T, n int) api.Status {
	t.Helper()
	var st api.Status
	testenv.WaitFor(t, fmt.Sprintf("%d warm sandbox(es) ready", n), 30*time.Second, func() (bool, string) {
		st = d.status(t)
		return st.Warm != nil && st.Warm.Building == 0 && len(st.Warm.Entries) == n, fmt.Sprintf("%+v", st.Warm)
	})
	return st
}
