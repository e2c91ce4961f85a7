package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the run's size, from the flags.
type config struct {
	repo, out              string
	rounds, warm, calls    int
	conc, concCalls        int
	bigRounds, bigCalls    int
	bigBytes               int
	sessions               []int
	scaleWarm, scaleCalls  int
	scaleRounds            int
	fsyncs                 int
	auditDir               string // the always daemon's audit log's directory
	clientLimit, holdLimit time.Duration
	srtSettings, srt       string
}

// Main runs the benchmark and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("mcpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.repo, "repo", ".", "repository root (bin/ holds the built binaries)")
	fs.StringVar(&c.out, "out", "bench/results.md", "where to write the results")
	fs.IntVar(&c.rounds, "rounds", 5, "rounds over all paths (latency, throughput, cold start, session memory)")
	fs.IntVar(&c.warm, "warm", 100, "calls per round before timing")
	fs.IntVar(&c.calls, "calls", 300, "calls timed one at a time per round and path")
	fs.IntVar(&c.conc, "conc", 32, "calls in flight for the throughput figure")
	fs.IntVar(&c.concCalls, "conc-calls", 2000, "calls per round and path with -conc in flight (2000: the issue's measurement)")
	fs.IntVar(&c.bigRounds, "big-rounds", 3, "rounds of the big-result figure")
	fs.IntVar(&c.bigCalls, "big-calls", 2, "big results timed per round and path")
	fs.IntVar(&c.bigBytes, "big-bytes", 16<<20, "size of the big result")
	sessions := fs.String("sessions", "1,10,50", "session counts at which mcpcaged's memory is read; the scale figures use the last")
	fs.IntVar(&c.scaleWarm, "scale-warm", 10, "warm-up calls per session before the scale rounds")
	fs.IntVar(&c.scaleCalls, "scale-calls", 50, "calls per session in each scale round, one at a time per session, all sessions at once (0: no scale figures)")
	fs.IntVar(&c.scaleRounds, "scale-rounds", 3, "scale rounds")
	fs.IntVar(&c.fsyncs, "fsyncs", 200, "400-byte appends, each fdatasynced, timed per round in the always daemon's audit directory")
	kernel := fs.String("kernel-targets", "", "instead of a run: read FILE, the output of the eBPF benchmark (go test -bench SyscallOverhead ./bpf), and append its figures against the kernel targets to -out")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *kernel != "" {
		if err := appendKernelTargets(*kernel, c.out, stdout); err != nil {
			_, _ = fmt.Fprintf(stderr, "mcpbench: kernel targets: %v\n", err)
			return 1
		}
		return 0
	}
	for _, s := range strings.Split(*sessions, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			_, _ = fmt.Fprintf(stderr, "mcpbench: bad -sessions %q\n", *sessions)
			return 2
		}
		c.sessions = append(c.sessions, n)
	}
	c.clientLimit, c.holdLimit = 3*time.Minute, 12*time.Minute
	if err := run(c, stdout, stderr); err != nil {
		_, _ = fmt.Fprintf(stderr, "mcpbench: %v\n", err)
		return 1
	}
	return 0
}

