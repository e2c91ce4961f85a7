package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ExecStamps is the system-wide exec and fork record (stamp.c): for each
// task, when it last exec'd, when it was forked, its working directory,
// the head of its argv and the environment variables of interest at that
// exec, and which process forked it, read with a pidfd. A task that has not exec'd since stamping began has
// no exec stamp: its image is older; one forked before has no fork record.
type ExecStamps struct {
	stamps, forks, meta, envConfig *ebpf.Map
	exec, fork                     link.Link
	prepare                        link.Link // nil when the kernel has no sched_prepare_exec (before 6.10)
	prepareErr                     error
	since                          uint64
}

// ExecStamp is one task's record. Times are CLOCK_BOOTTIME nanoseconds.
type ExecStamp struct {
	Exec    uint64 // the task's last exec
	Start   uint64 // the task's fork (task->start_boottime)
	CwdDev  uint64 // working directory at exec, as stat(2) reports st_dev
	CwdIno  uint64
	ArgvLen int    // bytes of argv at exec
	Argv    []byte // the first of them (at most 512), NUL-separated
	// Env is what the kernel kept of the environment at exec: every
	// variable ("NAME=VALUE") that one of the stamper's names matches, in
	// order, NUL-separated, but for those over 510 bytes, which are in
	// EnvCut (by name) instead. EnvUnchecked says why it may not be all
	// of them ("" when the kernel looked at every variable).
	Env          []byte
	EnvCut       []string
	EnvUnchecked string
	// Lost is Lost().Execs when the stamp was written: a larger count now
	// means a later exec of this task may have gone unstamped.
	Lost uint64
	// Forker is the process that forked the task (the caller of fork or
	// clone, whatever the task's parent is now), by pid in the initial
	// pid namespace and start time; 0 when there is no fork record (the
	// task is older than the record, or its record was lost).
	Forker      uint32
	ForkerStart uint64
	// Execs is how many times the task has exec'd since its fork (with
	// Forker set; a count past 65535 reads as 65535). It counts an exec
	// from its point of no return where the prepare hook is attached
	// (before /proc shows the new program), else once its image is
	// loaded.
	Execs int
	// FirstDev and FirstIno name the file the first of those execs ran
	// (st_dev, st_ino): a runtime's spawn helper (Java's jspawnhelper),
	// when Execs is 2.
	FirstDev, FirstIno uint64
	// Pending: an exec of the task has passed its point of no return and
	// not finished loading its image (Exec is that exec's time; the rest
	// is the exec before's). Without the prepare hook (kernels before
	// 6.10) it is never set.
	Pending bool
}

// EnvState says whether the kernel looked at every variable of a task's
// environment at exec (stamp.c's enum env_state).
type EnvState uint32

const (
	EnvUnchecked  = EnvState(stampEnvStateENV_UNCHECKED) // no names yet (an exec while the stamper was being loaded)
	EnvChecked    = EnvState(stampEnvStateENV_CHECKED)
	EnvIncomplete = EnvState(stampEnvStateENV_INCOMPLETE) // over 8192 strings, or the matches over 2 KiB or 64
	EnvFault      = EnvState(stampEnvStateENV_FAULT)      // the kernel could not read it
)

// String says what the state means, for an error.
func (e EnvState) String() string {
	switch e {
	case EnvUnchecked:
		return "not checked at exec (the exec came while the stamper was being loaded)"
	case EnvChecked:
		return "checked at exec"
	case EnvIncomplete:
		return "too large to check at exec (more than 8192 variables, or the checked ones over 2 KiB or 64 of them: start the client with a smaller environment)"
	case EnvFault:
		return "unreadable at exec"
	}
	return fmt.Sprintf("env_state %d", uint32(e))
}

// EnvPatternsMax and EnvPatternLen bound the names the stamper keeps
// (stamp.c ENV_PATTERNS; its first look, ENV_PATTERN_LEN, ends in a NUL).
const (
	EnvPatternsMax = len(stampEnvConfig{}.P)
	EnvPatternLen  = 8*len(stampEnvConfig{}.P[0].Word) - 1
)

// EnvName is a pattern the stamper keeps variables by: a prefix of
// "NAME=VALUE" ("LD_" for all the loader's, "ENV=" for ENV alone).
// With Value set, the variable is kept whole (PATH, NODE_OPTIONS);
// otherwise as "NAME=" and "x" when its value is not empty (its name, when
// under 23 bytes, is all a check needs). A variable counts under the
// first pattern it matches.
type EnvName struct {
	Pattern string
	Value   bool
}

