// Package probe finds out which eBPF hooks this kernel lets mcpcaged use,
// by loading and attaching one tiny program per hook kind, never by
// reading kernel versions or the lockdown mode: distributions and
// lockdown settings differ in what they allow (the kernel mcpcage is
// developed on loads tracepoints, raw tracepoints, tp_btf, cgroup socket
// hooks and bpf_send_signal, but refuses fentry and BPF-LSM with EPERM).
//
// Probing attaches a syscall tracepoint for a moment, which puts every
// thread of the host on the tracing slow path while it is attached; run
// it once at start-up.
package probe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Hook kinds mcpcage's eBPF layer can use.
const (
	Tracepoint     = "tracepoint"       // syscalls:sys_enter_* (observation)
	RawTracepoint  = "raw_tracepoint"   // sched_process_exec (exec observation)
	TpBTF          = "tp_btf"           // BTF-typed raw tracepoints
	CgroupSockAddr = "cgroup_sock_addr" // connect4/6, sendmsg4/6 (egress enforcement)
	SendSignal     = "send_signal"      // bpf_send_signal from a tracepoint (kill-on-open)
	Fentry         = "fentry"           // trampoline programs
	LSM            = "lsm"              // BPF-LSM file_open (deny in the kernel)
	RingBuffer     = "ringbuf"          // event transport
)

// Result is the outcome of one probe.
type Result struct {
	OK  bool
	Err string // why not, when !OK
}

// Results maps hook kinds to outcomes.
type Results map[string]Result

// String renders "kind=yes|no (reason)" pairs, sorted.
func (r Results) String() string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		if r[k].OK {
			fmt.Fprintf(&b, "%s=yes", k)
		} else {
			fmt.Fprintf(&b, "%s=no (%s)", k, r[k].Err)
		}
	}
	return b.String()
}

// Run probes every hook kind. cgroupParent is a cgroup v2 directory under
// which a temporary child is made for the cgroup hook probe.
func Run(cgroupParent string) Results {
	res := Results{}
	if err := rlimit.RemoveMemlock(); err != nil {
		for _, k := range []string{Tracepoint, RawTracepoint, TpBTF, CgroupSockAddr, SendSignal, Fentry, LSM, RingBuffer} {
			res[k] = Result{Err: "memlock: " + err.Error()}
		}
		return res
	}
	tracefsErr := EnsureTracefs()
	record := func(kind string, err error) {
		if err == nil {
			res[kind] = Result{OK: true}
			return
		}
		res[kind] = Result{Err: short(err)}
	}
	if tracefsErr != nil {
		record(Tracepoint, tracefsErr)
		record(SendSignal, tracefsErr)
	} else {
		record(Tracepoint, attachTracepoint(nil))
		record(SendSignal, attachTracepoint(asm.Instructions{
			asm.Mov.Imm(asm.R1, 0), // signal 0: checks the helper, signals nobody
			asm.FnSendSignal.Call(),
		}))
	}
	record(RawTracepoint, rawTracepoint())
	record(TpBTF, tracing(ebpf.AttachTraceRawTp, "sched_process_exec"))
	record(Fentry, tracing(ebpf.AttachTraceFEntry, "security_file_open"))
	record(LSM, lsm())
	record(CgroupSockAddr, cgroupConnect(cgroupParent))
	record(RingBuffer, ringbuf())
	return res
}

func short(err error) string {
	switch {
	case errors.Is(err, os.ErrPermission):
		return "EPERM: refused by the kernel (lockdown or configuration)"
	case errors.Is(err, ebpf.ErrNotSupported):
		return "not supported by this kernel"
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i > 0 {
		s = s[:i]
	}
	return s
}

func ret0(prefix asm.Instructions, v int32) asm.Instructions {
	return append(append(asm.Instructions{}, prefix...), asm.Mov.Imm(asm.R0, v), asm.Return())
}

func attachTracepoint(body asm.Instructions) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.TracePoint, License: "GPL", Instructions: ret0(body, 0)})
	if err != nil {
		return err
	}
	defer func() { _ = prog.Close() }()
	l, err := link.Tracepoint("syscalls", "sys_enter_getppid", prog, nil)
	if err != nil {
		return err
	}
	return l.Close()
}

func rawTracepoint() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: ret0(nil, 0)})
	if err != nil {
		return err
	}
	defer func() { _ = prog.Close() }()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

func tracing(at ebpf.AttachType, target string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: at, AttachTo: target, License: "GPL", Instructions: ret0(nil, 0)})
	if err != nil {
		return err
	}
	defer func() { _ = prog.Close() }()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: at})
	if err != nil {
		return err
	}
	return l.Close()
}

func lsm() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "file_open", License: "GPL", Instructions: ret0(nil, 0)})
	if err != nil {
		return err
	}
	defer func() { _ = prog.Close() }()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

func cgroupConnect(parent string) error {
	if parent == "" {
		return errors.New("no cgroup v2 hierarchy found")
	}
	dir, err := os.MkdirTemp(parent, "mcpcage-probe-")
	if err != nil {
		return fmt.Errorf("create probe cgroup: %w", err)
	}
	defer func() { _ = os.Remove(dir) }() // empty, and its program is detached by then
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSockAddr, AttachType: ebpf.AttachCGroupInet4Connect, License: "GPL", Instructions: ret0(nil, 1)})
	if err != nil {
		return err
	}
	defer func() { _ = prog.Close() }()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

func ringbuf() error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		return err
	}
	return m.Close()
}

// CgroupV2Root returns the mount point of the cgroup v2 hierarchy: the
// unified one on hybrid hosts, /sys/fs/cgroup on pure v2 hosts.
func CgroupV2Root() string {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(p, "cgroup.controllers")); err == nil {
			return p
		}
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil && isCgroup2(p) {
			return p
		}
	}
	return ""
}

func isCgroup2(p string) bool {
	_, err := os.Stat(filepath.Join(p, "cgroup.subtree_control"))
	return err == nil
}

// EnsureTracefs mounts tracefs at /sys/kernel/tracing when no tracefs or
// debugfs is mounted: tracepoint programs are attached by the event ids
// found there.
func EnsureTracefs() error {
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount tracefs on /sys/kernel/tracing: %w", err)
	}
	return nil
}
