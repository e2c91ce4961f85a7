// Package identity works out who is behind a shim connection, from the
// kernel, never from the client's word: the delegating user is the
// socket's peer uid; the agent is the process that spawned the shim (its
// parent), identified by its resolved executable, the SHA-256 of that
// executable, its uid and its start time, and, when the executable is an
// interpreter or a shell, by the script it runs (path and SHA-256).
//
// Binding: the agent is the image that forked the shim, not whatever the
// parent runs when the daemon looks, nor a process that became the
// shim's parent without forking it. With the kernel's record
// (Hasher.Stamps, the eBPF stamper), a shim whose recorded forker (the
// process that called fork/clone, by pid and start time, any of its
// threads) is not its parent is refused (ErrNotParent: a child of the
// agent that used clone(CLONE_PARENT), or a subreaper that inherited an
// orphaned shim), and so is a parent that exec'd after it forked the shim
// (ErrBorrowed). The shim itself must be mcpcage (ShimRule), exec'd once
// since its fork (ErrNotShim, ErrNotDirect): a program the agent was
// made to start could otherwise connect, or set up pipes and exec
// mcpcage, and speak for the agent. An exec or fork the kernel failed to record makes the
// binding "unverified" (a lost exec: the parent's older stamp may stand)
// or refuses (a lost fork of the shim). Without the record, a same-user
// process can fork the shim and then exec a trusted agent's binary, and
// the session runs as that agent: the daemon says so in its status. The
// fork record holds pids of the initial pid namespace: mcpcaged must run
// there (as its systemd unit does).
//
// Races: pidfds pin the processes while they are examined (AgentOf takes
// the shim's from the socket, as it was when it connected); the parent's
// exec record is read before and after everything else about it, and the
// shim's parent is checked again at the end, so neither a recycled pid, a
// concurrent exec nor a re-parented shim can slip through.
//
// Scripts (see script.go): the script is the first operand of the
// interpreter's argv at exec (the kernel's copy; without the eBPF layer,
// /proc/PID/cmdline, which the process can rewrite), after the options
// the daemon knows for that interpreter; relative paths resolve against
// the working directory the process had at exec. Options and environment
// variables that load other code (node -r, python -c, BASH_ENV, ...) and
// options the daemon does not know leave the script unidentified: the
// agent is then the bare interpreter. The digest is of the file now, not
// of what the interpreter read at start, and modules the script imports
// are not covered.
package identity

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Process is one examined process.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks since boot (/proc/PID/stat field 22)
	UID       uint32 `json:"uid"`
	Exe       string `json:"exe"`
	SHA256    string `json:"sha256"`
	// Interpreter: Exe is an interpreter or a shell (Script says what
	// it runs).
	Interpreter bool   `json:"interpreter,omitempty"`
	Script      Script `json:"script,omitzero"`
	// Binding is how the agent was bound to the image that forked the
	// shim: BoundKernel, or why not ("unverified: ...", "weaker: ...").
	Binding string `json:"binding"`
}

// Script is what an interpreter runs.
type Script struct {
	Path   string `json:"path,omitempty"`   // resolved, as the process sees it
	SHA256 string `json:"sha256,omitempty"` // of the file now
	Why    string `json:"unidentified,omitempty"`
}

// Instance names a running process uniquely: pid@start_time.
func (p Process) Instance() string { return fmt.Sprintf("%d@%d", p.PID, p.StartTime) }