func run(c config, stdout, log io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (containerd, runc, mcpcaged)")
	}
	if c.repo, err = filepath.Abs(c.repo); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
	}()
	if err := becomeSubreaper(); err != nil {
		return err
	}
	start := time.Now()
	e, err := newEnv(c.repo, log)
	defer func() {
		if cerr := e.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	if err != nil {
		return err
	}
	always, err := e.startDaemon("always", "always", false)
	if err != nil {
		return err
	}
	batch, err := e.startDaemon("batch", "batch", false)
	if err != nil {
		return err
	}
	warmd, err := e.startDaemon("warm", "batch", true)
	if err != nil {
		return err
	}
	// Ask mode with a consent that covers the calls: what a covered call
	// pays for ask mode (and the pinning of the tools it lists).
	askd, err := e.startDaemonDeciding("ask", "batch", false, "ask")
	if err != nil {
		return err
	}
	if err := askd.grantBenchClient(c.repo); err != nil {
		return err
	}
	// The data-flow guard on (labels, a rule, a detector), otherwise as
	// the batch daemon: what scanning and the influence trail cost.
	guardd, err := e.startDaemonWith("guard", "batch", false, "allow", guardConfig)
	if err != nil {
		return err
	}
	c.auditDir = filepath.Dir(always.auditLog)
	caged := func(name string, d *daemon, server string) path {
		return path{name: name, command: filepath.Join(e.bin, "mcpcage"), args: []string{"run", server},
			env: map[string]string{"MCPCAGE_SOCKET": d.socket}, namespace: d.namespace}
	}
	paths := []path{
		{name: "direct", command: "mcp-server-everything", args: []string{"stdio"}},
		{name: floorPath, command: filepath.Join(e.bin, "linerelay"), args: []string{"mcp-server-everything", "stdio"}},
		// On the audit logs' disk, so that its syncs cost what mcpcage's do.
		{name: durableFloorPath, command: filepath.Join(e.bin, "linerelay"),
			args: []string{"--durable", filepath.Join(c.auditDir, "durable-floor.log"), "mcp-server-everything", "stdio"}},
		caged("mcpcage always", always, "everything"),
		caged("mcpcage batch", batch, "everything"),
		caged("mcpcage ask, granted", askd, "everything"),
		caged("mcpcage guard on", guardd, "everything"),
	}
	c.srt = filepath.Join(c.repo, "bench", "_deps", "node_modules", ".bin", "srt")
	c.srtSettings = filepath.Join(e.work, "srt-settings.json")
	srtPath, srtWhy := e.srtPath(c)
	if srtWhy == "" {
		paths = append(paths, srtPath)
	}
	e.logf("bench: %d rounds over %s: %d warm-up calls, %d timed calls one at a time, %d calls %d in flight",
		c.rounds, names(paths), c.warm, c.calls, c.concCalls, c.conc)
	r := newReport(c, paths)
	r.notes = append(r.notes, fmt.Sprintf("Rounds: %d over every path (order rotated each round): %d warm-up calls, %d calls one at a time (p50/p99 of each round; throughput with 1 in flight is their rate), %d calls with %d in flight; cold start once per round; %d fdatasyncs timed at the start of each round. Big result: %d rounds of %d calls. Scale: %d rounds of %d calls per session after %d warm-up calls per session, the mcpcage always sessions (the memory daemon) and as many direct sessions (a second client) in alternate rounds. Cells: median over the rounds (min..max).",
		c.rounds, c.warm, c.calls, c.concCalls, c.conc, c.fsyncs, c.bigRounds, c.bigCalls, c.scaleRounds, c.scaleCalls, c.scaleWarm))
	r.notes = append(r.notes, "Cold start: the always and batch daemons run with warm_sandboxes = 0, so every session builds its container (namespaces, mounts, cgroup, seccomp) before the server starts. The warm row is a third daemon (audit_sync = \"batch\", warm_sandboxes = 4, its default): each round, once its pool shows a prepared sandbox (the previous session's end built it), one session is opened and closed; the server itself (node) still starts from nothing, as it must: a warm sandbox runs nothing of the server before its session.")
	r.notes = append(r.notes, "\""+floorPath+"\" is bench/cmd/linerelay between the client and server-everything: a Go process that copies each message from one pipe to the other with one write, reading the way mcpcaged does (non-blocking pipes on Go's poller, a goroutine per direction), and nothing else. Its added latency is what two extra cross-process hops cost on this machine: the floor for any design in which a process of its own sees every message, as mcpcaged must to decide each call.")
	r.notes = append(r.notes, "\""+durableFloorPath+"\" is the same relay started with --durable: it appends the client's messages to a file on the audit logs' disk and forwards them only once an fdatasync has made them durable, by group commit (one sync in flight; the messages that arrive meanwhile share the next sync and are then forwarded with one write). It is the floor for any design that forwards a call only once a record of it is on disk, as mcpcage does with audit_sync = \"always\": two hops plus the disk's syncs, and nothing else (no decision, no record of results, no hash chain).")
	r.notes = append(r.notes, "\"mcpcage ask, granted\" is a fourth daemon like the batch one but with default_decision = \"ask\" and a consent (mcpcage grant) covering every tool for the bench client: beside \"mcpcage batch\" (observe mode, which decides every call the same way but forwards it regardless) it shows what a covered call pays for ask mode and tool pinning. Ask mode does not decide calls sent together as a burst (a decision may put a question to the client, and the calls decided before it would wait behind that write), so with 32 in flight it pays a write of its record and a write to the server per call where batch mode pays one of each per burst.")
	r.notes = append(r.notes, "\"mcpcage guard on\" is a fifth daemon like the batch one with the data-flow guard on: the server is labelled, a [[flow]] rule (action log) applies to its own calls and a custom [[detector]] is configured, so every result is digested, scanned by the detectors and the injection heuristics and fingerprinted, every call's arguments are scanned, and every tool.call record carries the run's influence trail. Beside \"mcpcage batch\" it shows what the guard costs per call.")
	if srtWhy != "" {
		r.notes = append(r.notes, "srt (sandbox-runtime) not measured: "+srtWhy)
	}
	warmPath := caged("mcpcage batch", warmd, "everything")
	if err := e.rounds(ctx, c, paths, warmPath, warmd, r); err != nil {
		return err
	}
	r.loadEnd = loadavg()
	big := []path{
		{name: "direct", command: filepath.Join(e.bin, "testserver")},
		caged("mcpcage always", always, "test"),
	}
	e.logf("bench: %d rounds of %d %d-byte results through one session (testserver big_output)", c.bigRounds, c.bigCalls, c.bigBytes)
	if err := e.bigRounds(ctx, c, big, r); err != nil {
		return err
	}
	e.logf("bench: the remote bridge, %d rounds", c.rounds)
	note, err := e.remoteRounds(ctx, c)
	if err != nil {
		return fmt.Errorf("remote bridge: %w", err)
	}
	r.notes = append(r.notes, note)
	e.logf("bench: mcpcaged memory at 0, %v sessions (a fresh daemon)", c.sessions)
	memd, err := e.startDaemon("memory", "always", false)
	if err != nil {
		return err
	}
	if err := e.daemonMemory(ctx, c, memd, caged("mcpcage always", memd, "everything"), paths[0], r); err != nil {
		return err
	}
	for _, d := range []*daemon{always, batch, askd, guardd, warmd, memd} {
		dp, err := firstSessionStart(d.auditLog)
		if err != nil {
			return fmt.Errorf("data path of the %s daemon: %w", d.name, err)
		}
		r.dataPaths = append(r.dataPaths, daemonPath{d.name, dp})
	}
	r.elapsed = time.Since(start)
	return r.write(stdout, c.out)
}

