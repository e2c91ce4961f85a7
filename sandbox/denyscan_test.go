package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// mkdirs creates dirs (relative to root).
func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// fill creates n empty files in dir.
func fill(t *testing.T, dir string, n int) {
	t.Helper()
	mkdirs(t, dir, ".")
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
}

var denyNames = []string{".ssh", ".aws", ".gnupg"}

// A writable mount filled past the entry budget (decoys in a directory
// that sorts before the denied one) neither hides its own shallow denied
// entry nor the search of a mount listed after it; the cut is reported.
func TestScanDeniedBudgetPerMount(t *testing.T) {
	scratch, home := t.TempDir(), t.TempDir()
	mkdirs(t, scratch, ".aws")
	fill(t, filepath.Join(scratch, "!fill"), DenyScanEntries+1)
	// Beside the filled directory, at the same depth: its names are
	// looked up once the budget is spent.
	mkdirs(t, scratch, "proj/.aws")
	// A denied name that is a symbolic link is never masked (runc would
	// follow it), looked up or read.
	if err := os.Symlink("/etc", filepath.Join(scratch, "proj", ".ssh")); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, scratch, "!fill/sub/.ssh")          // in the level being read when the budget ran out: looked up
	mkdirs(t, scratch, "!fill/sub/deeper/.gnupg") // a level past it: not found
	mkdirs(t, home, ".ssh", "src/.gnupg")
	mounts := []BindMount{{Source: scratch, Target: "/scratch", Writable: true}, {Source: home, Target: "/home/u"}}
	scan := ScanDenied(mounts, denyNames)
	if want := []string{"/home/u/.ssh", "/home/u/src/.gnupg", "/scratch/!fill/sub/.ssh", "/scratch/.aws", "/scratch/proj/.aws"}; !slices.Equal(scan.Masks, want) {
		t.Errorf("masks = %q, want %q", scan.Masks, want)
	}
	if want := []IncompleteScan{{Mount: "/scratch", Reason: ScanCutEntries}}; !slices.Equal(scan.Incomplete, want) {
		t.Errorf("incomplete = %v, want %v", scan.Incomplete, want)
	}
}

// Decoys in a sibling directory that sorts first cannot hide a denied
// name nearer the source: every name at one depth is checked before any
// directory one level deeper is read.
func TestScanDeniedBreadthFirst(t *testing.T) {
	src := t.TempDir()
	// 64 decoy masks, then more entries than the budget, all under "!a",
	// which sorts before "b".
	for i := range DenyScanMasks {
		mkdirs(t, src, fmt.Sprintf("!a/%02d/x/.ssh", i))
	}
	fill(t, filepath.Join(src, "!a", "!fill"), DenyScanEntries)
	// Both at depths above the decoys and the filler's entries (3).
	mkdirs(t, src, "b/.aws", "c/.gnupg")
	scan := ScanDenied([]BindMount{{Source: src, Target: "/work", Writable: true}}, denyNames)
	for _, want := range []string{"/work/b/.aws", "/work/c/.gnupg"} {
		if !slices.Contains(scan.Masks, want) {
			t.Errorf("%s not masked; masks %q", want, scan.Masks)
		}
	}
	if len(scan.Incomplete) != 1 || !scan.Incomplete[0].Reason.Budget() {
		t.Errorf("incomplete = %v, want /work cut by a budget", scan.Incomplete)
	}
}

// Once the entry budget is spent, the denied names are looked up in the
// nearest DenyScanLookups directories found but not read, and no more: a
// server's many empty directories cannot make every launch look up names
// in all of them. The nearest are the level being read (its directory
// left) before the next level's.
func TestScanDeniedLookupsAreBounded(t *testing.T) {
	src := t.TempDir()
	dirs := make([]string, DenyScanLookups+100)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("!dirs/d%05d", i)
	}
	mkdirs(t, src, dirs...)
	fill(t, filepath.Join(src, "!fill"), DenyScanEntries)           // spends the budget before "z" is read
	first, past := dirs[0]+"/.ssh", dirs[DenyScanLookups-1]+"/.ssh" // z takes the first look-up
	mkdirs(t, src, "z/.aws", first, past)
	scan := ScanDenied([]BindMount{{Source: src, Target: "/w", Writable: true}}, denyNames)
	for _, tc := range []struct {
		mask   string
		masked bool
	}{
		{"/w/z/.aws", true},   // in the level being read
		{"/w/" + first, true}, // the next level's first
		{"/w/" + past, false}, // the next level's 2000th: past the bound
	} {
		if got := slices.Contains(scan.Masks, tc.mask); got != tc.masked {
			t.Errorf("%s masked: %v, want %v (masks %q)", tc.mask, got, tc.masked, scan.Masks)
		}
	}
	if want := []IncompleteScan{{Mount: "/w", Reason: ScanCutEntries}}; !slices.Equal(scan.Incomplete, want) {
		t.Errorf("incomplete = %v, want %v", scan.Incomplete, want)
	}
}

// Masks are counted per mount, and more denied entries than the bound is
// a cut reported for that mount only.
func TestScanDeniedMasksPerMount(t *testing.T) {
	decoys, home := t.TempDir(), t.TempDir()
	for i := range DenyScanMasks + 1 {
		mkdirs(t, decoys, fmt.Sprintf("%02d/.ssh", i))
	}
	mkdirs(t, home, "z/.ssh")
	scan := ScanDenied([]BindMount{{Source: decoys, Target: "/a", Writable: true}, {Source: home, Target: "/b"}}, denyNames)
	if !slices.Contains(scan.Masks, "/b/z/.ssh") {
		t.Errorf("/b/z/.ssh not masked after another mount's %d decoys", DenyScanMasks+1)
	}
	if n := len(scan.Masks); n != DenyScanMasks+1 {
		t.Errorf("%d masks, want %d", n, DenyScanMasks+1)
	}
	if want := []IncompleteScan{{Mount: "/a", Reason: ScanCutMasks}}; !slices.Equal(scan.Incomplete, want) {
		t.Errorf("incomplete = %v, want %v", scan.Incomplete, want)
	}
}

