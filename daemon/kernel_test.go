package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/bpf"
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

// TestKernelCheckedName: only one component relative to a directory the
// kernel checked, not cut short, skips the daemon's resolution; names
// through directories (which may be symlinks), absolute names and
// renames are resolved.
func TestKernelCheckedName(t *testing.T) {
	long := strings.Repeat("a", bpf.HintMax)
	tests := []struct {
		name string
		ev   bpf.Event
		want bool
	}{
		{"rmdir of one component", bpf.Event{Kind: bpf.KindRmdir, Hint: "x0"}, true},
		{"unlink of one component", bpf.Event{Kind: bpf.KindUnlink, Hint: "f.tmp"}, true},
		{"mkdir of one component", bpf.Event{Kind: bpf.KindMkdir, Hint: ".staging"}, true},
		{"through a directory (a symlink?)", bpf.Event{Kind: bpf.KindUnlink, Hint: "lnk/id_ed25519"}, false},
		{"absolute", bpf.Event{Kind: bpf.KindUnlink, Hint: "/work/f"}, false},
		{"dot-dot", bpf.Event{Kind: bpf.KindRmdir, Hint: ".."}, false},
		{"a name as long as the buffer: maybe cut short", bpf.Event{Kind: bpf.KindUnlink, Hint: long}, false},
		{"a rename: the new name has its own directory", bpf.Event{Kind: bpf.KindRename, Hint: "a"}, false},
		{"no name", bpf.Event{Kind: bpf.KindUnlink}, false},
		{"truncate follows a symlink in its name", bpf.Event{Kind: bpf.KindTruncate, Hint: "f"}, false},
		{"chmod follows a symlink in its name", bpf.Event{Kind: bpf.KindChmod, Hint: "f"}, false},
		{"lchown of one component", bpf.Event{Kind: bpf.KindChown, Hint: "f", AtFlags: bpf.AtSymlinkNofollow}, true},
		{"lsetxattr through a directory", bpf.Event{Kind: bpf.KindXattr, Hint: "lnk/f", AtFlags: bpf.AtSymlinkNofollow}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kernelCheckedName(tt.ev); got != tt.want {
				t.Fatalf("kernelCheckedName(%+v) = %v, want %v", tt.ev, got, tt.want)
			}
		})
	}
}

// The configuration's bounds of egress_entries_per_user are the kernel's:
// its tries' capacity, and the cage's default budget.
func TestEgressBudgetBoundsAreTheKernels(t *testing.T) {
	if config.MaxEgressEntriesPerUser != bpf.EgressTrieEntries || config.DefaultEgressEntriesPerUser != bpf.DefaultEgressBudget {
		t.Fatalf("config: at most %d, default %d; the kernel's tries hold %d, the cage's default is %d",
			config.MaxEgressEntriesPerUser, config.DefaultEgressEntriesPerUser, bpf.EgressTrieEntries, bpf.DefaultEgressBudget)
	}
}
