package testenv

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasADocComment fails when a package of the module lacks
// a package comment.
func TestEveryPackageHasADocComment(t *testing.T) {
	root := "../.."
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "node_modules") {
			return filepath.SkipDir
		}
		// Package clause and comments of each non-test file, by package.
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		documented := map[string]bool{}
		fset := token.NewFileSet()
		for _, e := range ents {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(path, e.Name()), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			name := f.Name.Name
			documented[name] = documented[name] || (f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "")
		}
		for name, has := range documented {
			checked++
			if !has {
				t.Errorf("package %s in %s has no package comment", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 5 {
		t.Fatalf("checked only %d packages: wrong root?", checked)
	}
}
