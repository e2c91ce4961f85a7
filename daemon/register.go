package daemon

import (
	"errors"
	"fmt"

	"github.com/mcpcage/mcpcage/bpf"
)

// registerKernel puts a session's cgroup under the kernel's watch: its
// policy in the maps, its events routed to it. It runs once the task
// exists and before it runs a single instruction of the server.
func (d *Daemon) registerKernel(s *session, pid uint32, cgroupsPath string, policy bpf.Policy) error {
	cgid, err := d.sessionCgroup(pid, cgroupsPath)
	if err != nil {
		return fmt.Errorf("find the session's cgroup: %w", err)
	}
	policy.Owner = s.peer.account().uid // its egress entries count against this account's budget
	if err := d.cage.Register(cgid, policy); err != nil {
		return errors.Join(err, d.cage.Unregister(cgid))
	}
	s.cgid, s.cgroupsPath = cgid, cgroupsPath
	d.mu.Lock()
	d.byCgroup[cgid] = s
	d.mu.Unlock()
	return nil
}

// unregisterKernel removes the session from the kernel maps, once; it
// does nothing for a session that was never registered.
func (d *Daemon) unregisterKernel(s *session) {
	if s.cgid == 0 {
		return
	}
	s.unregisterOnce.Do(func() {
		s.egressMu.Lock() // watchEgress must not write rules for a cgroup id that is gone
		defer s.egressMu.Unlock()
		s.kernelGone = true
		if err := d.cage.Unregister(s.cgid); err != nil {
			s.log.Error("kernel state of the session not fully removed", "cgroup_id", s.cgid, "err", err)
		}
		d.mu.Lock()
		delete(d.byCgroup, s.cgid)
		d.mu.Unlock()
	})
}

// newCall moves the session's call epoch in the kernel before a tool call
// is forwarded: the files the call opens are recorded for it, not folded
// into the records of an earlier call (see bpf.Cage.NewCall).
func (d *Daemon) newCall(s *session) {
	if d.cage == nil || s.cgid == 0 {
		return
	}
	if err := d.cage.NewCall(s.cgid, s.callEpoch.Add(1)); err != nil {
		s.log.Warn("kernel call epoch not moved: the call's repeated file opens may be folded into an earlier call's records", "err", err)
	}
}
