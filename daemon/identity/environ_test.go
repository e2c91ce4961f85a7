package identity

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
)

// Every variable identity reads is among those the kernel keeps at exec,
// with its value where the value is read, and the names fit the stamper.
func TestEnvNamesCoverEveryCheckedVariable(t *testing.T) {
	names := EnvNames()
	if len(names) > bpf.EnvPatternsMax {
		t.Fatalf("%d names; the stamper takes %d", len(names), bpf.EnvPatternsMax)
	}
	for _, n := range names {
		if len(n.Pattern) > bpf.EnvPatternLen {
			t.Errorf("name %q over %d bytes", n.Pattern, bpf.EnvPatternLen)
		}
	}
	// first is the pattern a variable counts under (the kernel's rule).
	first := func(v string) (EnvName, bool) {
		for _, n := range names {
			if strings.HasPrefix(v, n.Pattern) {
				return n, true
			}
		}
		return EnvName{}, false
	}
	checked := append(append([]string{"BASH_FUNC_x%%", "NODE_PATH"}, loader...), compiledRunsOther...)
	for _, g := range interpreters {
		checked = append(append(checked, g.env...), g.envAllow...)
		for _, own := range g.envOwn {
			checked = append(checked, own+"ANYTHING")
		}
	}
	for _, v := range append(checked, valueRead...) {
		n, ok := first(v + "=x")
		if !ok {
			t.Errorf("%s is checked but not kept at exec", v)
		}
		if slices.Contains(valueRead, v) && !n.Value {
			t.Errorf("%s's value is read, but it counts under %+v", v, n)
		}
	}
	for _, v := range []string{"HOME=/root", "PATHX=1", "ENVIRONMENT=1", "XLD_PRELOAD=1"} {
		if n, ok := first(v); ok {
			t.Errorf("%s is kept (under %+v), yet nothing checks it", v, n)
		}
	}
}

// An environment is unchecked when the kernel did not record it while
// it records execs, or when a variable is set twice.
func TestAgentEnviron(t *testing.T) {
	tests := []struct {
		name      string
		st        *Stamp
		stamping  bool
		unchecked string // in the reason; "" when checked
	}{
		{"the kernel's copy", &Stamp{Env: []byte("PATH=/usr/bin\x00LD_PRELOAD=x\x00")}, true, ""},
		{"older than the record", nil, true, "began recording execs"},
		{"PATH twice", &Stamp{Env: []byte("PATH=/home/a/v/bin\x00PATH=/usr/bin\x00")}, true, "PATH is set more than once"},
		{"PATH twice, one cut", &Stamp{Env: []byte("PATH=/usr/bin\x00"), EnvCut: []string{"PATH"}}, true, "PATH is set more than once"},
		{"the kernel's reason kept", &Stamp{EnvUnchecked: "too large"}, true, "too large"},
	}
	for _, tt := range tests {
		_, _, unchecked, err := agentEnviron(os.Getpid(), tt.st, tt.stamping)
		if err != nil || (tt.unchecked == "") != (unchecked == "") || !strings.Contains(unchecked, tt.unchecked) {
			t.Errorf("%s: unchecked %q, %v; want %q", tt.name, unchecked, err, tt.unchecked)
		}
	}
	// Without a kernel record, /proc is read.
	env, _, unchecked, err := agentEnviron(os.Getpid(), nil, false)
	if err != nil || unchecked != "" || !bytes.Contains(env, []byte("PATH=")) {
		t.Errorf("no kernel record: %q, %q, %v", env, unchecked, err)
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
