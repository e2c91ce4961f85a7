package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// EnableLSM loads the BPF-LSM file_open program (lsm.c), which makes an
// open of a denied path fail with EACCES in the kernel, sharing the
// cage's maps. It is attached with the other observers, while sessions
// run. Call it only where probing found BPF LSM usable; on error the
// cage keeps kill-on-open alone.
func (c *Cage) EnableLSM() error {
	spec, err := loadLsm()
	if err != nil {
		return fmt.Errorf("load the BPF-LSM object: %w", err)
	}
	if err := spec.Variables["session_level"].Set(c.level); err != nil {
		return fmt.Errorf("set session_level: %w", err)
	}
	if err := setSessionClock(spec, c.tick); err != nil {
		return err
	}
	var objs lsmObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		"sessions": c.objs.Sessions, "deny_components": c.objs.DenyComponents, "events": c.objs.Events,
		"lost": c.objs.Lost, "parent_cgroup": c.objs.ParentCgroup,
	}})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("the eBPF verifier rejected the BPF-LSM program: %+v", ve)
		}
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("the kernel refused to load the BPF-LSM program (%w): BPF LSM is off in this kernel (see lsm= on its command line) or a security policy forbids it", unix.EPERM)
		}
		return fmt.Errorf("load the BPF-LSM program: %w", err)
	}
	// Attach once now: refuse here, not at the first session.
	l, err := link.AttachLSM(link.LSMOptions{Program: objs.CageFileOpen})
	if err != nil {
		_ = objs.Close()
		return fmt.Errorf("attach lsm/file_open: %w", err)
	}
	if err := l.Close(); err != nil {
		_ = objs.Close()
		return fmt.Errorf("detach the trial lsm/file_open: %w", err)
	}
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	c.lsm = &objs
	if len(c.obs.sessions) > 0 { // sessions already run: attach now
		l, err := link.AttachLSM(link.LSMOptions{Program: objs.CageFileOpen})
		if err != nil {
			return fmt.Errorf("attach lsm/file_open: %w", err)
		}
		c.obs.links = append(c.obs.links, l)
	}
	return nil
}

// LSM reports whether denied opens fail with EACCES in the kernel.
func (c *Cage) LSM() bool {
	c.obs.mu.Lock()
	defer c.obs.mu.Unlock()
	return c.lsm != nil
}
