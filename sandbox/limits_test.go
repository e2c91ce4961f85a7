package sandbox

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCPUBurst(t *testing.T) {
	quota := func(q int64) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &q}}}}
	}
	tests := []struct {
		name string
		spec *specs.Spec
		want uint64
	}{
		{"no spec", nil, 0},
		{"no resources", &specs.Spec{Linux: &specs.Linux{}}, 0},
		{"no CPU limit", &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}, 0},
		{"unlimited quota", quota(-1), 0},
		{"one CPU", quota(100000), 100000},
		{"half a CPU", quota(50000), 50000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cpuBurst(tt.spec); got != tt.want {
				t.Fatalf("cpuBurst = %d, want %d", got, tt.want)
			}
		})
	}
}
