package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mcpcage/mcpcage/internal/dnstest"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The kernel's egress tries are shared by every session and can be full
// (another user's servers with long egress lists). An update of a
// session's rules that did not fit left the previous rules in force: a
// host name's old address stayed allowed past its TTL, and a new address
// of the host to leave out of "public" was never left out (found by a
// red-team helper). Now the session's rules are removed until the update
// fits: every connection is refused meanwhile, and said why.
func TestEgressUpdateThatDoesNotFitAllowsNothing(t *testing.T) {
	s := startNameFollower(t)
	d, dns, first, second, get := s.d, s.dns, s.first, s.second, s.get
	// Fill the daemon's IPv4 egress trie with entries of a cgroup id no
	// session has, as other sessions' rules would.
	trie := daemonMap(t, d, "connect4", "egress4")
	defer func() { _ = trie.Close() }()
	var filler [][]byte
	defer func() {
		for _, k := range filler {
			_ = trie.Delete(k)
		}
	}()
	value := make([]byte, trie.ValueSize())
	for i := 0; ; i++ {
		k := make([]byte, trie.KeySize())
		binary.NativeEndian.PutUint32(k, 64+32)
		binary.NativeEndian.PutUint64(k[4:], 1<<62|7)
		binary.BigEndian.PutUint32(k[12:], uint32(0x0b000000+i))
		if err := trie.Put(k, value); err != nil {
			if !errors.Is(err, ebpf.ErrKeyNotExist) && !strings.Contains(err.Error(), "no space") {
				t.Fatalf("filling the egress trie: %v after %d entries", err, i)
			}
			break
		}
		filler = append(filler, k)
	}
	t.Logf("the IPv4 egress trie is full after %d more entries", len(filler))
	dns.Set("svc.mcpcage.test", dnstest.Record{Addr: netip.MustParseAddr("127.0.0.2"), TTL: 1})
	d.waitLog(`msg="updating egress rules failed: every connection of the session is refused until they are written`)
	for _, addr := range []string{first, second} {
		if got := get(addr); !strings.Contains(got, "operation not permitted") {
			t.Fatalf("GET %s while the session's rules could not be written: %q, want EPERM", addr, got)
		}
	}
	denied := d.record(t, "net.denied", func(r map[string]any) bool { return str(r, "server") == "dyn" && str(r, "addr") == first })
	if !strings.Contains(str(denied, "rule"), "egress rules not written to the kernel") {
		t.Fatalf("net.denied: %v, want the unwritten rules as its reason", denied)
	}
	for _, k := range filler {
		_ = trie.Delete(k)
	}
	filler = nil
	testenv.WaitFor(t, "the rules written once the trie has room", 30*time.Second, func() (bool, string) {
		got := get(second)
		return strings.Contains(got, "reached"), fmt.Sprintf("GET %s: %q", second, got)
	})
	d.waitLog(`msg="egress rules written again: connections follow them"`)
}

// daemonMap opens the map named mapName of the program behind d's pinned
// link pin (its own run's pins: other runs' daemons have their own).
func daemonMap(t *testing.T, d *daemon, pin, mapName string) *ebpf.Map {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(pinRoot(), d.namespace, pin), nil)
	if err != nil {
		t.Fatalf("load the daemon's pinned %s: %v", pin, err)
	}
	defer func() { _ = l.Close() }()
	li, err := l.Info()
	must(t, err, "link info")
	prog, err := ebpf.NewProgramFromID(li.Program)
	must(t, err, "the link's program")
	defer func() { _ = prog.Close() }()
	pi, err := prog.Info()
	must(t, err, "program info")
	ids, ok := pi.MapIDs()
	if !ok {
		t.Fatal("this kernel does not list a program's maps")
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		must(t, err, "open a map of the program")
		if mi, err := m.Info(); err == nil && mi.Name == mapName {
			return m
		}
		_ = m.Close()
	}
	t.Fatalf("the daemon's %s program has no map %s", pin, mapName)
	return nil
}