func names(ps []path) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.name)
	}
	return strings.Join(s, ", ")
}

// srtPath is server-everything under sandbox-runtime, or why it cannot
// run here.
func (e *env) srtPath(c config) (path, string) {
	settings := `{"network": {"allowedDomains": [], "deniedDomains": []},
 "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": []}}
`
	if err := os.WriteFile(c.srtSettings, []byte(settings), 0o644); err != nil {
		return path{}, err.Error()
	}
	if _, err := os.Stat(c.srt); err != nil {
		return path{}, fmt.Sprintf("%s missing (bench/deps.sh installs it): %v", c.srt, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.srt, "--settings", c.srtSettings, "true").CombinedOutput()
	if err != nil {
		return path{}, fmt.Sprintf("`srt true` failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return path{name: "srt", command: c.srt, args: []string{"--settings", c.srtSettings, "mcp-server-everything", "stdio"}}, ""
}

// rounds runs every path once per round, in an order rotated each round,
// and records the figures of each.
func (e *env) rounds(ctx context.Context, c config, paths []path, warmPath path, warmd *daemon, r *report) error {
	s := spec{Mode: "round", Tool: "echo", Arguments: map[string]any{"message": "ping"},
		Warm: c.warm, Calls: c.calls, Conc: c.conc, ConcCalls: c.concCalls}
	// The warm daemon's first session is cold; its end prepares the next.
	if _, err := e.openOnly(ctx, warmPath, c.clientLimit); err != nil {
		return fmt.Errorf("first session of the warm daemon: %w", err)
	}
	for round := range c.rounds {
		fsync, err := fdatasyncLatency(c.auditDir, c.fsyncs)
		if err != nil {
			return fmt.Errorf("fdatasync latency in %s: %w", c.auditDir, err)
		}
		r.add("mcpcage always", "fsync50", quantile(fsync, 0.5))
		r.add("mcpcage always", "fsync99", quantile(fsync, 0.99))
		p50 := map[string]float64{}
		p99 := map[string]float64{}
		tputN := map[string]float64{}
		cold := map[string]float64{}
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			if r.dropped[p.name] != "" {
				continue
			}
			cl, err := e.startClient(ctx, p, s, c.clientLimit)
			if err != nil {
				return err
			}
			res, err := cl.read()
			if err == nil {
				extra, server, procs := sessionMem(cl.cmd.Process.Pid, p)
				r.add(p.name, "extra", float64(extra.rss)/1024)
				r.add(p.name, "extraPSS", float64(extra.pss)/1024)
				r.add(p.name, "server", float64(server.rss)/1024)
				r.procs[p.name] = procs
				err = cl.wait()
			} else {
				_ = cl.wait() // the read error says more
			}
			if err != nil {
				if p.name == "srt" && ctx.Err() == nil {
					r.dropped[p.name] = fmt.Sprintf("failed in round %d: %v", round+1, err)
					e.logf("bench: srt dropped: %v", err)
					continue
				}
				return err
			}
			p50[p.name], p99[p.name] = quantile(res.Lat, 0.5), quantile(res.Lat, 0.99)
			tputN[p.name] = res.TputN
			r.add(p.name, "p50", p50[p.name])
			r.add(p.name, "p99", p99[p.name])
			r.add(p.name, "tput1", res.Tput1)
			r.add(p.name, "tputN", res.TputN)
			r.add(p.name, "cold", res.Cold/1000)
			cold[p.name] = res.Cold
		}
		if err := warmd.warmReady(); err != nil {
			return err
		}
		warmCold, err := e.openOnly(ctx, warmPath, c.clientLimit)
		if err != nil {
			return fmt.Errorf("warm start: %w", err)
		}
		r.add(warmPath.name, "coldWarm", warmCold/1000)
		r.add(warmPath.name, "coldWarmAdded", (warmCold-cold["direct"])/1000)
		for name := range p50 {
			if name != "direct" {
				r.add(name, "coldAdded", (cold[name]-cold["direct"])/1000)
				r.add(name, "added50", p50[name]-p50["direct"])
				r.add(name, "added99", p99[name]-p99["direct"])
				r.add(name, "tputRatio", tputN[name]/tputN["direct"])
			}
		}
		e.logf("bench: round %d/%d done, p50 µs: %s; fdatasync p50 %.0f µs", round+1, c.rounds, fmtMap(p50), quantile(fsync, 0.5))
	}
	return nil
}

// openOnly opens one session of p, until tools/list is answered, closes
// it, and returns its cold start in µs.
func (e *env) openOnly(ctx context.Context, p path, limit time.Duration) (float64, error) {
	cl, err := e.startClient(ctx, p, spec{Mode: "open", Tool: "echo"}, limit)
	if err != nil {
		return 0, err
	}
	res, err := cl.read()
	if err != nil {
		return 0, err // read waited for the client
	}
	return res.Cold, cl.wait()
}

func fmtMap(m map[string]float64) string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s %.0f", k, v))
	}
	return strings.Join(s, ", ")
}

