package bpf

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/bpf/probe"
	"golang.org/x/sys/unix"
)

// Where the kernel runs BPF LSM programs, an open of a denied path fails
// with EACCES and the opener lives. Where it refuses them (this project's
// CI kernel: EPERM at load), everything up to the kernel's refusal must
// work: the object, its CO-RE relocations and the shared maps, and the
// error must be the kernel's EPERM, so the daemon falls back to
// kill-on-open for that reason only.
func TestLSMDeniesOpens(t *testing.T) {
	c, parent := loadForTest(t)
	err := c.EnableLSM()
	if r := probe.Run(parent)[probe.LSM]; !r.OK {
		if err == nil {
			t.Fatalf("EnableLSM succeeded where probing found no BPF LSM (%s)", r.Err)
		}
		if !errors.Is(err, unix.EPERM) {
			t.Fatalf("EnableLSM on a kernel that refuses BPF LSM: %v; want the kernel's EPERM, nothing earlier", err)
		}
		if c.LSM() {
			t.Fatal("LSM() reports the program in force after a failed EnableLSM")
		}
		t.Logf("BPF LSM refused here, as probed (%s): %v", r.Err, err)
		return
	}
	if err != nil {
		t.Fatalf("EnableLSM where probing found BPF LSM: %v", err)
	}
	secret := deniedFile(t)
	session, cgid := sessionForTest(t, c, parent, Policy{DenyComponents: map[string]int{".ssh": 3}})
	var mu sync.Mutex
	var denied []Event
	if err := c.Events(func(e Event) {
		if e.Cgroup == cgid && e.Kind == KindFileDenied {
			mu.Lock()
			denied = append(denied, e)
			mu.Unlock()
		}
	}, func(err error) { t.Error(err) }); err != nil {
		t.Fatal(err)
	}
	if err := openThen(t, session, 1, "", secret); err != nil {
		t.Fatalf("the opener did not live on (BPF LSM refuses the open, nothing kills): %v", err)
	}
	if err := c.Sync(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(denied) != 1 || denied[0].Killed || denied[0].Result != -int32(unix.EACCES) || denied[0].Rule != 3 || denied[0].Path != secret {
		t.Fatalf("file.denied events %+v; want one, EACCES, rule 3, path %s, not killed", denied, secret)
	}
}
