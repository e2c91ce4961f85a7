package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Direct reads: cage.c built twice (gen.go). The programs walk files,
// dentries and mounts on every open in a session; cageDirect, built with
// DIRECT_READS, reads their fields by direct loads through the kfunc
// bpf_rdonly_cast, cage by one bpf_probe_read_kernel call each. The
// loader takes cageDirect where the kernel has the kfunc and accepts it,
// else cage, which references no kfunc at all.

// directReadsKfunc is the kfunc the direct reads need (Linux 6.2+).
const directReadsKfunc = "bpf_rdonly_cast"

// directReadsSupported says why this kernel cannot give the programs
// direct reads (nil: it can).
func directReadsSupported() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("no kernel BTF: %w", err)
	}
	var fn *btf.Func
	if err := spec.TypeByName(directReadsKfunc, &fn); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return fmt.Errorf("this kernel has no %s (Linux 6.2+)", directReadsKfunc)
		}
		return fmt.Errorf("look up %s: %w", directReadsKfunc, err)
	}
	return nil
}

// loadSettings are what the loader sets in either build of cage.c.
type loadSettings struct {
	sessionLevel, parentLevel uint32
	parentCgid                uint64
	hostNetns                 uint64        // the host's network namespace cookie (hostNetnsCookie)
	mmapSlots                 bool          // the call slots mapped into memory
	tick                      time.Duration // the kernel's tick (0: unknown; sessionclock.go)
}

// loadObjects loads one build of cage.c (load: loadCage or
// loadCageDirect) into c.objs with vars set.
func (c *Cage) loadObjects(load func() (*ebpf.CollectionSpec, error), vars loadSettings) error {
	spec, err := cageSpec(load, vars)
	if err != nil {
		return err
	}
	return loadParallel(spec, &c.objs)
}

// cageSpec is one build of cage.c (load: loadCage or loadCageDirect)
// with vars set, as the kernel gets it.
func cageSpec(load func() (*ebpf.CollectionSpec, error), vars loadSettings) (*ebpf.CollectionSpec, error) {
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("load eBPF object: %w", err)
	}
	for name, v := range map[string]any{"session_level": vars.sessionLevel, "parent_level": vars.parentLevel, "parent_cgid": vars.parentCgid,
		"host_netns_cookie": vars.hostNetns} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if err := setSessionClock(spec, vars.tick); err != nil {
		return nil, err
	}
	// The daemon counts the urgent events it reads only in a mapped
	// array (one atomic add, no syscall): no share without it.
	if err := spec.Variables["fair_share"].Set(vars.mmapSlots); err != nil {
		return nil, fmt.Errorf("set fair_share: %w", err)
	}
	if !vars.mmapSlots {
		// The same array, written by map updates instead.
		spec.Maps[cageMapCallSlots].Flags &^= unix.BPF_F_MMAPABLE
	}
	return spec, nil
}
