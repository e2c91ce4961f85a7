package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// report gathers the figures of a run, per path and per round.
type report struct {
	c         config
	paths     []string
	figs      map[string]map[string][]float64 // path → figure → one value per round
	procs     map[string][]string             // path → the extra processes of one session
	dropped   map[string]string               // path → why it was not measured
	daemonMem []daemonSample
	// scaleSessions is how many sessions were open for the scale rows.
	scaleSessions int
	dataPaths     []daemonPath // each daemon's first session, in order
	notes         []string
	elapsed       time.Duration
	loadStart     string // /proc/loadavg's 1, 5 and 15 minute figures
	loadEnd       string // after the rounds
}

type daemonSample struct {
	label    string
	sessions int
	mem      mem
}

type daemonPath struct {
	daemon string
	path   dataPath
}

func newReport(c config, paths []path) *report {
	r := &report{c: c, figs: map[string]map[string][]float64{}, procs: map[string][]string{}, dropped: map[string]string{},
		loadStart: loadavg()}
	for _, p := range paths {
		r.paths = append(r.paths, p.name)
	}
	return r
}

func (r *report) add(path, fig string, v float64) {
	if r.figs[path] == nil {
		r.figs[path] = map[string][]float64{}
	}
	r.figs[path][fig] = append(r.figs[path][fig], v)
}

// row is one line of the table: a figure of every path.
type row struct {
	label, fig string
	digits     int
}

var rows = []row{
	{"tools/call echo, p50 µs", "p50", 0},
	{"tools/call echo, p99 µs", "p99", 0},
	{"added p50 vs direct, µs", "added50", 0},
	{"added p99 vs direct, µs", "added99", 0},
	{"fdatasync of a 400 B append on the audit log's disk, p50 µs", "fsync50", 0},
	{"fdatasync of a 400 B append on the audit log's disk, p99 µs", "fsync99", 0},
	{"calls/s, 1 in flight", "tput1", 0},
	{"calls/s, 32 in flight", "tputN", 0},
	{"calls/s, 32 in flight, ÷ direct's in the same round", "tputRatio", 2},
	{"cold start (spawn → tools/list answered), ms", "cold", 0},
	{"cold start added vs direct, ms", "coldAdded", 0},
	{"cold start from a warm sandbox, ms", "coldWarm", 0},
	{"cold start from a warm sandbox, added vs direct, ms", "coldWarmAdded", 0},
	{"16 MiB result (test server), SDK client, ms", "big", 0},
	{"16 MiB result, SDK client, added ms vs direct", "bigAdded", 0},
	{"16 MiB result, plain line reader, ms", "bigRaw", 0},
	{"16 MiB result, plain line reader, added ms vs direct", "bigRawAdded", 0},
	{"extra processes of one session, RSS MiB", "extra", 1},
	{"extra processes of one session, PSS MiB", "extraPSS", 1},
	{"the server's own RSS, MiB", "server", 1},
}

// scaleRows follow the daemon's memory: N sessions open on the "always"
// daemon, each making calls one at a time, all at once; and as many
// direct sessions in another client, in alternate rounds.
var scaleRows = []row{
	{"per-call p50 µs", "scale50", 0},
	{"per-call p99 µs", "scale99", 0},
	{"calls/s, all sessions together", "scaleTput", 0},
	{"mcpcaged CPU time (user+system) per call, µs", "scaleCPU", 0},
}

func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| figure | " + strings.Join(r.paths, " | ") + " |\n|---|")
	b.WriteString(strings.Repeat("---|", len(r.paths)) + "\n")
	figures := func(rows []row, prefix string) {
		for _, rw := range rows {
			if strings.HasPrefix(rw.fig, "tputN") || rw.fig == "tputRatio" {
				rw.label = strings.Replace(rw.label, "32 in flight", fmt.Sprintf("%d in flight", r.c.conc), 1)
			}
			if strings.HasPrefix(rw.fig, "big") {
				rw.label = strings.Replace(rw.label, "16 MiB", sizeLabel(r.c.bigBytes), 1)
			}
			b.WriteString("| " + prefix + rw.label + " |")
			for _, p := range r.paths {
				b.WriteString(" " + spreadOf(r.figs[p][rw.fig]).format(rw.digits) + " |")
			}
			b.WriteString("\n")
		}
	}
	figures(rows, "")
	for _, s := range r.daemonMem {
		label := "mcpcaged RSS MiB, sessions open: " + s.label
		b.WriteString("| " + label + " |")
		for _, p := range r.paths {
			cell := "—"
			if p == "mcpcage always" {
				cell = fmt.Sprintf("%.1f (PSS %.1f)", float64(s.mem.rss)/1024, float64(s.mem.pss)/1024)
			}
			b.WriteString(" " + cell + " |")
		}
		b.WriteString("\n")
	}
	if r.scaleSessions > 0 && r.c.scaleCalls > 0 {
		figures(scaleRows, fmt.Sprintf("%d sessions × %d calls each, all at once: ", r.scaleSessions, r.c.scaleCalls))
	}
	return b.String()
}

