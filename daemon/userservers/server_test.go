package userservers

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/config"
)

func TestServerConfig(t *testing.T) {
	ro, rw := true, false
	tests := []struct {
		name string
		in   Server
		want *config.Server // nil: refused
	}{
		{"defaults filled", Server{Command: []string{"srv"}},
			&config.Server{Personal: true, Name: "s", Command: []string{"srv"}, Workdir: "/", Network: "none", Memory: config.DefaultMemory, Pids: config.DefaultPids, CPUs: config.DefaultCPUs, Seccomp: config.SeccompDefault}},
		{"every key a user may set", Server{Command: []string{"srv", "-v"}, Env: map[string]string{"K": "secret:k"}, Workdir: "/w", Network: "host", Egress: []string{"1.2.3.4:443"},
			Mounts: []Mount{{Source: "/home/a/p", Target: "/p/", Writable: true}, {Source: "/home/a/r", Target: "/r"}}},
			&config.Server{Personal: true, Name: "s", Command: []string{"srv", "-v"}, Env: map[string]string{"K": "secret:k"}, Workdir: "/w", Network: "host", Egress: []string{"1.2.3.4:443"},
				Mounts: []config.Mount{{Source: "/home/a/p", Target: "/p", Readonly: &rw}, {Source: "/home/a/r", Target: "/r", Readonly: &ro}},
				Memory: config.DefaultMemory, Pids: config.DefaultPids, CPUs: config.DefaultCPUs, Seccomp: config.SeccompDefault}},
		{"an image's entrypoint", Server{Image: "docker.io/x/y:1", Args: []string{"stdio"}},
			&config.Server{Personal: true, Name: "s", Image: "docker.io/x/y:1", Args: []string{"stdio"}, Network: "none", Memory: config.DefaultMemory, Pids: config.DefaultPids, CPUs: config.DefaultCPUs, Seccomp: config.SeccompDefault}},
		{"no command", Server{}, nil},
		{"args without an image", Server{Command: []string{"srv"}, Args: []string{"x"}}, nil},
		{"egress without network", Server{Command: []string{"srv"}, Egress: []string{"1.2.3.4:443"}}, nil},
		{"relative workdir", Server{Command: []string{"srv"}, Workdir: "w"}, nil},
		{"reserved target", Server{Command: []string{"srv"}, Mounts: []Mount{{Source: "/x", Target: "/proc"}}}, nil},
		{"more mounts than MaxMounts", Server{Command: []string{"srv"}, Mounts: mounts(MaxMounts + 1)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Config("s")
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Config accepted %+v", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Config (-want +got):\n%s", diff)
			}
		})
	}
}

// Config's result shares nothing with the stored definition.
func TestServerConfigCopies(t *testing.T) {
	in := Server{Command: []string{"srv"}, Env: map[string]string{"K": "v"}, Network: "host", Egress: []string{"1.2.3.4:443"}}
	got, err := in.Config("s")
	if err != nil {
		t.Fatal(err)
	}
	got.Command[0], got.Env["K"], got.Egress[0] = "changed", "changed", "changed"
	if in.Command[0] != "srv" || in.Env["K"] != "v" || in.Egress[0] != "1.2.3.4:443" {
		t.Fatalf("the stored definition changed: %+v", in)
	}
}

// mounts are n read-only mounts of one directory at n targets.
func mounts(n int) []Mount {
	out := make([]Mount, n)
	for i := range out {
		out[i] = Mount{Source: "/usr", Target: fmt.Sprintf("/m%d", i)}
	}
	return out
}

// MaxMounts mounts are accepted, one more is refused as a limit.
func TestServerConfigMounts(t *testing.T) {
	if _, err := (Server{Command: []string{"srv"}, Mounts: mounts(MaxMounts)}).Config("s"); err != nil {
		t.Fatalf("%d mounts: %v", MaxMounts, err)
	}
	_, err := (Server{Command: []string{"srv"}, Mounts: mounts(MaxMounts + 1)}).Config("s")
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxMounts)) {
		t.Fatalf("%d mounts: %v, want ErrLimit naming the bound", MaxMounts+1, err)
	}
}
