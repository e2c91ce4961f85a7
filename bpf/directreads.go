package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Direct reads: cage.h's use_direct_reads. The programs walk files,
// dentries and mounts on every open in a session; with the kfunc
// bpf_rdonly_cast each field is a load, without it a helper call.

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

// setDirectReads sets a program object's direct_reads constant.
func setDirectReads(spec *ebpf.CollectionSpec, on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	if err := spec.Variables["direct_reads"].Set(v); err != nil {
		return fmt.Errorf("set direct_reads: %w", err)
	}
	return nil
}

// loadDirect loads cage.c's programs into objs with direct reads on or
// off.
func loadDirect(spec *ebpf.CollectionSpec, on bool, objs *cageObjects) error {
	if err := setDirectReads(spec, on); err != nil {
		return err
	}
	return spec.LoadAndAssign(objs, nil)
}
