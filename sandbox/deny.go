package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Bounds of the search for denied paths under a sandbox's mounts: a deep
// or huge tree is searched only so far, and what lies beyond is left to
// the kernel's check (deny_paths kill-on-open). Every bound is per mount,
// so what one mount holds (a writable one the server filled) cannot use
// up the search of another.
const (
	DenyScanDepth      = 6      // directory levels below each mount source
	DenyScanEntries    = 20000  // directory entries read per mount (a directory once read is checked whole)
	DenyScanDirEntries = 100000 // entries checked per directory; beyond them a directory's names are not read
	DenyScanMasks      = 64     // masked paths per mount
	DenyScanLookups    = 2000   // directories found but not read whose denied names are still looked up once the entries are spent
)

// ScanCut says why the search of a mount stopped short.
type ScanCut string

const (
	// ScanCutDepth: a directory lies more than DenyScanDepth levels below
	// the source; only names deeper than that were not read, which no
	// content of the mount can change.
	ScanCutDepth ScanCut = "depth"
	// ScanCutEntries: the mount's entry budget ran out; directories at
	// the deepest level read (and below) were not all read.
	ScanCutEntries ScanCut = "entries"
	// ScanCutDirectory: a directory holds more than DenyScanDirEntries
	// entries; the rest of its names were not read.
	ScanCutDirectory ScanCut = "directory"
	// ScanCutMasks: more than DenyScanMasks denied entries were found.
	ScanCutMasks ScanCut = "masks"
	// ScanCutUnlisted: the mount's user may search a directory but not
	// read it (and does not own it): only the denied names were looked
	// up there, its subdirectories were not searched.
	ScanCutUnlisted ScanCut = "unlisted"
)

// Budget reports whether c is a budget running out, which the contents of
// a mount can force (unlike the depth bound, which only leaves names
// deeper than it unread, and an unlisted directory, which the mount's
// user, and so its server, cannot make).
func (c ScanCut) Budget() bool {
	return c == ScanCutEntries || c == ScanCutDirectory || c == ScanCutMasks
}

// IncompleteScan is a mount whose search was cut short.
type IncompleteScan struct {
	Mount  string  `json:"mount"`  // the mount's target in the sandbox
	Reason ScanCut `json:"reason"` // the first budget that ran out, else depth
}

// AnnotationDenyScanIncomplete is the spec annotation that lists, as
// JSON ([]IncompleteScan), the mounts whose search was cut short; absent
// when every search was complete.
const AnnotationDenyScanIncomplete = "org.mcpcage.deny-scan.incomplete"

// DenyScan is what ScanDenied found.
type DenyScan struct {
	// Masks are the sandbox paths to mask, sorted.
	Masks []string
	// Incomplete are the mounts, in the order given, whose search was
	// cut short: a denied entry may exist there unmasked (the kernel's
	// check remains).
	Incomplete []IncompleteScan
}

// ScanDenied searches the sources of mounts for entries named in names
// (deny_paths components, e.g. ".ssh") for masking in the sandbox's
// mount namespace. A mount whose host source has a denied component is
// masked whole. Symbolic links are neither followed nor masked (the
// kernel resolves them, and checks the file they lead to).
//
// Each mount is searched breadth first, so every denied name at one
// depth is found before any directory one level deeper is read: filling
// a mount with entries cannot hide a denied name shallower than the
// filler. A directory once read is checked whole (up to
// DenyScanDirEntries), and each mount has its own budgets.
func ScanDenied(mounts []BindMount, names []string) DenyScan {
	var out DenyScan
	if len(names) == 0 {
		return out
	}
	denied := map[string]bool{}
	for _, n := range names {
		denied[n] = true
	}
	for _, m := range mounts {
		src := filepath.Clean(m.Source)
		if hasComponent(src, denied) {
			out.Masks = append(out.Masks, m.Target)
			continue
		}
		masks, cut := scanMountAs(m.Viewer, src, m.Pin, m.Target, denied)
		out.Masks = append(out.Masks, masks...)
		if cut != "" {
			out.Incomplete = append(out.Incomplete, IncompleteScan{Mount: m.Target, Reason: cut})
		}
	}
	sort.Strings(out.Masks)
	return out
}

// or is the cut a search reports when it was cut by c as well: the
// first, but a budget's cut (which the server may have forced) outranks
// one that is not, so that it is always warned of.
func (cut ScanCut) or(c ScanCut) ScanCut {
	if cut == "" || (!cut.Budget() && c.Budget()) {
		return c
	}
	return cut
}

// scanMountAs is scanMount as seen by the user c (nil: the daemon): a
// directory the user cannot reach is not searched, so its names are
// neither masked (the server cannot reach them either) nor shown to the
// user in the masks. Where the user's view cannot be taken (the daemon
// lacks CAP_SETUID), the daemon's is: masks come first.
func scanMountAs(c *Cred, src string, pin *os.File, target string, denied map[string]bool) ([]string, ScanCut) {
	var v *viewer
	if c != nil {
		var err error
		if v, err = newViewer(*c); err == nil {
			defer v.close()
		}
	}
	return scanMount(v, src, pin, target, denied)
}

