// Package testenv gates tests on what the machine provides. On a laptop a
// test that lacks root, containerd or a kernel feature is skipped; with
// CI=true the same test fails, so CI can never pass by skipping.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips (or, in CI, fails) the test when ok is false.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("CI=true and this test needs %s", what)
	}
	t.Skipf("needs %s", what)
}

// RequireRoot requires uid 0.
func RequireRoot(t testing.TB) { t.Helper(); Require(t, os.Geteuid() == 0, "root") }