// bigRounds times big results through one session per round and path.
func (e *env) bigRounds(ctx context.Context, c config, paths []path, r *report) error {
	s := spec{Mode: "big", Tool: "big_output", Arguments: map[string]any{"bytes": c.bigBytes}, Calls: c.bigCalls}
	for round := range c.bigRounds {
		ms, raw := map[string]float64{}, map[string]float64{}
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			cl, err := e.startClient(ctx, p, s, c.clientLimit)
			if err != nil {
				return err
			}
			res, err := cl.read()
			if werr := cl.wait(); err == nil {
				err = werr
			}
			if err != nil {
				return err
			}
			ms[p.name], raw[p.name] = quantile(res.Lat, 0.5)/1000, quantile(res.Raw, 0.5)/1000
			r.add(p.name, "big", ms[p.name])
			r.add(p.name, "bigRaw", raw[p.name])
		}
		for name, v := range ms {
			if name != "direct" {
				r.add(name, "bigAdded", v-ms["direct"])
				r.add(name, "bigRawAdded", raw[name]-raw["direct"])
			}
		}
	}
	return nil
}

// daemonMemory reads a fresh mcpcaged's memory with no session, then with
// each count of open sessions; with the last count open it runs the scale
// rounds (beside as many sessions of direct) and reads the memory again;
// then once all sessions are closed.
func (e *env) daemonMemory(ctx context.Context, c config, d *daemon, p, direct path, r *report) error {
	pid := d.cmd.Process.Pid
	time.Sleep(time.Second)
	r.daemonMem = append(r.daemonMem, daemonSample{"0 (fresh daemon)", 0, memOf(pid)})
	s := spec{Mode: "hold", Tool: "echo", Arguments: map[string]any{"message": "ping"}}
	cl, err := e.startClient(ctx, p, s, c.holdLimit)
	if err != nil {
		return err
	}
	for _, n := range c.sessions {
		t0 := time.Now()
		res, err := cl.ask(fmt.Sprintf("open %d", n))
		if err != nil {
			return err
		}
		r.scaleSessions = res.Open
		r.daemonMem = append(r.daemonMem, daemonSample{strconv.Itoa(res.Open), res.Open, memOf(pid)})
		e.logf("bench: %d sessions open (%.1fs)", res.Open, time.Since(t0).Seconds())
	}
	if c.scaleCalls > 0 {
		dcl, err := e.startClient(ctx, direct, s, c.holdLimit)
		if err != nil {
			return err
		}
		res, err := dcl.ask(fmt.Sprintf("open %d", r.scaleSessions))
		if err != nil {
			return err
		}
		if res.Open != r.scaleSessions {
			return fmt.Errorf("direct: %d sessions open, want %d", res.Open, r.scaleSessions)
		}
		err = e.scale(c, []scaleClient{{p.name, cl, pid}, {direct.name, dcl, 0}}, r)
		if err := errors.Join(err, dcl.send("close"), dcl.wait()); err != nil {
			return err
		}
		n := r.scaleSessions
		r.daemonMem = append(r.daemonMem, daemonSample{fmt.Sprintf("%d (after the scale calls)", n), n, memOf(pid)})
	}
	t0 := time.Now()
	if err := errors.Join(cl.send("close"), cl.wait()); err != nil {
		return err
	}
	e.logf("bench: sessions closed, the client's pipes released (%.1fs)", time.Since(t0).Seconds())
	// The daemon ends a session once its server has exited.
	if err := waitFor(30*time.Second, func() error {
		for _, q := range scan() {
			if len(q.args) > 0 && filepath.Base(q.args[0]) == "containerd-shim-runc-v2" && slices.Contains(q.args, d.namespace) {
				return errors.New("sessions still ending")
			}
		}
		return nil
	}); err != nil {
		return err
	}
	time.Sleep(time.Second)
	r.daemonMem = append(r.daemonMem, daemonSample{"0 (all closed)", 0, memOf(pid)})
	return nil
}

