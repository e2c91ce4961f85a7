package integration

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestNetworkModes(t *testing.T) {
	setup(t) // env.bin is known after setup
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "host says hi") })}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"
	ts := filepath.Join(env.bin, "testserver")
	d := startDaemon(t, fmt.Sprintf("[servers.hostnet]\ncommand = [%q]\nnetwork = \"host\"\negress = [%q]\n"+
		"[servers.hostnet-closed]\ncommand = [%q]\nnetwork = \"host\"\n", ts, ln.Addr().String(), ts))
	tests := []struct {
		server string
		reach  bool
	}{{"test", false}, {"hostnet", true}, {"hostnet-closed", false}}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			c := d.connect(t, tt.server, mcp.ProtocolVersion20251125)
			got, isErr := callText(t, c, "http_get", map[string]any{"url": url})
			if reached := !isErr && strings.Contains(got, "host says hi"); reached != tt.reach {
				t.Fatalf("server %s reached the host's loopback = %v (%q), want %v", tt.server, reached, got, tt.reach)
			}
		})
	}
}

func TestHiddenAndReadonlyPaths(t *testing.T) {
	setup(t) // env.bin is known after setup
	ts := filepath.Join(env.bin, "testserver")
	d := startDaemon(t, fmt.Sprintf("[servers.masked]\ncommand = [%q]\nhidden_paths = [\"/etc/hostname\", \"/etc/apt\"]\nreadonly_paths = [\"/tmp\"]\n", ts))
	c := d.connect(t, "masked", mcp.ProtocolVersion20251125)
	for _, tt := range []struct{ args []string }{
		{[]string{"read", "/etc/hostname"}},
		{[]string{"read", "/etc/apt/sources.list"}},
		{[]string{"write", "/tmp/x"}},
	} {
		if got := attack(t, c, tt.args...); !strings.HasPrefix(got, "DENIED") {
			t.Errorf("%v: %q, want DENIED", tt.args, got)
		}
	}
	// The same reads work without the rules: the paths exist.
	plain := d.connect(t, "test", mcp.ProtocolVersion20251125)
	if got := attack(t, plain, "read", "/etc/hostname"); !strings.HasPrefix(got, "ESCAPED") {
		t.Fatalf("control read of /etc/hostname: %q", got)
	}
}