func sizeLabel(n int) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}

// write prints the report and writes it to file.
func (r *report) write(stdout io.Writer, file string) error {
	var b strings.Builder
	b.WriteString("# mcpcage benchmarks (make bench)\n\n")
	for _, line := range r.header() {
		b.WriteString("- " + line + "\n")
	}
	b.WriteString("\n" + r.table() + "\n## Targets\n\n")
	for _, t := range r.targets() {
		b.WriteString("- " + t + "\n")
	}
	b.WriteString("\n## Notes\n\n")
	for _, p := range r.paths {
		if procs := r.procs[p]; len(procs) > 0 {
			r.notes = append(r.notes, fmt.Sprintf("Extra processes of one %s session: %s.", p, countNames(procs)))
		}
	}
	for p, why := range r.dropped {
		r.notes = append(r.notes, fmt.Sprintf("%s: %s", p, why))
	}
	for _, n := range r.notes {
		b.WriteString("- " + n + "\n")
	}
	_, err := fmt.Fprint(stdout, b.String())
	return errors.Join(err, os.WriteFile(file, []byte(b.String()), 0o644))
}

// countNames folds repeated names: "bash ×3, bwrap".
func countNames(names []string) string {
	var out []string
	for i := 0; i < len(names); {
		j := i
		for j < len(names) && names[j] == names[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s ×%d", names[i], j-i))
		} else {
			out = append(out, names[i])
		}
		i = j
	}
	return strings.Join(out, ", ")
}

// header describes the machine, the software and the run.
func (r *report) header() []string {
	cpu := field("/proc/cpuinfo", "model name")
	memKiB := field("/proc/meminfo", "MemTotal")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	commit := cmdOut(r.c.repo, "git", "rev-parse", "--short", "HEAD")
	if cmdOut(r.c.repo, "git", "status", "--porcelain", "--untracked-files=no") != "" {
		commit += " (work tree has uncommitted changes)"
	}
	everything, _ := exec.LookPath("mcp-server-everything")
	everything, _ = filepath.EvalSymlinks(everything)
	return []string{
		r.dataPathLine(),
		fmt.Sprintf("Machine: %d CPUs (nproc), %s, %s memory", runtime.NumCPU(), cpu, memKiB),
		"Kernel: " + strings.TrimSpace(string(kernel)),
		"Commit: " + commit,
		fmt.Sprintf("Date: %s; the run took %s", time.Now().UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second)),
		fmt.Sprintf("Load average (1, 5, 15 min) before the rounds: %s; after them: %s (above about 2, other work shares the machine)", r.loadStart, r.loadEnd),
		fmt.Sprintf("Software: node %s, @modelcontextprotocol/sdk %s (client), server-everything %s, sandbox-runtime %s, %s, runc %s",
			cmdOut("", "node", "--version"),
			pkgVersion(filepath.Join(r.c.repo, "testdata/tsclient/node_modules/@modelcontextprotocol/sdk")),
			pkgVersion(everything),
			pkgVersion(filepath.Join(r.c.repo, "bench/_deps/node_modules/@anthropic-ai/sandbox-runtime")),
			"containerd "+nth(strings.Fields(cmdOut("", "containerd", "--version")), 2),
			strings.TrimPrefix(firstLine(cmdOut("", "runc", "--version")), "runc version ")),
	}
}

// dataPathLine says how the mcpcage sessions' data flowed, from the first
// session.start record of each daemon's audit log.
func (r *report) dataPathLine() string {
	const what = "Data path of the mcpcage sessions (first session.start audit record of each daemon)"
	if len(r.dataPaths) == 0 {
		return what + ": not read"
	}
	var names, each []string
	same := true
	for _, d := range r.dataPaths {
		names = append(names, d.daemon)
		each = append(each, d.daemon+": "+d.path.String())
		same = same && d.path == r.dataPaths[0].path
	}
	if same {
		return fmt.Sprintf("%s: %s (%s)", what, r.dataPaths[0].path, strings.Join(names, ", "))
	}
	return what + ": " + strings.Join(each, "; ")
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// field is the value of the first "key: value" line of a /proc file.
func field(file, key string) string {
	b, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == key {
			v = strings.TrimSpace(v)
			if strings.HasSuffix(v, " kB") {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
			return v
		}
	}
	return "?"
}

func cmdOut(dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func nth(xs []string, i int) string {
	if i < len(xs) {
		return xs[i]
	}
	return "?"
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// pkgVersion is the version in the package.json of the npm package at or
// above path.
func pkgVersion(path string) string {
	for dir := path; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "package.json"))
		if err != nil {
			continue
		}
		var p struct{ Version string }
		if json.NewDecoder(bytes.NewReader(b)).Decode(&p) == nil && p.Version != "" {
			return p.Version
		}
	}
	return "?"
}
