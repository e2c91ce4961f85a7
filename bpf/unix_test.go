package bpf

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A pathname unix socket a session reaches is checked against deny_paths
// on the file it was bound at (tp_btf/sk_data_ready): a stream or
// seqpacket connect, or a datagram sent, to a socket under a denied name
// kills the caller and says so; a connect elsewhere is recorded; a
// failed connect, an abstract socket and a datagram elsewhere are
// neither. Both ways of reading the kernel's dentries.
//
// Where tp_btf/sk_data_ready is missing, connects are checked at
// connect(2)'s exit instead, and datagrams are not.
func TestUnixSocketsDenied(t *testing.T) {
	for _, rp := range readPaths {
		t.Run(rp.name, func(t *testing.T) { unixSocketsUnderDenyPaths(t, rp.opts) })
	}
	t.Run("at exit", func(t *testing.T) { unixSocketsUnderDenyPaths(t, Options{noUnixPeers: true}) })
}

func unixSocketsUnderDenyPaths(t *testing.T, o Options) {
	c, parent := loadWith(t, o)
	peers, err := c.UnixPeers()
	if peers == o.noUnixPeers {
		t.Fatalf("tp_btf/sk_data_ready attached: %v (%v), want %v", peers, err, !o.noUnixPeers)
	}
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 0}})
	events := watchKinds(t, c, cgid, KindUnixConnect, KindUnixSend)
	dir := t.TempDir()
	for _, d := range []string{".ssh", "ok"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	listen := func(network, name string) string {
		p := filepath.Join(dir, name)
		if network == "unixgram" {
			pc, err := net.ListenPacket(network, p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pc.Close() })
			return p
		}
		ln, err := net.Listen(network, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go acceptAndClose(ln)
		return p
	}
	sshStream, okStream := listen("unix", ".ssh/stream"), listen("unix", "ok/stream")
	sshPacket := listen("unixpacket", ".ssh/packet")
	sshGram, okGram := listen("unixgram", ".ssh/gram"), listen("unixgram", "ok/gram")
	// A name outside the denied directory for a socket bound in it: the
	// check reads where the socket was bound.
	linked := filepath.Join(dir, "ok", "linked")
	if err := os.Link(sshStream, linked); err != nil {
		t.Fatal(err)
	}
	abstract, err := net.Listen("unix", "@mcpcage-unit-"+filepath.Base(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = abstract.Close() }()
	go acceptAndClose(abstract)

	tests := []struct {
		name, loop, proto, addr string
		killed                  bool
		kind                    Kind   // the event, 0 for none
		path                    string // the event's path
	}{
		{"stream connect under the denied name", "dial", "unix", sshStream, true, KindUnixConnect, sshStream},
		{"seqpacket connect under the denied name", "dial", "unixpacket", sshPacket, true, KindUnixConnect, sshPacket},
		{"datagram sent under the denied name", "unixgram-send", "", sshGram, true, KindUnixSend, sshGram},
		{"a name elsewhere for a socket bound there", "dial", "unix", linked, true, KindUnixConnect, sshStream},
		{"stream connect elsewhere", "dial", "unix", okStream, false, KindUnixConnect, okStream},
		{"datagram sent elsewhere", "unixgram-send", "", okGram, false, 0, ""},
		{"no socket there", "dial", "unix", filepath.Join(dir, ".ssh", "missing"), false, 0, ""},
		{"abstract socket", "dial", "unix", abstract.Addr().String(), false, 0, ""},
	}
	for _, tt := range tests {
		if !peers && tt.loop == "unixgram-send" {
			tt.killed, tt.kind = false, 0 // not seen at connect's exit
		}
		t.Run(tt.name, func(t *testing.T) {
			events.take()
			err := runChildIn(t, session, "MCPCAGE_BENCH_LOOP="+tt.loop, "MCPCAGE_BENCH_N=1", "MCPCAGE_BENCH_PROTO="+tt.proto, "MCPCAGE_BENCH_ADDR="+tt.addr)
			if k := killed(t, err); k != tt.killed {
				t.Errorf("killed %v, want %v (%v)", k, tt.killed, err)
			}
			if err := c.Sync(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			got := events.take()
			if tt.kind == 0 {
				if len(got) != 0 {
					t.Fatalf("events %+v, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(got), got)
			}
			e := got[0]
			if e.Kind != tt.kind || e.Killed != tt.killed || !strings.HasSuffix(e.Path, tt.path) || (tt.killed && e.Rule != 0) {
				t.Fatalf("event %s killed %v path %q rule %d; want %s killed %v path %q", e.Kind, e.Killed, e.Path, e.Rule, tt.kind, tt.killed, tt.path)
			}
		})
	}
}