// envConfig turns names into the stamper's table.
func envConfig(names []EnvName) (stampEnvConfig, error) {
	var c stampEnvConfig
	if len(names) > EnvPatternsMax {
		return c, fmt.Errorf("%d environment names to keep at exec; the stamper takes %d", len(names), EnvPatternsMax)
	}
	for i, n := range names {
		p := n.Pattern
		if p == "" || len(p) > EnvPatternLen {
			return c, fmt.Errorf("environment name %q: want 1 to %d bytes", p, EnvPatternLen)
		}
		if n.Value {
			c.Value |= 1 << i
		}
		var word, mask [EnvPatternLen + 1]byte
		copy(word[:], p)
		for j := range len(p) {
			mask[j] = 0xff
		}
		for w := range c.P[i].Word {
			c.P[i].Word[w] = binary.LittleEndian.Uint64(word[8*w:])
			c.P[i].Mask[w] = binary.LittleEndian.Uint64(mask[8*w:])
		}
		c.First[p[0]>>6] |= 1 << (p[0] & 63)
	}
	c.N = uint32(len(names))
	return c, nil
}

// pinVersion names the pin directory of a program and a set of names: a
// daemon with another stamper (a fix that keeps the record's layout
// included) or other names starts a stamper of its own.
func pinVersion(names []EnvName) string {
	h := fnv.New32a()
	_, _ = h.Write(_StampBytes)
	for _, n := range names {
		_, _ = fmt.Fprintf(h, "%s\x00%t\x00", n.Pattern, n.Value)
	}
	return fmt.Sprintf("%s-%08x", stampPinVersion, h.Sum32())
}

// stamp_meta's keys: stamp.c's enum stamp_meta_key, generated by bpf2go.
const (
	metaExecLost = uint32(stampStampMetaKeyMETA_EXEC_LOST)
	metaSince    = uint32(stampStampMetaKeyMETA_SINCE)
	metaForkLost = uint32(stampStampMetaKeyMETA_FORK_LOST)
)

// The kernel's internal dev_t (stamp.c reads super_block.s_dev) holds a
// 12-bit major above a 20-bit minor (include/linux/kdev_t.h MINORBITS).
const (
	kdevMinorBits = 20
	kdevMinorMask = 1<<kdevMinorBits - 1
)

// kdevToStat turns the kernel's internal dev_t into stat(2)'s st_dev.
func kdevToStat(kdev uint32) uint64 {
	return unix.Mkdev(kdev>>kdevMinorBits, kdev&kdevMinorMask)
}

// stampPinVersion names the pin directory: a layout change gets a new
// one, and the old ones are removed (stalePins).
const stampPinVersion = "exec-v5"

// stalePins are earlier layouts' pin directories: these names, and
// whatever starts with one of them and a dash (exec-v4-HASH), and
// exec-v5-* of other names.
var stalePins = []string{"exec-v1", "exec-v2", "exec-v3", "exec-v4"}

