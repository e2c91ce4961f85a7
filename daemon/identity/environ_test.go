package identity

import (
	"slices"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
)

// Every variable identity reads is among those the kernel keeps at exec,
// and the names fit the stamper.
func TestEnvNamesCoverEveryCheckedVariable(t *testing.T) {
	names := EnvNames()
	if len(names) > bpf.EnvPatternsMax {
		t.Fatalf("%d names; the stamper takes %d", len(names), bpf.EnvPatternsMax)
	}
	for _, n := range names {
		if len(n) > bpf.EnvPatternLen {
			t.Errorf("name %q over %d bytes", n, bpf.EnvPatternLen)
		}
	}
	kept := func(v string) bool {
		return slices.ContainsFunc(names, func(p string) bool { return strings.HasPrefix(v, p) })
	}
	checked := append(append([]string{"PATH", "NODE_OPTIONS", "BASH_FUNC_x%%", "NODE_PATH"}, loader...), compiledRunsOther...)
	for _, g := range interpreters {
		checked = append(append(checked, g.env...), g.envAllow...)
		for _, own := range g.envOwn {
			checked = append(checked, own+"ANYTHING")
		}
	}
	for _, v := range checked {
		if !kept(v + "=x") {
			t.Errorf("%s is checked but not kept at exec", v)
		}
	}
	for _, v := range []string{"HOME=/root", "PATHX=1", "ENVIRONMENT=1", "XLD_PRELOAD=1"} {
		if kept(v) {
			t.Errorf("%s is kept, yet nothing checks it", v)
		}
	}
}

// A variable the kernel cut counts only where a check would read it.
func TestCutVariables(t *testing.T) {
	tests := []struct {
		name     string
		cut      []string
		compiled string // compiledCut
		node     string // node's cutChecked
		python   string // python's
	}{
		{"PATH", []string{"PATH"}, "", "", ""},
		{"NODE_OPTIONS", []string{"NODE_OPTIONS"}, "NODE_OPTIONS", "NODE_OPTIONS", ""},
		{"LD_LIBRARY_PATH", []string{"LD_LIBRARY_PATH"}, "LD_LIBRARY_PATH", "LD_LIBRARY_PATH", "LD_LIBRARY_PATH"},
		{"BASH_FUNC_x%%", []string{"BASH_FUNC_x%%"}, "", "", ""},
		{"none", nil, "", "", ""},
	}
	for _, tt := range tests {
		if got := compiledCut(tt.cut); got != tt.compiled {
			t.Errorf("%s: compiled %q, want %q", tt.name, got, tt.compiled)
		}
		if got := node.cutChecked(tt.cut); got != tt.node {
			t.Errorf("%s: node %q, want %q", tt.name, got, tt.node)
		}
		if got := python.cutChecked(tt.cut); got != tt.python {
			t.Errorf("%s: python %q, want %q", tt.name, got, tt.python)
		}
	}
	// python started by name needs PATH, and says so.
	if _, err := programPath(programInfo{argv0: "python3", pathCut: true}); err == nil || !strings.Contains(err.Error(), "PATH was over 510 bytes") {
		t.Errorf("python3 with PATH cut: %v", err)
	}
	if got, err := programPath(programInfo{argv0: "/usr/bin/python3", pathCut: true}); err != nil || got != "/usr/bin/python3" {
		t.Errorf("an absolute python with PATH cut: %q, %v", got, err)
	}
}