// Describe is the agent's identity for people: the executable, and the
// script for an interpreter.
func (p Process) Describe() string {
	if !p.Interpreter {
		return p.Exe
	}
	if p.Script.Path == "" {
		return p.Exe + " (any script: " + p.Script.Why + ")"
	}
	return p.Exe + " " + p.Script.Path + " (sha256 " + short(p.Script.SHA256) + ")"
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// ErrGone is returned when a process exits (or its pid is reused) while
// it is being examined.
var ErrGone = errors.New("process went away while being identified")

// WeakBinding is the Binding without the kernel's exec record.
const WeakBinding = "weaker: no kernel exec record (the eBPF layer is missing): a process could fork mcpcage run, then exec this agent's program"

// Agent returns the parent of shimPID: the agent that spawned the shim.
// Prefer AgentOf with a pidfd taken when the shim connected: a pid can be
// reused in between.
func (h *Hasher) Agent(shimPID int, rule ShimRule) (Process, error) {
	shimFD, err := unix.PidfdOpen(shimPID, 0)
	if err != nil {
		return Process{}, fmt.Errorf("pidfd of shim %d: %w", shimPID, err)
	}
	defer func() { _ = unix.Close(shimFD) }()
	return h.agent(shimFD, shimPID, rule)
}

// AgentOf returns the parent of the shim behind shimFD, a pidfd: the
// process as it was when the pidfd was taken (SO_PEERPIDFD at connect).
// Its pid is read from the pidfd, and every later look at /proc is
// checked against the pidfd, so a recycled pid cannot stand in for it.
func (h *Hasher) AgentOf(shimFD int, rule ShimRule) (Process, error) {
	pid, err := PidOf(shimFD)
	if err != nil {
		return Process{}, err
	}
	return h.agent(shimFD, pid, rule)
}

// PidOf returns the pid of the process behind pidfd, as this process's
// /proc names it (ErrGone once it has exited).
func PidOf(pidfd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return 0, fmt.Errorf("read pidfd info: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				return 0, fmt.Errorf("malformed pidfd info %q", line)
			}
			if pid <= 0 {
				return 0, ErrGone
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("fd %d is not a pidfd", pidfd)
}

func (h *Hasher) agent(shimFD, shimPID int, rule ShimRule) (Process, error) {
	ppid, _, err := stat(shimPID)
	if err != nil {
		return Process{}, err
	}
	// /proc/shimPID was the shim's: the pidfd pins the pid while it lives.
	if err := unix.PidfdSendSignal(shimFD, 0, nil, 0); err != nil {
		return Process{}, ErrGone
	}
	if ppid <= 1 {
		return Process{}, fmt.Errorf("shim %d has no parent process (it was orphaned)", shimPID)
	}
	// What the shim runs, before its record is read (below): see
	// checkDirect.
	shimExe, err := checkShim(shimPID, rule)
	if err != nil {
		return Process{}, err
	}
	fd, err := unix.PidfdOpen(ppid, 0)
	if err != nil {
		return Process{}, fmt.Errorf("pidfd of agent %d: %w", ppid, err)
	}
	defer func() { _ = unix.Close(fd) }()
	_, start, err := stat(ppid)
	if err != nil {
		return Process{}, err
	}
	// The parent's exec record, before anything is read about its image:
	// the same record after it proves no exec came in between.
	var before Stamp
	var beforeOK bool
	if h.Stamps != nil {
		if before, beforeOK, err = h.Stamps.Lookup(fd); err != nil {
			return Process{}, err
		}
	}
	p := Process{PID: ppid, StartTime: start, Binding: WeakBinding}
	if p.UID, err = uid(ppid); err != nil {
		return Process{}, err
	}
	if p.Exe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid)); err != nil {
		return Process{}, fmt.Errorf("resolve agent %d executable: %w", ppid, err)
	}
	p.Exe = strings.TrimSuffix(p.Exe, " (deleted)")
	if err := exeHere(ppid, p.Exe); err != nil {
		return Process{}, err
	}
	if p.SHA256, err = h.sum(fmt.Sprintf("/proc/%d/exe", ppid)); err != nil {
		return Process{}, err
	}
	var st *Stamp
	if beforeOK {
		st = &before
	}
	env, cut, unchecked, err := agentEnviron(ppid, st, h.Stamps != nil)
	if err != nil {
		return Process{}, err
	}
	if unchecked == "" && st != nil && h.Stamps.Lost().Execs > st.Lost {
		// An exec left unstamped keeps the older stamp, and its copy.
		unchecked = fmt.Sprintf("possibly not its own: the kernel failed to record %d execs since its stamp", h.Stamps.Lost().Execs-st.Lost)
	}
	// A compiled agent's environment is judged after its binding: a
	// borrowed or foreign parent is refused as that first.
	var envRefused error
	if g, ok := interpreterOf(p.Exe); ok {
		p.Interpreter = true
		p.Script = h.script(ppid, p.Exe, g, st, agentEnv{env, cut, unchecked})
	} else if k := compiledCut(cut); k != "" {
		envRefused = fmt.Errorf("%w: %s whether it loads other code into %s (start the client without it)", ErrDisguised, tooLong(k), p.Exe)
	} else if unchecked != "" {
		// An interpreter is then the bare interpreter (any script); a
		// compiled agent would be any code at all.
		envRefused = fmt.Errorf("%w: its environment was %s, so mcpcaged cannot tell whether a variable loads other code into %s", ErrDisguised, unchecked, p.Exe)
	} else if k := loaderInjected(env); k != "" {
		envRefused = fmt.Errorf("%w: environment variable %s loads other code into %s (start the client without it)", ErrDisguised, k, p.Exe)
	}
	if h.Stamps != nil {
		after, afterOK, err := h.Stamps.Lookup(fd)
		if err != nil {
			return Process{}, err
		}
		if afterOK != beforeOK || after.Exec != before.Exec {
			return Process{}, fmt.Errorf("%w (while it was being identified)", ErrBorrowed)
		}
		if before.Pending || after.Pending {
			// Past its point of no return, its image not loaded: /proc
			// may show the program it execs while the stamp is still
			// the one it forked the shim under.
			return Process{}, fmt.Errorf("%w (its exec of %s was under way)", ErrBorrowed, p.Exe)
		}
		shim, shimOK, err := h.Stamps.Lookup(shimFD)
		if err != nil {
			return Process{}, err
		}
		if p.Binding, err = bind(binding{parent: after, parentOK: afterOK, shim: shim, shimOK: shimOK,
			parentPID: ppid, parentTicks: start, since: h.Stamps.Since(), lost: h.Stamps.Lost(), nestedPIDNS: inNestedPIDNS()}); err != nil {
			if errors.Is(err, ErrNotParent) {
				return Process{}, fmt.Errorf("%w; its parent runs %s", err, p.Exe)
			}
			return Process{}, fmt.Errorf("%w; it now runs %s", err, p.Exe)
		}
		unverified, err := checkDirect(shim, shimOK, rule, h.Stamps.Since(), p.Exe)
		if err != nil {
			return Process{}, fmt.Errorf("%w; its parent runs %s", err, p.Exe)
		}
		if unverified != "" && p.Binding == BoundKernel {
			p.Binding = unverified
		}
	}
	// The shim's own environment, where it matters (a dynamically
	// linked mcpcage): from its exec stamp, else /proc.
	if shimExe.dynamic {
		var st *Stamp
		if h.Stamps != nil {
			shim, shimOK, err := h.Stamps.Lookup(shimFD)
			if err != nil {
				return Process{}, err
			}
			if shimOK {
				st = &shim
			}
		}
		env, cut, unchecked, err := agentEnviron(shimPID, st, h.Stamps != nil)
		if err != nil {
			return Process{}, err
		}
		if err := checkShimEnv(shimExe, env, cut, unchecked); err != nil {
			return Process{}, err
		}
	}
	if envRefused != nil {
		return Process{}, envRefused
	}
	// Still the same processes? The pidfds pin the pids; the start time
	// proves /proc/PID named the same process throughout, and the shim's
	// parent must still be the process examined.
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
		return Process{}, ErrGone
	}
	if _, again, err := stat(ppid); err != nil || again != start {
		return Process{}, ErrGone
	}
	if err := unix.PidfdSendSignal(shimFD, 0, nil, 0); err != nil {
		return Process{}, ErrGone
	}
	if pp, _, err := stat(shimPID); err != nil || pp != ppid {
		return Process{}, ErrGone
	}
	return p, nil
}

// stat returns a process's parent pid and start time.
func stat(pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/%d/stat: %w", pid, ErrGone)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])             // field 4
	st, err2 := strconv.ParseUint(f[19], 10, 64) // field 22
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return ppid, st, nil
}

func uid(pid int) (uint32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read /proc/%d/status: %w", pid, ErrGone)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, err := strconv.ParseUint(f[0], 10, 32)
				return uint32(n), err
			}
		}
	}
	return 0, fmt.Errorf("no Uid in /proc/%d/status", pid)
}

// Alive reports whether process pid still runs with that start time (a
// later process that reused the pid is not it).
func Alive(pid int, start uint64) bool {
	_, st, err := stat(pid)
	return err == nil && st == start
}