// scaleClient is one column of the scale figures: a client holding the
// sessions, and the pid of the daemon whose CPU time is read (0: none).
type scaleClient struct {
	col string
	cl  *client
	pid int
}

// scale has every session of each client make calls, all sessions of one
// client at once, the clients one after the other (order rotated each
// round): a warm-up, then c.scaleRounds timed rounds. Each round records
// the per-call p50 and p99 over all calls, their total rate, and the
// daemon's CPU time over the round divided by the calls.
func (e *env) scale(c config, clients []scaleClient, r *report) error {
	for _, sc := range clients {
		if _, err := sc.cl.ask(fmt.Sprintf("calls %d", c.scaleWarm)); err != nil {
			return fmt.Errorf("%s: %w", sc.col, err)
		}
	}
	for round := range c.scaleRounds {
		for i := range clients {
			sc := clients[(i+round)%len(clients)]
			var cpu0, cpu1 time.Duration
			var err error
			if sc.pid != 0 {
				if cpu0, err = cpuTime(sc.pid); err != nil {
					return err
				}
			}
			res, err := sc.cl.ask(fmt.Sprintf("calls %d", c.scaleCalls))
			if err != nil {
				return fmt.Errorf("%s: %w", sc.col, err)
			}
			if len(res.Lat) == 0 {
				return fmt.Errorf("%s: scale round %d: no calls timed", sc.col, round+1)
			}
			r.add(sc.col, "scale50", quantile(res.Lat, 0.5))
			r.add(sc.col, "scale99", quantile(res.Lat, 0.99))
			r.add(sc.col, "scaleTput", res.TputN)
			cpuText := ""
			if sc.pid != 0 {
				if cpu1, err = cpuTime(sc.pid); err != nil {
					return err
				}
				cpu := float64((cpu1 - cpu0).Microseconds()) / float64(len(res.Lat))
				r.add(sc.col, "scaleCPU", cpu)
				cpuText = fmt.Sprintf(", mcpcaged CPU %.0f µs/call", cpu)
			}
			e.logf("bench: scale round %d/%d, %s: %d calls, p50 %.0f µs, p99 %.0f µs%s",
				round+1, c.scaleRounds, sc.col, len(res.Lat), quantile(res.Lat, 0.5), quantile(res.Lat, 0.99), cpuText)
		}
	}
	return nil
}
