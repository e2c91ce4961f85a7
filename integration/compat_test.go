package integration

import (
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// 32-bit system calls (int $0x80 on x86_64, x32, AArch32 on arm64) do
// not pass the kernel's syscall tracepoints: an open made through that entry
// would escape deny_paths' kernel check and every file record. The
// sandbox's seccomp filter must refuse them. The test takes the filters
// the kernel really installed in a running server (ptrace's
// PTRACE_SECCOMP_GET_FILTER) and runs them, as the kernel would, on a
// 32-bit open(2) of a planted key and on the native one: the native open
// is allowed, the 32-bit one must end in a kill or an error. Where the
// kernel has a 32-bit entry (not on this PVM guest, where int $0x80
// faults), the attack itself runs too and must not read the key.
func TestThirtyTwoBitSystemCallsRefused(t *testing.T) {
	dir := project(t)
	d := projDaemon(t, dir)
	c := d.connect(t, "proj", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/work/notes.txt"}); got != "fine" {
		t.Fatalf("read_file: %q", got)
	}
	plantKey(t, dir) // after launch: not masked, so only the kernel's layers stand
	_, pids := d.sessionProcs(t)
	if len(pids) == 0 {
		t.Fatal("no process in the session's cgroup")
	}
	filters := seccompFilters(t, pids[0])
	if len(filters) == 0 {
		t.Fatal("the server runs without a seccomp filter")
	}
	for _, tc := range compatCalls() {
		action := runFilters(t, filters, tc.call)
		allowed := action == seccompRetAllow
		if allowed != tc.allow {
			t.Errorf("%s (arch %#x, nr %d): the installed filters answer %#x, want allowed=%v", tc.name, tc.call.arch, tc.call.nr, action, tc.allow)
		}
		if !tc.allow && !refusing(action) {
			t.Errorf("%s: action %#x neither kills nor fails the call", tc.name, action)
		}
		t.Logf("%s: seccomp action %#x", tc.name, action)
	}
	// The attack: where the kernel has a 32-bit entry, the call must kill
	// its thread (hostile reports "DENIED killed ..."), never return.
	switch got := attack(t, c, "read-compat", "/work/.ssh/id_ed25519"); {
	case strings.HasPrefix(got, "UNSUPPORTED"):
		t.Logf("the attack itself cannot run on this kernel: %s", got)
	case strings.HasPrefix(got, "DENIED killed"):
		t.Logf("32-bit open of the denied key: %q", got)
	default:
		t.Fatalf("32-bit open of the denied key: %q, want the caller killed", got)
	}
	// Only the attack's process paid: the server answers on.
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/work/notes.txt"}); got != "fine" {
		t.Fatalf("after the 32-bit attempt: %q", got)
	}
}

// seccompData is the part of struct seccomp_data a filter sees here.
type seccompData struct {
	nr   int32
	arch uint32
	args [6]uint64
}

const (
	auditArchX86_64  = 0xc000003e
	auditArchI386    = 0x40000003
	auditArchAarch64 = 0xc00000b7
	auditArchArm     = 0x40000028

	seccompRetActionFull = 0xffff0000
	seccompRetAllow      = 0x7fff0000
	seccompRetKillProc   = 0x80000000
	seccompRetKillThread = 0x00000000
	seccompRetTrap       = 0x00030000
	seccompRetErrno      = 0x00050000
)

// compatCall is a system call as seccomp sees it, and whether the
// sandbox's filters must allow it.
type compatCall struct {
	name  string
	call  seccompData
	allow bool
}

