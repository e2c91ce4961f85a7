package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The binary an MCP client spawns for every session must stay small: the
// consent store's SQLite, CEL and protobuf live in the daemon only.
func TestShimBinaryLinksNoDaemonWeight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps found only %d packages: %q", len(deps), deps)
	}
	for _, dep := range deps {
		for _, heavy := range []string{"modernc.org/sqlite", "cel.dev/", "google.golang.org/protobuf", "github.com/cilium/ebpf", "github.com/containerd/containerd"} {
			if strings.HasPrefix(dep, heavy) {
				t.Errorf("mcpcage links %s (from %s): it belongs in mcpcaged", heavy, dep)
			}
		}
	}
}
