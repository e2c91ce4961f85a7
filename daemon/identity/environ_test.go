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