// compatCalls are open(2) of a path as the native entry and as the
// 32-bit entries of this architecture present it to seccomp, with a
// control: the native call whose number the 32-bit open has, allowed,
// so the refusal is the architecture's, not the number's.
func compatCalls() []compatCall {
	const path = 0x10000 // a user address; filters here do not look at it
	if runtime.GOARCH == "arm64" {
		// aarch64 has only openat (56); AArch32's open is 5.
		fdcwd := int32(unix.AT_FDCWD)
		return []compatCall{
			{"native openat", seccompData{nr: 56, arch: auditArchAarch64, args: [6]uint64{uint64(uint32(fdcwd)), path}}, true},
			{"AArch32 open", seccompData{nr: 5, arch: auditArchArm, args: [6]uint64{path}}, false},
		}
	}
	const x32Bit = 0x40000000 // x32 calls: the x86_64 architecture, numbers with this bit
	fdcwd := int32(unix.AT_FDCWD)
	return []compatCall{
		{"native open", seccompData{nr: 2, arch: auditArchX86_64, args: [6]uint64{path}}, true},
		{"native fstat (number 5, the i386 open's)", seccompData{nr: 5, arch: auditArchX86_64, args: [6]uint64{3, path}}, true},
		{"i386 open", seccompData{nr: 5, arch: auditArchI386, args: [6]uint64{path}}, false},
		{"x32 openat", seccompData{nr: x32Bit | 257, arch: auditArchX86_64, args: [6]uint64{uint64(uint32(fdcwd)), path}}, false},
	}
}

// refusing reports whether a seccomp action stops the call: a kill, a
// trap (SIGSYS) or an error.
func refusing(action uint32) bool {
	switch action & seccompRetActionFull {
	case seccompRetKillProc, seccompRetKillThread, seccompRetTrap, seccompRetErrno:
		return true
	}
	return false
}

// seccompFilters returns the classic BPF programs of pid's seccomp
// filters, oldest first, read with PTRACE_SECCOMP_GET_FILTER while the
// task is stopped under ptrace.
func seccompFilters(t *testing.T, pid int) [][]bpf.RawInstruction {
	t.Helper()
	runtime.LockOSThread() // ptrace requests come from the tracer thread
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		t.Fatalf("ptrace attach %d: %v", pid, err)
	}
	defer func() {
		if err := unix.PtraceDetach(pid); err != nil {
			t.Errorf("ptrace detach %d: %v", pid, err)
		}
	}()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("wait for the stopped server: %v (status %v)", err, ws)
	}
	const ptraceSeccompGetFilter = 0x420c
	var filters [][]bpf.RawInstruction
	for i := 0; ; i++ {
		n, _, errno := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), uintptr(i), 0, 0, 0)
		if errno == unix.ENOENT {
			return filters
		}
		if errno != 0 {
			t.Fatalf("PTRACE_SECCOMP_GET_FILTER %d of pid %d: %v", i, pid, errno)
		}
		prog := make([]unix.SockFilter, n)
		if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), uintptr(i), uintptr(unsafe.Pointer(&prog[0])), 0, 0); errno != 0 {
			t.Fatalf("read seccomp filter %d of pid %d: %v", i, pid, errno)
		}
		raw := make([]bpf.RawInstruction, n)
		for j, f := range prog {
			raw[j] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}
		}
		filters = append(filters, raw)
	}
}

// runFilters runs every filter on call and combines their answers as
// the kernel does: the most restrictive action wins.
func runFilters(t *testing.T, filters [][]bpf.RawInstruction, call seccompData) uint32 {
	t.Helper()
	// struct seccomp_data, one 32-bit word at a time: the kernel loads
	// words in host order, the VM reads them big-endian, so each word is
	// written big-endian at its offset (the low half of a 64-bit field
	// first, as on little-endian hosts).
	in := make([]byte, 64)
	binary.BigEndian.PutUint32(in[0:], uint32(call.nr))
	binary.BigEndian.PutUint32(in[4:], call.arch)
	for i, a := range call.args {
		binary.BigEndian.PutUint32(in[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(in[20+8*i:], uint32(a>>32))
	}
	result := uint32(seccompRetAllow)
	for i, raw := range filters {
		insns, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatalf("filter %d has instructions the VM does not know", i)
		}
		vm, err := bpf.NewVM(insns)
		if err != nil {
			t.Fatalf("filter %d: %v", i, err)
		}
		out, err := vm.Run(in)
		if err != nil {
			t.Fatalf("run filter %d: %v", i, err)
		}
		// The kernel keeps the action whose top 16 bits, as a signed
		// number, are least (kill process first, allow last).
		if int32(uint32(out)&seccompRetActionFull) < int32(result&seccompRetActionFull) {
			result = uint32(out)
		}
	}
	return result
}
