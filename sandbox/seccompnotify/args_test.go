package seccompnotify

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestSafeArgs(t *testing.T) {
	ptr := uint64(0x7ffd12345678) // a pointer: never reported
	tests := []struct {
		name string
		ev   Event
		want map[string]any
	}{
		{"unshare flags in hex", Event{Syscall: "unshare", Args: [6]uint64{unix.CLONE_NEWUSER}}, map[string]any{"flags": "0x10000000"}},
		{"mount: flags, no pointers", Event{Syscall: "mount", Args: [6]uint64{ptr, ptr, ptr, unix.MS_BIND, ptr}}, map[string]any{"flags": "0x1000"}},
		{"ptrace request and pid", Event{Syscall: "ptrace", Args: [6]uint64{unix.PTRACE_ATTACH, 1, ptr, ptr}}, map[string]any{"request": int64(16), "pid": int64(1)}},
		{"AT_FDCWD is signed", Event{Syscall: "open_tree", Args: [6]uint64{uint64(0xffffffffffffff9c), ptr, 1}}, map[string]any{"dfd": int64(-100), "flags": "0x1"}},
		{"a set-ID mode in octal", Event{Syscall: "openat", Args: [6]uint64{uint64(0xffffffffffffff9c), ptr, unix.O_CREAT | unix.O_WRONLY, 0o4755}},
			map[string]any{"dfd": int64(-100), "flags": "0x41", "mode": "04755"}},
		{"unknown call: nothing", Event{Syscall: "syscall 999", Args: [6]uint64{ptr}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.ev.SafeArgs()); diff != "" {
				t.Fatalf("SafeArgs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSafeArgsNamesKnownCalls: every argument table names a call the
// listener can report, so none is dead.
func TestSafeArgsNamesKnownCalls(t *testing.T) {
	if len(names) == 0 {
		t.Skip("no syscall names on this architecture")
	}
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	for n := range safeArgs {
		if !known[n] {
			t.Errorf("safeArgs has %q, which is not a reported call", n)
		}
	}
}
