// Package tracepointhold keeps tracepoints registered in the kernel for
// the length of a test run, so that the tests' own attaches and
// detaches of eBPF programs do not each wait for the kernel's grace
// periods.
//
// When the last perf event on a tracepoint is closed, the kernel
// unregisters the tracepoint and waits for its RCU grace periods
// (perf_trace_event_unreg), one tracepoint at a time under a global
// mutex: about 28 ms each on the development VM, 1.6 s for the cage's
// 50-odd syscall tracepoints, at every detach of its observers (every
// daemon stop in the integration tests, every test of package bpf),
// and every tracepoint attach (a perf event's) waits for that mutex.
// Benchmarks that measure syscalls outside a session must let go of a
// hold before they measure. A disabled perf event held on
// each of them keeps them registered: closing a program's link still
// takes the program off the tracepoint at once (its prog array is
// replaced), only the tracepoint's own unregistration is left for the
// end of the run.
//
// What a test run gives up: the tracepoints stay registered, so every
// system call on the machine takes the syscall slow path for the run
// (which the tests' daemons cause most of the time anyway). Benchmarks
// must not hold them (Wanted says no when -test.bench is set): the
// syscall cost outside a session is one of their figures.
package tracepointhold

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/bpf/probe"
)

// EnvOff, set to "0", runs the tests without holding the tracepoints
// (as the kernel behaves outside tests: every detach waits).
const EnvOff = "MCPCAGE_TEST_HOLD_TRACEPOINTS"

// Held is the perf events holding tracepoints registered.
type Held struct{ fds []int }

// Wanted reports whether a test binary should hold tracepoints: not when
// it runs benchmarks (a flag test.bench with a value), not when EnvOff is
// "0", and only as root.
func Wanted() bool {
	if os.Getenv(EnvOff) == "0" || os.Geteuid() != 0 {
		return false
	}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		return false
	}
	args := os.Args[1:] // before flag.Parse, as in a TestMain
	for i, a := range args {
		if strings.HasPrefix(a, "--") { // --test.bench as -test.bench
			a = a[1:]
		}
		switch {
		case strings.HasPrefix(a, "-test.bench=") && a != "-test.bench=":
			return false
		case a == "-test.bench" && i+1 < len(args) && args[i+1] != "":
			return false
		}
	}
	return true
}

// Hold opens a disabled perf event on each tracepoint group/name that
// this kernel has (tracefs's events directory; a name it lacks is
// skipped). The events count nothing and sample nothing.
func Hold(group string, names []string) (*Held, error) {
	events, err := eventsDir()
	if err != nil {
		return nil, err
	}
	h := &Held{}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(events, group, name, "id"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("tracepoint %s/%s: %w", group, name, err)
		}
		id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("tracepoint %s/%s: id %q: %w", group, name, b, err)
		}
		attr := unix.PerfEventAttr{
			Type:   unix.PERF_TYPE_TRACEPOINT,
			Config: id,
			Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
			Bits:   unix.PerfBitDisabled,
		}
		fd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("hold tracepoint %s/%s: perf_event_open: %w", group, name, err)
		}
		h.fds = append(h.fds, fd)
	}
	return h, nil
}

// Count is how many tracepoints are held.
func (h *Held) Count() int { return len(h.fds) }

// Close lets the tracepoints go (the kernel unregisters those no one else
// holds, waiting for each one's grace periods).
func (h *Held) Close() error {
	var errs []error
	for _, fd := range h.fds {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, err)
		}
	}
	h.fds = nil
	return errors.Join(errs...)
}

// eventsDir is tracefs's events directory, tracefs mounted first when
// it is not.
func eventsDir() (string, error) {
	if err := probe.EnsureTracefs(); err != nil {
		return "", err
	}
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("tracefs has no events directory (/sys/kernel/tracing/events)")
}