// LoadExecStamps attaches the exec and fork stampers. envNames are the
// environment variables each exec's stamp keeps (see EnvName; at most
// EnvPatternsMax of at most EnvPatternLen bytes). With pinDir set (a
// bpffs directory), the programs, their links and maps are pinned under
// pinDir/exec-v5-HASH (HASH of the program and envNames) and reused by
// the next daemon with the same program and names, so a restart leaves
// no gap in the record; Close leaves them in place. Pins of earlier
// layouts, programs and names are removed.
func LoadExecStamps(pinDir string, envNames []EnvName) (_ *ExecStamps, retErr error) {
	cfg, err := envConfig(envNames)
	if err != nil {
		return nil, err
	}
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
		dir = filepath.Join(pinDir, pinVersion(envNames))
		others, _ := filepath.Glob(filepath.Join(pinDir, stampPinVersion+"-*"))
		for _, v := range stalePins {
			older, _ := filepath.Glob(filepath.Join(pinDir, v+"-*"))
			others = append(others, older...)
		}
		for _, old := range append(others, stalePins...) {
			if old = filepath.Join(pinDir, filepath.Base(old)); old != dir {
				// Its programs stop with their last reference. Best effort:
				// one left behind costs the host its tracepoint, nothing more.
				_ = os.RemoveAll(old)
			}
		}
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
	defer func() { _ = objs.StampPrepare.Close() }()
	s := &ExecStamps{stamps: objs.ExecStamps, forks: objs.ForkStamps, meta: objs.StampMeta, envConfig: objs.EnvConfigs}
	defer func() {
		if retErr != nil {
			_ = s.Close()
		}
	}()
	// The names before the programs run: every exec stamped is checked.
	if err := s.envConfig.Put(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("set the environment names to keep at exec: %w", err)
	}
	// Forks first: a task whose exec is stamped has its fork recorded too,
	// unless it was forked before.
	if s.fork, err = link.AttachTracing(link.TracingOptions{Program: objs.StampFork}); err != nil {
		return nil, fmt.Errorf("attach tp_btf sched_process_fork: %w", err)
	}
	// The prepare hook before the exec's: an exec is marked under way
	// from its point of no return, before its image changes.
	if s.prepare, err = link.AttachTracing(link.TracingOptions{Program: objs.StampPrepare}); err != nil {
		s.prepare, s.prepareErr = nil, fmt.Errorf("attach tp_btf sched_prepare_exec: %w", err)
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
	if err := s.meta.Put(metaSince, since); err != nil {
		return nil, fmt.Errorf("record stamping start: %w", err)
	}
	if dir == "" {
		return s, nil
	}
	for _, p := range []struct {
		name string
		pin  func(string) error
	}{{"stamps", s.stamps.Pin}, {"forks", s.forks.Pin}, {"meta", s.meta.Pin}, {"env", s.envConfig.Pin}, {"exec", s.exec.Pin}, {"fork", s.fork.Pin}, {"prepare", s.pinPrepare}} {
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
	if s.envConfig, err = ebpf.LoadPinnedMap(filepath.Join(dir, "env"), nil); err != nil {
		return nil, err
	}
	if s.exec, err = link.LoadPinnedLink(filepath.Join(dir, "exec"), nil); err != nil {
		return nil, err
	}
	if s.fork, err = link.LoadPinnedLink(filepath.Join(dir, "fork"), nil); err != nil {
		return nil, err
	}
	if s.prepare, err = link.LoadPinnedLink(filepath.Join(dir, "prepare"), nil); err != nil {
		s.prepare, s.prepareErr = nil, fmt.Errorf("no pinned sched_prepare_exec link (the kernel had none): %w", err)
	}
	if err := s.meta.Lookup(metaSince, &s.since); err != nil || s.since == 0 {
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
		st.Forker, st.ForkerStart, st.Execs = f.ForkerTgid, f.ForkerStart, int(f.Execs)
		st.FirstDev, st.FirstIno = kdevToStat(f.FirstDev), f.FirstIno
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
	st.Exec, st.Start, st.CwdDev, st.CwdIno = v.ExecNs, v.StartNs, kdevToStat(v.CwdDev), v.CwdIno
	st.ArgvLen, st.Argv, st.Lost = int(v.ArgvLen), argv, v.Lost
	if e := EnvState(v.EnvState); e != EnvChecked {
		st.EnvUnchecked = e.String()
	}
	k := min(int(v.EnvKeptLen), len(v.EnvKept))
	kept := make([]byte, k)
	for i := range kept {
		kept[i] = byte(v.EnvKept[i])
	}
	st.Env, st.EnvCut = splitCut(kept, v.EnvCut)
	st.Pending = v.Pending != 0
	return st, true, nil
}

// pinPrepare pins the prepare hook's link, when there is one.
func (s *ExecStamps) pinPrepare(path string) error {
	if s.prepare == nil {
		return nil
	}
	return s.prepare.Pin(path)
}

// PrepareHooked reports whether execs are marked under way from their
// point of no return (tp_btf/sched_prepare_exec), and why not.
func (s *ExecStamps) PrepareHooked() (bool, error) { return s.prepare != nil, s.prepareErr }

// splitCut takes the variables whose bit in cut is set out of kept
// (NUL-separated), by name.
func splitCut(kept []byte, cut uint64) (whole []byte, cutNames []string) {
	i := 0
	for len(kept) > 0 {
		entry, rest, _ := bytes.Cut(kept, []byte{0})
		if i < 64 && cut&(1<<i) != 0 {
			name, _, _ := bytes.Cut(entry, []byte("="))
			cutNames = append(cutNames, string(name))
		} else {
			whole = append(append(whole, entry...), 0)
		}
		kept, i = rest, i+1
	}
	return whole, cutNames
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
		_ = s.meta.Lookup(metaExecLost, &l.Execs)
		_ = s.meta.Lookup(metaForkLost, &l.Forks)
	}
	return l
}

// Close releases this process's references; pinned objects stay.
func (s *ExecStamps) Close() error {
	var errs []error
	for _, l := range []link.Link{s.exec, s.fork, s.prepare} {
		if l != nil {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close exec stamper link: %w", err))
			}
		}
	}
	for _, m := range []*ebpf.Map{s.stamps, s.forks, s.meta, s.envConfig} {
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
	dirs, err := filepath.Glob(filepath.Join(pinDir, stampPinVersion+"-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
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
