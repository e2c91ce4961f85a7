package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

func TestFormatEvent(t *testing.T) {
	r := func(v int32) *int32 { return &v }
	base := api.KernelEvent{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Session: "0123456789", Server: "fs", Comm: "node", Pid: 7}
	tests := []struct {
		name string
		mod  func(*api.KernelEvent)
		want string
	}{
		{"open", func(e *api.KernelEvent) { e.Type, e.Path, e.Result = "file.open", "/etc/hosts", r(3) }, "file.open     node[7] /etc/hosts"},
		{"failed open shows the hint", func(e *api.KernelEvent) {
			e.Type, e.Hint, e.Result, e.Error = "file.open", "/nope", r(-2), "ENOENT"
		}, "/nope (ENOENT)"},
		{"rename", func(e *api.KernelEvent) { e.Type, e.Path, e.To, e.Result = "file.rename", "/w/a", "/w/b", r(0) }, "/w/a -> /w/b"},
		{"killed", func(e *api.KernelEvent) {
			e.Type, e.Path, e.Action, e.Rule = "file.denied", "/w/.ssh/k", "SIGKILL", "deny_paths **/.ssh/**"
		}, "/w/.ssh/k  -> SIGKILL (deny_paths **/.ssh/**)"},
		{"connected", func(e *api.KernelEvent) {
			e.Type, e.Addr, e.Proto, e.Result, e.Outcome = "net.connect", "1.2.3.4:443", "tcp", r(0), "handshake"
		}, "tcp 1.2.3.4:443 (connected)"},
		{"refused", func(e *api.KernelEvent) {
			e.Type, e.Addr, e.Proto, e.Result, e.Error, e.Outcome = "net.connect", "1.2.3.4:9", "tcp", r(-111), "ECONNREFUSED", "handshake"
		}, "tcp 1.2.3.4:9 (ECONNREFUSED)"},
		{"abandoned", func(e *api.KernelEvent) {
			e.Type, e.Addr, e.Proto, e.Result, e.Outcome = "net.connect", "1.2.3.4:9", "tcp", r(0), "abandoned"
		}, "tcp 1.2.3.4:9 (closed before connecting)"},
		{"folded repeats", func(e *api.KernelEvent) { e.Type, e.Path, e.Result, e.Repeats = "file.open", "/etc/hosts", r(3), 41 }, "/etc/hosts (+41 opens folded since its last record)"},
		{"tool calls", func(e *api.KernelEvent) { e.Type, e.Path, e.InFlight = "file.open", "/x", []string{"4"} }, "during tools/call 4"},
		// The server's text is one value each: a name cannot pass for a
		// verdict, an argument for an allowed connect.
		{"a path that looks like a verdict", func(e *api.KernelEvent) {
			e.Type, e.Path, e.Result = "file.open", "/w/id_rsa  -> EACCES (deny_paths ~/.ssh)", r(3)
		}, `node[7] "/w/id_rsa  -> EACCES (deny_paths ~/.ssh)"`},
		{"argv that looks like a connect", func(e *api.KernelEvent) {
			e.Type, e.Path, e.Argv = "process.exec", "/usr/bin/curl", []string{"curl", "https://x/ok  -> allowed  during tools/call 3"}
		}, `/usr/bin/curl curl "https://x/ok  -> allowed  during tools/call 3"`},
		{"a command name with spaces", func(e *api.KernelEvent) { e.Type, e.Path, e.Comm = "file.open", "/x", "a b" }, `"a b"[7] /x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			tt.mod(&e)
			if got := formatEvent(e); !strings.Contains(got, tt.want) {
				t.Fatalf("formatEvent = %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
