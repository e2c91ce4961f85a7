package daemon

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/sandbox"
)

// maxLostShown bounds the paths a record of lost masks names.
const maxLostShown = 16

// maskCheckEvery is how often a session's masked paths are checked.
const maskCheckEvery = 250 * time.Millisecond

// watchMasks ends session s when a path hidden from its sandbox
// (sandbox.WatchedMasks: hidden_paths and AlwaysHidden) becomes visible
// there: the host replaced it (the kernel then drops the mask in
// every namespace), or made one that did not exist at the start (see
// sandbox.MaskCheck). The session is killed and says why; a server that
// reads such a file between the host's change and the next check (at
// most maskCheckEvery) has read it, which the README says.
//
// The host's own secrets of sandbox.AlwaysHidden are followed only for a
// server that runs as root: they are root's files, unreadable to any
// other uid (servers get no supplementary groups), and the host rewrites
// some of them whenever a user changes a password (passwd renames a new
// /etc/shadow over the old), which must not end every user's sessions.
func (d *Daemon) watchMasks(s *session, inst *sandbox.Instance, uid uint32) {
	masks := inst.Masks
	if uid != 0 {
		masks = slices.DeleteFunc(slices.Clone(masks), func(p string) bool { return slices.Contains(sandbox.AlwaysHidden, p) })
	}
	if len(masks) == 0 {
		return
	}
	mc, err := sandbox.NewMaskCheck(inst.Pid, masks)
	if err != nil {
		select {
		case <-inst.Exited():
		default:
			s.log.Warn("the sandbox's hidden paths cannot be followed: a path the host replaces while the session runs would be visible to the server", "err", err)
		}
		return
	}
	defer func() { _ = mc.Close() }()
	t := time.NewTicker(maskCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-inst.Exited():
			return
		case <-t.C:
		}
		lost, err := mc.Lost()
		if err != nil || len(lost) == 0 {
			continue // an error: the server is gone (its /proc entry with it), Exited follows
		}
		if len(lost) > maxLostShown {
			lost = append(lost[:maxLostShown:maxLostShown], fmt.Sprintf("and %d more", len(lost)-maxLostShown))
		}
		why := fmt.Sprintf("%s, hidden from its sandbox, became visible there (the host replaced or made it, which drops or bypasses the mask)", strings.Join(lost, ", "))
		if !s.killedBy.CompareAndSwap(nil, why) {
			return
		}
		s.maskLost.Store(true)
		action, _ := d.killSession(s)
		s.stopForPolicy()
		s.log.Error("a hidden path became visible in the sandbox: "+action, "paths", lost)
		d.audit.Enqueue(audit.Record{"type": string(api.RecordSandboxMaskLost), "session": s.id, "server": s.server, "user": s.user,
			"agent": s.agent, "paths": lost, "action": action}, audit.Essential)
		return
	}
}