// The spec names the mounts whose search was cut short, and only when
// there are any.
func TestSpecAnnotatesIncompleteScan(t *testing.T) {
	src := t.TempDir()
	mkdirs(t, src, "a/b/c/d/e/f/g")
	p := Params{Args: []string{"/bin/true"}, Rootfs: "/r", Mounts: []BindMount{{Source: src, Target: "/work"}}, DenyNames: denyNames}
	s, err := BuildSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []IncompleteScan
	if err := json.Unmarshal([]byte(s.Annotations[AnnotationDenyScanIncomplete]), &got); err != nil {
		t.Fatalf("annotation %q: %v", s.Annotations[AnnotationDenyScanIncomplete], err)
	}
	if want := []IncompleteScan{{Mount: "/work", Reason: ScanCutDepth}}; !slices.Equal(got, want) {
		t.Errorf("annotation = %v, want %v", got, want)
	}
	p.Denied = &DenyScan{Masks: []string{"/work/.ssh"}}
	if s, err = BuildSpec(p); err != nil {
		t.Fatal(err)
	}
	if s.Annotations != nil || !slices.Contains(s.Linux.MaskedPaths, "/work/.ssh") {
		t.Errorf("with a search done: annotations %v, masks %q", s.Annotations, s.Linux.MaskedPaths)
	}
}

// A user's mount source over other users' directories: the search sees
// what the user reaches (their own directories whatever the mode, others'
// as the kernel lets them), so the masks (shown to the user in the spec
// and the sandbox's mountinfo) name nothing inside a directory they may
// not enter, and miss nothing the server, running as them, can open.
func TestScanDeniedAsTheMountsUser(t *testing.T) {
	testenv.RequireRoot(t)
	const alice, bob = 4343, 4242
	base := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(base, 0o755))
	mkdirs(t, base, "bob/clients/acme-corp/.aws", "shared/.aws", "shared/sub/.gnupg", "public/.ssh", "alice/.ssh")
	must(filepath.Walk(base, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == base {
			return err
		}
		return os.Lchown(p, bob, bob)
	}))
	must(os.Lchown(filepath.Join(base, "alice"), alice, alice))
	must(os.Chmod(filepath.Join(base, "bob"), 0o700))
	must(os.Chmod(filepath.Join(base, "shared"), 0o711))
	must(os.Chmod(filepath.Join(base, "alice"), 0o000)) // hers: she may chmod it
	m := []BindMount{{Source: base, Target: "/h", Viewer: &Cred{UID: alice, GID: alice}}}
	scan := ScanDenied(m, denyNames)
	if want := []string{"/h/alice/.ssh", "/h/public/.ssh", "/h/shared/.aws"}; !slices.Equal(scan.Masks, want) {
		t.Errorf("masks = %q, want %q", scan.Masks, want)
	}
	if want := []IncompleteScan{{Mount: "/h", Reason: ScanCutUnlisted}}; !slices.Equal(scan.Incomplete, want) {
		t.Errorf("incomplete = %v, want %v", scan.Incomplete, want)
	}
	// The daemon's own view (an administrator's mount) is the whole tree.
	m[0].Viewer = nil
	if scan := ScanDenied(m, denyNames); !slices.Contains(scan.Masks, "/h/bob/clients/acme-corp/.aws") || !slices.Contains(scan.Masks, "/h/shared/sub/.gnupg") {
		t.Errorf("as the daemon: masks = %q", scan.Masks)
	}
}

// A budget's cut is reported over one that is not (an unlisted directory
// or the depth bound met first), whichever came first.
func TestScanCutBudgetOutranks(t *testing.T) {
	tests := []struct{ first, then, want ScanCut }{
		{"", ScanCutDepth, ScanCutDepth},
		{ScanCutDepth, ScanCutEntries, ScanCutEntries},
		{ScanCutUnlisted, ScanCutEntries, ScanCutEntries},
		{ScanCutUnlisted, ScanCutMasks, ScanCutMasks},
		{ScanCutEntries, ScanCutUnlisted, ScanCutEntries},
		{ScanCutDirectory, ScanCutEntries, ScanCutDirectory},
		{ScanCutUnlisted, ScanCutDepth, ScanCutUnlisted},
	}
	for _, tt := range tests {
		if got := tt.first.or(tt.then); got != tt.want {
			t.Errorf("%q then %q: %q, want %q", tt.first, tt.then, got, tt.want)
		}
	}
}

// The search opens directories below the source without following a
// symbolic link: one swapped in for a directory is not entered.
func TestOpenBelowFollowsNoLink(t *testing.T) {
	src, outside := t.TempDir(), t.TempDir()
	mkdirs(t, src, "dir")
	mkdirs(t, outside, ".ssh")
	if err := os.Symlink(outside, filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	root, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	if f, err := openBelow(root, "dir"); err != nil {
		t.Fatalf("a directory: %v", err)
	} else {
		_ = f.Close()
	}
	if f, err := openBelow(root, "link"); err == nil {
		_ = f.Close()
		t.Fatal("a symbolic link to a directory outside was opened")
	}
	if ents := lookUpAs(nil, root, "link", map[string]bool{".ssh": true}); len(ents) != 0 {
		t.Fatalf("names looked up through a symbolic link: %v", ents)
	}
}
