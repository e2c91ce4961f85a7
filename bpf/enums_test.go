package bpf

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/google/go-cmp/cmp"
)

// cEnum returns the values of enum name in an object's BTF, by enumerator.
func cEnum(t *testing.T, load func() (*ebpf.CollectionSpec, error), name string) map[string]uint64 {
	t.Helper()
	spec, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		t.Fatalf("enum %s: %v", name, err)
	}
	out := map[string]uint64{}
	for _, v := range e.Values {
		out[v.Name] = v.Value
	}
	return out
}

// Every C enumerator the kernel can put in an event has its Go name: a
// kind added to cage.h without one would reach the audit log as
// "kind(12)".
func TestEnumsHaveGoNames(t *testing.T) {
	t.Run("event_kind", func(t *testing.T) {
		want := map[string]uint64{}
		for _, k := range []Kind{KindFileOpen, KindExec, KindConnect, KindNetDenied, KindFileDenied, KindUDPSend,
			KindUnlink, KindRmdir, KindMkdir, KindRename, KindLink, KindTruncate, KindChmod, KindChown, KindXattr, KindUnixConnect, KindUnixSend} {
			want[k.String()] = uint64(k)
		}
		got := map[string]uint64{}
		for c, v := range cEnum(t, loadCage, "event_kind") {
			name := Kind(v).String()
			if strings.HasPrefix(name, "kind(") {
				t.Errorf("%s = %d has no Go name", c, v)
			}
			got[name] = v
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Go kinds (-) vs cage.h's event_kind (+):\n%s", diff)
		}
	})
	t.Run("connect_outcome", func(t *testing.T) {
		got := map[string]string{}
		for c, v := range cEnum(t, loadCage, "connect_outcome") {
			got[c] = ConnectOutcome(v).String()
		}
		want := map[string]string{"CONNECT_NO_RESULT": "no_result", "CONNECT_SYSCALL": "connect",
			"CONNECT_HANDSHAKE": "handshake", "CONNECT_ABANDONED": "abandoned"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("connect_outcome names (-want +got):\n%s", diff)
		}
	})
	t.Run("net_denied_reason", func(t *testing.T) {
		got := map[string]string{}
		for c, v := range cEnum(t, loadBind, "net_denied_reason") {
			got[c] = Event{Kind: KindNetDenied, Flags: uint32(v)}.NetDenial()
		}
		want := map[string]string{"NET_DENIED_BIND": "bind", "NET_DENIED_LISTEN": "listen", "NET_DENIED_ROUTING": "routing", "NET_DENIED_NONLOCAL": "nonlocal"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("net_denied_reason names (-want +got):\n%s", diff)
		}
	})
}
