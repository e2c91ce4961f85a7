package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// maxLoaders bounds the programs verified at once by loadParallel.
const maxLoaders = 4

// loadParallel loads spec's maps and programs and assigns them to `to`
// (a struct of bpf2go's objects, as LoadAndAssign takes), verifying the
// programs on several CPUs: the kernel's verifier takes most of a
// daemon's start (about 0.3 s of CPU for cage.c on a 2-core VM, the open
// and change exits a quarter each; TestVerifierWorkIsBounded keeps it
// so), and it runs without a global lock for a privileged loader.
//
// The maps (with the global variables' data sections, set and frozen
// as spec says) are created first, once; each group of programs is then
// loaded as a collection of its own against those same maps.
func loadParallel(spec *ebpf.CollectionSpec, to any) (retErr error) {
	cache := btf.NewCache() // the kernel's BTF, decoded once for all groups
	mapsOnly := spec.Copy()
	mapsOnly.Programs = map[string]*ebpf.ProgramSpec{}
	maps, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		return fmt.Errorf("create the maps: %w", err)
	}
	all := &ebpf.Collection{Programs: map[string]*ebpf.Program{}, Maps: maps.Maps, Variables: maps.Variables}
	// Whatever `to` did not take is closed: on error, everything.
	defer all.Close()

	groups := programGroups(spec, min(runtime.NumCPU(), maxLoaders))
	loaded := make([]*ebpf.Collection, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, names := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := spec.Copy()
			part.Programs = make(map[string]*ebpf.ProgramSpec, len(names))
			for _, n := range names {
				part.Programs[n] = spec.Programs[n]
			}
			loaded[i], errs[i] = ebpf.NewCollectionWithOptions(part, ebpf.CollectionOptions{MapReplacements: maps.Maps, Cache: cache})
		}()
	}
	wg.Wait()
	for i, coll := range loaded {
		if coll == nil {
			continue
		}
		for n, p := range coll.Programs {
			all.Programs[n] = p
		}
		coll.Programs = nil
		coll.Close() // its clones of the shared maps
		loaded[i] = nil
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return all.Assign(to)
}

// programGroups splits spec's programs into at most n groups of about
// equal size (in instructions, the verifier's work grows with them),
// the largest first.
func programGroups(spec *ebpf.CollectionSpec, n int) [][]string {
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	size := func(name string) int { return len(spec.Programs[name].Instructions) }
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(size(b), size(a)), cmp.Compare(a, b))
	})
	n = max(1, min(n, len(names)))
	groups := make([][]string, n)
	sizes := make([]int, n)
	for _, name := range names {
		least := slices.Index(sizes, slices.Min(sizes))
		groups[least] = append(groups[least], name)
		sizes[least] += size(name)
	}
	return slices.DeleteFunc(groups, func(g []string) bool { return len(g) == 0 })
}
