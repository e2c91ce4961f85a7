package sandbox

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Bounds of the search for denied paths under a sandbox's mounts: a deep
// or huge tree is searched only so far, and what lies beyond is left to
// the kernel's check (deny_paths kill-on-open).
const (
	DenyScanDepth   = 6     // directory levels below each mount source
	DenyScanEntries = 20000 // directory entries read, all mounts together
	DenyScanMasks   = 64    // masked paths per sandbox
)

// DeniedPaths returns the sandbox paths of the entries named in names
// (deny_paths components, e.g. ".ssh") that exist now under the sources
// of mounts, for masking in the sandbox's mount namespace; complete is
// false when a bound above cut the search short. A mount whose host
// source has a denied component is masked whole. Symbolic links are
// neither followed nor masked (the kernel resolves them, and checks the
// file they lead to).
func DeniedPaths(mounts []BindMount, names []string) (masks []string, complete bool) {
	if len(names) == 0 {
		return nil, true
	}
	denied := map[string]bool{}
	for _, n := range names {
		denied[n] = true
	}
	complete = true
	entries := 0
	add := func(p string) bool {
		if len(masks) >= DenyScanMasks {
			complete = false
			return false
		}
		masks = append(masks, p)
		return true
	}
	for _, m := range mounts {
		src := filepath.Clean(m.Source)
		if hasComponent(src, denied) {
			if !add(m.Target) {
				break
			}
			continue
		}
		// The walk returns no error of its own: an unreadable entry is
		// skipped, and the kernel check still covers it.
		_ = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable: the kernel check stays
			}
			if p == src {
				return nil
			}
			if entries++; entries > DenyScanEntries {
				complete = false
				return fs.SkipAll
			}
			rel, _ := filepath.Rel(src, p)
			if denied[d.Name()] && d.Type()&os.ModeSymlink == 0 {
				if !add(path.Join(m.Target, filepath.ToSlash(rel))) {
					return fs.SkipAll
				}
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() && strings.Count(rel, string(filepath.Separator)) >= DenyScanDepth-1 {
				complete = false
				return fs.SkipDir
			}
			return nil
		})
		if len(masks) >= DenyScanMasks || entries > DenyScanEntries {
			break
		}
	}
	sort.Strings(masks)
	return masks, complete
}

func hasComponent(p string, names map[string]bool) bool {
	for _, c := range strings.Split(p, string(filepath.Separator)) {
		if names[c] {
			return true
		}
	}
	return false
}