// scanMount searches one source breadth first; cut is "" when the
// search was complete. Directories are opened below the source without
// following a symbolic link (one swapped in during the search is not
// entered). Once the entry budget is spent, the directories already
// found but not read (those left at the level being read, and those
// found for the next) still have their denied names looked up (a few
// lookups each), so a directory the server filled does not hide a
// denied name beside it or just below its siblings.
//
// A pinned source (pin: the object checked at launch, a source the user
// chose) is searched through the pin, not by its path, which the user
// may have pointed elsewhere since (a directory on the way swapped for a
// symlink: root would open and search whatever it names, a FIFO or a
// device included, and mask the wrong tree). Another source (an
// administrator's) is opened by its path, as a directory only (a FIFO or
// device is never opened).
func scanMount(v *viewer, src string, pin *os.File, target string, denied map[string]bool) (masks []string, cut ScanCut) {
	note := func(c ScanCut) { cut = cut.or(c) }
	var root *os.File
	var err error
	if pin != nil {
		root, err = OpenPinnedDir(pin)
	} else {
		root, err = os.OpenFile(src, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, ""
	}
	defer func() { _ = root.Close() }()
	level := []string{"."} // directories to read, relative to src
	entries := 0
	for depth := 0; len(level) > 0; depth++ {
		if depth >= DenyScanDepth {
			note(ScanCutDepth)
			break
		}
		var next []string
		for i, rel := range level {
			if entries >= DenyScanEntries {
				note(ScanCutEntries)
				rest := slices.Concat(level[i:], next)
				if len(rest) > DenyScanLookups {
					rest = rest[:DenyScanLookups] // the nearest: level before next
				}
				for _, rel := range rest {
					for _, e := range lookUpAs(v, root, rel, denied) {
						if e.Type()&os.ModeSymlink != 0 {
							continue // never masked (runc would follow it)
						}
						if len(masks) >= DenyScanMasks {
							note(ScanCutMasks)
							return masks, cut
						}
						masks = append(masks, path.Join(target, rel, e.Name()))
					}
				}
				return masks, cut
			}
			ents, how := readDirBounded(v, root, rel, denied)
			switch how {
			case dirCut:
				note(ScanCutDirectory)
			case dirNamesOnly:
				note(ScanCutUnlisted)
			}
			entries += len(ents)
			for _, e := range ents {
				r := path.Join(rel, e.Name())
				switch {
				case e.Type()&os.ModeSymlink != 0:
				case denied[e.Name()]:
					if len(masks) >= DenyScanMasks {
						note(ScanCutMasks)
						return masks, cut
					}
					masks = append(masks, path.Join(target, r))
				case e.IsDir():
					next = append(next, r)
				}
			}
		}
		level = next
	}
	return masks, cut
}

// dirRead says how much of a directory readDirBounded read.
type dirRead int

const (
	dirWhole     dirRead = iota // every entry (or none the user can reach)
	dirCut                      // the first DenyScanDirEntries entries
	dirNamesOnly                // the denied names only (see ScanCutUnlisted)
)

// openBelow opens the directory rel below root without following a
// symbolic link on the way (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS).
func openBelow(root *os.File, rel string) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(root.Name(), rel)), nil
}

// readDirBounded reads up to DenyScanDirEntries entries of rel (below
// root), sorted by name, as far as v (nil: the daemon) reaches. An
// unreadable directory reads as empty: the kernel check stays.
func readDirBounded(v *viewer, root *os.File, rel string, denied map[string]bool) ([]os.DirEntry, dirRead) {
	f, err := openBelow(root, rel)
	if err != nil {
		return nil, dirWhole
	}
	defer func() { _ = f.Close() }()
	if v != nil {
		switch v.reach(f) {
		case reachNone:
			return nil, dirWhole
		case reachNames:
			return lookUp(f, denied), dirNamesOnly
		}
	}
	// An error midway keeps the entries read before it.
	ents, err := f.ReadDir(DenyScanDirEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) && len(ents) == 0 {
		return nil, dirWhole
	}
	how := dirWhole
	if len(ents) > DenyScanDirEntries {
		ents, how = ents[:DenyScanDirEntries], dirCut
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, how
}

// lookUpAs returns the entries of rel (below root) named in denied, as
// far as v (nil: the daemon) reaches: none in a directory v cannot
// search.
func lookUpAs(v *viewer, root *os.File, rel string, denied map[string]bool) []os.DirEntry {
	f, err := openBelow(root, rel)
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	if v != nil && v.reach(f) == reachNone {
		return nil
	}
	return lookUp(f, denied)
}

// lookUp returns the entries of the open directory dir named in denied,
// sorted.
func lookUp(dir *os.File, denied map[string]bool) []os.DirEntry {
	var ents []os.DirEntry
	for name := range denied {
		var st unix.Stat_t
		if unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			ents = append(ents, statEntry{name: name, mode: fileMode(st.Mode)})
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents
}

// statEntry is a directory entry known by name and type only.
type statEntry struct {
	name string
	mode fs.FileMode
}

func (e statEntry) Name() string               { return e.name }
func (e statEntry) IsDir() bool                { return e.mode.IsDir() }
func (e statEntry) Type() fs.FileMode          { return e.mode.Type() }
func (e statEntry) Info() (fs.FileInfo, error) { return nil, fs.ErrInvalid }

// fileMode is the type bits of a stat mode as an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFREG:
		return 0
	default:
		return fs.ModeIrregular
	}
}

func hasComponent(p string, names map[string]bool) bool {
	for _, c := range strings.Split(p, string(filepath.Separator)) {
		if names[c] {
			return true
		}
	}
	return false
}

// OpenPinnedDir opens for reading the directory a mount's pin (an O_PATH
// descriptor of the source checked at launch) is, through the pin
// itself: whatever the source's path names by now. An error when the
// pin is not a directory.
func OpenPinnedDir(pin *os.File) (*os.File, error) {
	return os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", pin.Fd()), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}
