package bpf

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// maxVerifierWork is the most instructions the kernel's verifier may
// step through for one program. Its work is most of a daemon's start:
// before the walk of a path took one component per copy of its loop,
// the open and change exits each took 460,000-690,000 (0.3-0.7 s on
// this kind of machine), the exec stamper 330,000; on Linux 6.18 each
// now takes at most about 50,000 with direct reads and 150,000 by
// helper calls (which walk deep paths in a bounded loop, not bpf_loop).
const maxVerifierWork = 200_000

// processedInsns reads "processed N insns" from a verifier log.
var processedInsns = regexp.MustCompile(`processed (\d+) insns`)

// TestVerifierWorkIsBounded loads every program of every object the
// daemon loads, each on its own with the verifier's statistics, and
// fails on one that costs the verifier more than maxVerifierWork: a
// change to the C that multiplies the verifier's states (a counter it
// must track exactly, carried through an unrolled loop) shows here,
// not as a slower start weeks later. lsm.c is left out: BPF-LSM
// programs load only where the kernel has BPF LSM on.
func TestVerifierWorkIsBounded(t *testing.T) {
	testenv.RequireRoot(t)
	vars := loadSettings{sessionLevel: 3, parentLevel: 2, parentCgid: 1, hostNetns: 1, mmapSlots: true, tick: 4 * time.Millisecond}
	objects := []struct {
		name string
		spec func() (*ebpf.CollectionSpec, error)
	}{
		{"cage.c", func() (*ebpf.CollectionSpec, error) { return cageSpec(loadCage, vars) }},
		{"cage.c with direct reads", func() (*ebpf.CollectionSpec, error) { return cageSpec(loadCageDirect, vars) }},
		{"stamp.c", loadStamp},
		{"bind.c", loadBind},
	}
	for _, o := range objects {
		t.Run(o.name, func(t *testing.T) {
			if o.name == "cage.c with direct reads" {
				testenv.Require(t, directReadsSupported() == nil, "a kernel with bpf_rdonly_cast (Linux 6.2+)")
			}
			spec, err := o.spec()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range verifierWork(t, spec) {
				t.Logf("%s: %d instructions verified", p.name, p.work)
				if p.work > maxVerifierWork {
					t.Errorf("%s: the verifier stepped through %d instructions, more than %d", p.name, p.work, maxVerifierWork)
				}
			}
		})
	}
}

// verifierWork loads each of spec's programs on its own against one set
// of its maps and returns how many instructions the verifier processed
// for each, the largest first.
func verifierWork(t *testing.T, spec *ebpf.CollectionSpec) []programWork {
	t.Helper()
	cache := btf.NewCache()
	mapsOnly := spec.Copy()
	mapsOnly.Programs = map[string]*ebpf.ProgramSpec{}
	maps, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(maps.Close)
	var results []programWork
	for name, ps := range spec.Programs {
		one := spec.Copy()
		one.Programs = map[string]*ebpf.ProgramSpec{name: ps}
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{
			MapReplacements: maps.Maps, Cache: cache, Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
		m := processedInsns.FindStringSubmatch(coll.Programs[name].VerifierLog)
		coll.Close()
		if m == nil {
			t.Fatalf("%s: no instruction count in the verifier's log", name)
		}
		work, _ := strconv.Atoi(m[1])
		results = append(results, programWork{name, work})
	}
	slices.SortFunc(results, func(a, b programWork) int { return b.work - a.work })
	return results
}

// programWork is the verifier's work for one program: instructions
// processed.
type programWork struct {
	name string
	work int
}
