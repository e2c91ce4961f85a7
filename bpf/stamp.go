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

// ExecStamps is the system-wide exec and fork record (stamp.c): for each
// task, when it last exec'd, when it was forked, its working directory
// and the head of its argv at that exec, and which process forked it,
// read with a pidfd. A task that has not exec'd since stamping began has
// no exec stamp: its image is older; one forked before has no fork record.
type ExecStamps struct {
	stamps, forks, meta *ebpf.Map
	exec, fork          link.Link
	since               uint64
}

// ExecStamp is one task's record. Times are CLOCK_BOOTTIME nanoseconds.
type ExecStamp struct {
	Exec    uint64 // the task's last exec
	Start   uint64 // the task's fork (task->start_boottime)
	CwdDev  uint64 // working directory at exec, as stat(2) reports st_dev
	CwdIno  uint64
	ArgvLen int    // bytes of argv at exec
	Argv    []byte // the first of them (at most 512), NUL-separated
	// Lost is Lost().Execs when the stamp was written: a larger count now
	// means a later exec of this task may have gone unstamped.
	Lost uint64
	// Forker is the process that forked the task (the caller of fork or
	// clone, whatever the task's parent is now), by pid in the initial
	// pid namespace and start time; 0 when there is no fork record (the
	// task is older than the record, or its record was lost).
	Forker      uint32
	ForkerStart uint64
}

// stampPinVersion names the pin directory: a layout change gets a new
// one, and the old ones are removed (stalePins).
const stampPinVersion = "exec-v2"

// stalePins are earlier layouts' pin directories.
var stalePins = []string{"exec-v1"}

// LoadExecStamps attaches the exec and fork stampers. With pinDir set (a
// bpffs directory), the programs, their links and maps are pinned under
// pinDir/exec-v2 and reused by the next daemon, so a restart leaves no
// gap in the record; Close leaves them in place. Pins of earlier layouts
// are removed.
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
		defer func() { _ = lock.Close() }() // releases the lock
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return nil, fmt.Errorf("lock pin directory: %w", err)
		}
		for _, old := range stalePins {
			// Its programs stop with their last reference. Best effort:
			// one left behind costs the host its tracepoint, nothing more.
			_ = os.RemoveAll(filepath.Join(pinDir, old))
		}
		dir = filepath.Join(pinDir, stampPinVersion)
		if s, err := loadPinnedStamps(dir); err == nil {
			return s, nil
		}
		// Partial or stale: start over.
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("remove stale exec stamper pins: %w", err)
		}
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
	// The links hold the programs from here on.
	defer func() { _ = objs.StampExec.Close() }()
	defer func() { _ = objs.StampFork.Close() }()
	s := &ExecStamps{stamps: objs.ExecStamps, forks: objs.ForkStamps, meta: objs.StampMeta}
	defer func() {
		if retErr != nil {
			_ = s.Close()
		}
	}()
	var err error
	// Forks first: a task whose exec is stamped has its fork recorded too,
	// unless it was forked before.
	if s.fork, err = link.AttachTracing(link.TracingOptions{Program: objs.StampFork}); err != nil {
		return nil, fmt.Errorf("attach tp_btf sched_process_fork: %w", err)
	}
	if s.exec, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: objs.StampExec}); err != nil {
		return nil, fmt.Errorf("attach raw tracepoint sched_process_exec: %w", err)
	}
	// Read after attaching: no exec or fork after 'since' goes unstamped.
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
	}{{"stamps", s.stamps.Pin}, {"forks", s.forks.Pin}, {"meta", s.meta.Pin}, {"exec", s.exec.Pin}, {"fork", s.fork.Pin}} {
		if err := p.pin(filepath.Join(dir, p.name)); err != nil {
			if errors.Is(err, os.ErrExist) {
				// Another daemon won the race: use its record.
				_ = s.Close()
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
			_ = s.Close()
		}
	}()
	var err error
	if s.stamps, err = ebpf.LoadPinnedMap(filepath.Join(dir, "stamps"), nil); err != nil {
		return nil, err
	}
	if s.stamps.ValueSize() != uint32(unsafe.Sizeof(stampExecStamp{})) {
		return nil, fmt.Errorf("pinned exec stamps have another layout")
	}
	if s.forks, err = ebpf.LoadPinnedMap(filepath.Join(dir, "forks"), nil); err != nil {
		return nil, err
	}
	if s.forks.ValueSize() != uint32(unsafe.Sizeof(stampForkStamp{})) {
		return nil, fmt.Errorf("pinned fork stamps have another layout")
	}
	if s.meta, err = ebpf.LoadPinnedMap(filepath.Join(dir, "meta"), nil); err != nil {
		return nil, err
	}
	if s.exec, err = link.LoadPinnedLink(filepath.Join(dir, "exec"), nil); err != nil {
		return nil, err
	}
	if s.fork, err = link.LoadPinnedLink(filepath.Join(dir, "fork"), nil); err != nil {
		return nil, err
	}
	if err := s.meta.Lookup(uint32(1), &s.since); err != nil || s.since == 0 {
		return nil, fmt.Errorf("pinned exec stamps: no start time")
	}
	return s, nil
}

// Lookup returns the stamps of the process behind pidfd; ok is false when
// it has not exec'd since Since (its fork record, Forker, may be there
// all the same).
func (s *ExecStamps) Lookup(pidfd int) (st ExecStamp, ok bool, err error) {
	var f stampForkStamp
	if err := s.forks.Lookup(int32(pidfd), &f); err == nil {
		st.Forker, st.ForkerStart = f.ForkerTgid, f.ForkerStart
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return ExecStamp{}, false, fmt.Errorf("look up fork stamp: %w", err)
	}
	var v stampExecStamp
	if err := s.stamps.Lookup(int32(pidfd), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return st, false, nil
		}
		return ExecStamp{}, false, fmt.Errorf("look up exec stamp: %w", err)
	}
	n := min(int(v.ArgvLen), len(v.Argv))
	argv := make([]byte, n)
	for i := range argv {
		argv[i] = byte(v.Argv[i])
	}
	kdev := v.CwdDev // kernel dev_t: 12-bit major, 20-bit minor
	st.Exec, st.Start, st.CwdDev, st.CwdIno = v.ExecNs, v.StartNs, unix.Mkdev(kdev>>20, kdev&0xfffff), v.CwdIno
	st.ArgvLen, st.Argv, st.Lost = int(v.ArgvLen), argv, v.Lost
	return st, true, nil
}

// Since is when stamping began (CLOCK_BOOTTIME ns): a task without a
// stamp has not exec'd since.
func (s *ExecStamps) Since() uint64 { return s.since }

// Lost counts the execs and forks the kernel could not stamp (task
// storage busy, or its allocation failed): a missing stamp is then no
// proof of an older image, and a task may keep the stamp of an earlier
// exec (see ExecStamp.Lost).
type Lost struct{ Execs, Forks uint64 }

// Lost reads the counters.
func (s *ExecStamps) Lost() Lost {
	var l Lost
	if s.meta != nil {
		_ = s.meta.Lookup(uint32(0), &l.Execs)
		_ = s.meta.Lookup(uint32(2), &l.Forks)
	}
	return l
}

// Close releases this process's references; pinned objects stay.
func (s *ExecStamps) Close() error {
	var errs []error
	for _, l := range []link.Link{s.exec, s.fork} {
		if l != nil {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close exec stamper link: %w", err))
			}
		}
	}
	for _, m := range []*ebpf.Map{s.stamps, s.forks, s.meta} {
		if m != nil {
			if err := m.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close exec stamper map: %w", err))
			}
		}
	}
	return errors.Join(errs...)
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
