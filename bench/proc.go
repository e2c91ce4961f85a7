package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// proc is one process as /proc shows it.
type proc struct {
	pid, ppid int
	comm      string
	args      []string
}

// scan lists every process.
func scan() map[int]proc {
	ents, _ := os.ReadDir("/proc")
	ps := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		open, close := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(string(stat[close+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		ps[pid] = proc{pid: pid, ppid: ppid, comm: string(stat[open+1 : close]), args: args}
	}
	return ps
}

// tree is roots and all their descendants.
func tree(ps map[int]proc, roots ...int) []int {
	children := map[int][]int{}
	for _, p := range ps {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	for todo := roots; len(todo) > 0; {
		pid := todo[0]
		todo = append(todo[1:], children[pid]...)
		out = append(out, pid)
	}
	return out
}

// isServer reports whether p is an instance of server-everything: node
// running the mcp-server-everything script, not a wrapper around one
// (srt's own node process has it further down its arguments).
func (p proc) isServer() bool {
	return p.comm == "node" && len(p.args) > 1 && filepath.Base(p.args[1]) == "mcp-server-everything"
}

// mem is resident memory in KiB: RSS (shared pages counted in full) and
// PSS (shared pages split among their users).
type mem struct{ rss, pss int64 }

func (m mem) add(o mem) mem { return mem{m.rss + o.rss, m.pss + o.pss} }

// memOf reads a process's memory from smaps_rollup; zero once it is gone.
func memOf(pid int) mem {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return mem{}
	}
	var m mem
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			m.rss = n
		case "Pss:":
			m.pss = n
		}
	}
	return m
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time a process has used, user and system, all its
// threads (not its children): utime+stime of /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after "(comm)": state is field 3, utime 14 and stime 15.
	var fields []string
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		fields = strings.Fields(string(stat[i+1:]))
	}
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %.100q", pid, stat)
	}
	utime, uerr := strconv.ParseInt(fields[11], 10, 64)
	stime, serr := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(uerr, serr); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// started holds the pids of the processes an exec.Cmd of ours started
// (and waits for): everything else re-parented to us is an orphan.
var started sync.Map

func track(pid int)        { started.Store(pid, true) }
func tracked(pid int) bool { _, ok := started.Load(pid); return ok }
