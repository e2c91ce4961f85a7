package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/config"
)

func TestKernelPolicyWithoutEBPF(t *testing.T) {
	no := false
	empty := []string{}
	tests := []struct {
		name    string
		server  config.Server
		require *bool
		err     string
	}{
		{"host network needs eBPF", config.Server{Network: "host"}, nil, `egress rules (network = "host") need eBPF`},
		{"default deny_paths need eBPF", config.Server{Network: "none"}, nil, "deny_paths need eBPF"},
		{"nothing kernel-enforced", config.Server{Network: "none", DenyPaths: &empty}, nil, ""},
		{"require_ebpf = false", config.Server{Network: "host"}, &no, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Daemon.RequireEBPF = tt.require
			d := &Daemon{ebpfErr: "cgroup_sock_addr unavailable: EPERM"}
			d.cfg.Store(cfg)
			p, _, _, err := d.kernelPolicy(context.Background(), &tt.server)
			if tt.err == "" {
				if err != nil || p != nil {
					t.Fatalf("policy %v, err %v; want none and no error", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "require_ebpf = false") {
				t.Fatalf("err = %v, want %q and the way out", err, tt.err)
			}
		})
	}
}
