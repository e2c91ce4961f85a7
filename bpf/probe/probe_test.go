package probe

import (
	"os"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// TestProbeThisKernel checks the probes against what was measured on the
// kernel mcpcage's CI runs (6.18, lockdown=integrity): the hooks that work
// must be found; where fentry/LSM are refused they must be reported with
// the reason, and where they load (other kernels) that is fine too.
func TestProbeThisKernel(t *testing.T) {
	testenv.RequireRoot(t)
	root := CgroupV2Root()
	testenv.Require(t, root != "", "a cgroup v2 hierarchy")
	res := Run(root)
	t.Logf("probe: %s", res)
	for _, must := range []string{Tracepoint, RawTracepoint, TpBTF, CgroupSockAddr, SendSignal, RingBuffer} {
		if !res[must].OK {
			t.Errorf("%s: %s; this kernel is known to allow it", must, res[must].Err)
		}
	}
	for _, k := range []string{Fentry, LSM} {
		if r, ok := res[k]; !ok || (!r.OK && r.Err == "") {
			t.Errorf("%s: no result or no reason: %+v", k, r)
		}
	}
	// Nothing left behind.
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "mcpcage-probe-") {
			t.Errorf("probe cgroup left behind: %s", e.Name())
		}
	}
	if s := res.String(); !strings.Contains(s, "tracepoint=yes") {
		t.Errorf("String() = %q", s)
	}
}
