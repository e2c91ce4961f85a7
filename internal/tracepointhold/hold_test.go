package tracepointhold

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestHold(t *testing.T) {
	testenv.RequireRoot(t)
	tests := []struct {
		name  string
		names []string
		want  int
	}{
		{"two tracepoints", []string{"sys_enter_getppid", "sys_exit_getppid"}, 2},
		{"a name this kernel lacks is skipped", []string{"sys_enter_getppid", "sys_enter_no_such_call"}, 1},
		{"none", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Hold("syscalls", tt.names)
			if err != nil {
				t.Fatal(err)
			}
			if h.Count() != tt.want {
				t.Errorf("holds %d tracepoints, want %d", h.Count(), tt.want)
			}
			for _, fd := range h.fds {
				if kind, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil || kind != "anon_inode:[perf_event]" {
					t.Errorf("fd %d is %q (%v), want a perf event", fd, kind, err)
				}
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			if h.Count() != 0 {
				t.Errorf("after Close: holds %d", h.Count())
			}
		})
	}
}

func TestWanted(t *testing.T) {
	testenv.RequireRoot(t)
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		t.Skip("this run has -test.bench: Wanted says no whatever the cases give it")
	}
	tests := []struct {
		name string
		env  string
		args []string
		want bool
	}{
		{"a test run", "", []string{"-test.run=X"}, true},
		{"benchmarks", "", []string{"-test.bench=BenchmarkSyscallOverhead"}, false},
		{"benchmarks, flag and value apart", "", []string{"-test.bench", "."}, false},
		{"benchmarks, two dashes", "", []string{"--test.bench=."}, false},
		{"an empty bench pattern", "", []string{"-test.bench="}, true},
		{"turned off", "0", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvOff, tt.env)
			args := os.Args
			t.Cleanup(func() { os.Args = args })
			os.Args = append([]string{args[0]}, tt.args...)
			if got := Wanted(); got != tt.want {
				t.Errorf("Wanted() = %v with %q and %s=%q, want %v", got, tt.args, EnvOff, tt.env, tt.want)
			}
		})
	}
}
