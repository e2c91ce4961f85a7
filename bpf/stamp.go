package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ExecStamps is the system-wide exec record (stamp.c): for each task,
// when it last exec'd, when it was forked, its working directory and the
// head of its argv at that exec, read with a pidfd. A task that has not
// exec'd since stamping began has no stamp: its image is older.
type ExecStamps struct {
	stamps, meta *ebpf.Map
	link         link.Link
	since        uint64
}

// ExecStamp is one task's record. Times are CLOCK_BOOTTIME nanoseconds.
type ExecStamp struct {
	Exec    uint64 // the task's last exec
	Start   uint64 // the task's fork (task->start_boottime)
	CwdDev  uint64 // working directory at exec, as stat(2) reports st_dev
	CwdIno  uint64
	ArgvLen int    // bytes of argv at exec
	Argv    []byte // the first of them (at most 512), NUL-separated
}

// stampPinVersion names the pin directory: a layout change gets a new one.
const stampPinVersion = "exec-v1"

// LoadExecStamps attaches the exec stamper. With pinDir set (a bpffs
// directory), the program, its link and maps are pinned under
// pinDir/exec-v1 and reused by the next daemon, so a restart leaves no
// gap in the record; Close leaves them in place.
func LoadExecStamps(pinDir string) (_ *ExecStamps, retErr error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	dir := ""
	if pinDir != "" {
		if err := ensureBPFFS(pinDir); err != nil {
			return nil, err
		}
		// One loader at a time: two daemons starting together must not
		// take each other's half-pinned objects for stale ones.
		lock, err := os.Open(pinDir)
		if err != nil {
			return nil, fmt.Errorf("open pin directory: %w", err)
		}
		defer lock.Close()
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return nil, fmt.Errorf("lock pin directory: %w", err)
		}
		dir = filepath.Join(pinDir, stampPinVersion)
		if s, err := loadPinnedStamps(dir); err == nil {
			return s, nil
		}
		os.RemoveAll(dir) // partial or stale: start over
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}
	var objs stampObjects
	if err := loadStampObjects(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("eBPF verifier rejected the exec stamper: %+v", ve)
		}
		return nil, fmt.Errorf("load the exec stamper: %w", err)
	}
	defer objs.StampExec.Close()
	s := &ExecStamps{stamps: objs.ExecStamps, meta: objs.StampMeta}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	var err error
	if s.link, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: objs.StampExec}); err != nil {
		return nil, fmt.Errorf("attach raw tracepoint sched_process_exec: %w", err)
	}
	// Read after attaching: no exec after 'since' goes unstamped.
	since, err := bootNanos()
	if err != nil {
		return nil, err
	}
	s.since = since
	if err := s.meta.Put(uint32(1), since); err != nil {
		return nil, fmt.Errorf("record stamping start: %w", err)
	}
	if dir == "" {
		return s, nil
	}
	for _, p := range []struct {
		name string
		pin  func(string) error
	}{{"stamps", s.stamps.Pin}, {"meta", s.meta.Pin}, {"link", s.link.Pin}} {
		if err := p.pin(filepath.Join(dir, p.name)); err != nil {
			if errors.Is(err, os.ErrExist) {
				// Another daemon won the race: use its record.
				s.Close()
				return loadPinnedStamps(dir)
			}
			return nil, fmt.Errorf("pin exec stamper %s: %w", p.name, err)
		}
	}
	return s, nil
}

func loadPinnedStamps(dir string) (_ *ExecStamps, retErr error) {
	s := &ExecStamps{}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	var err error
	if s.stamps, err = ebpf.LoadPinnedMap(filepath.Join(dir, "stamps"), nil); err != nil {
		return nil, err
	}
	if s.stamps.ValueSize() != uint32(unsafe.Sizeof(stampExecStamp{})) {
		return nil, fmt.Errorf("pinned exec stamps have another layout")
	}
	if s.meta, err = ebpf.LoadPinnedMap(filepath.Join(dir, "meta"), nil); err != nil {
		return nil, err
	}
	if s.link, err = link.LoadPinnedLink(filepath.Join(dir, "link"), nil); err != nil {
		return nil, err
	}
	if err := s.meta.Lookup(uint32(1), &s.since); err != nil || s.since == 0 {
		return nil, fmt.Errorf("pinned exec stamps: no start time")
	}
	return s, nil
}

// Lookup returns the stamp of the process behind pidfd; ok is false when
// it has not exec'd since Since.
func (s *ExecStamps) Lookup(pidfd int) (st ExecStamp, ok bool, err error) {
	var v stampExecStamp
	if err := s.stamps.Lookup(int32(pidfd), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return ExecStamp{}, false, nil
		}
		return ExecStamp{}, false, fmt.Errorf("look up exec stamp: %w", err)
	}
	n := min(int(v.ArgvLen), len(v.Argv))
	argv := make([]byte, n)
	for i := range argv {
		argv[i] = byte(v.Argv[i])
	}
	kdev := v.CwdDev // kernel dev_t: 12-bit major, 20-bit minor
	return ExecStamp{Exec: v.ExecNs, Start: v.StartNs, CwdDev: unix.Mkdev(kdev>>20, kdev&0xfffff), CwdIno: v.CwdIno,
		ArgvLen: int(v.ArgvLen), Argv: argv}, true, nil
}

// Since is when stamping began (CLOCK_BOOTTIME ns): a task without a
// stamp has not exec'd since.
func (s *ExecStamps) Since() uint64 { return s.since }

// Unstamped counts execs the kernel could not stamp (storage allocation
// failed): a missing stamp is then no proof of an older image.
func (s *ExecStamps) Unstamped() uint64 {
	var n uint64
	if s.meta != nil {
		_ = s.meta.Lookup(uint32(0), &n)
	}
	return n
}

// Close releases this process's references; pinned objects stay.
func (s *ExecStamps) Close() error {
	if s.link != nil {
		s.link.Close()
	}
	if s.stamps != nil {
		s.stamps.Close()
	}
	if s.meta != nil {
		s.meta.Close()
	}
	return nil
}

// UnpinExecStamps removes the pinned stamper (uninstall, tests).
func UnpinExecStamps(pinDir string) error {
	return os.RemoveAll(filepath.Join(pinDir, stampPinVersion))
}

// BootNanos is CLOCK_BOOTTIME in nanoseconds, the stamps' clock.
func BootNanos() (uint64, error) { return bootNanos() }

func bootNanos() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return uint64(ts.Nano()), nil
}
