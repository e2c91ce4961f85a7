package daemon

import (
	"fmt"

	"github.com/mcpcage/mcpcage/internal/subid"
)

// Accounts. A user with subordinate uids (/etc/subuid) can act as any of
// them through a user namespace of its own (newuidmap), keeping its
// supplementary groups (mcpcage's, which opens the socket), and so came
// to the daemon as 65,536 users: every per-user bound multiplied (found
// by a red-team helper: 330 uids holding idle connections took the
// daemon's descriptors, one user stored 20 times its secrets' quota).
//
// So each bound charges an account: the peer's own uid, or, for a
// subordinate uid (one the user database does not know, in a range of
// /etc/subuid whose owner it does: package subid), its owner's. The
// connection keeps its own identity (its sessions run as that uid, the
// audit log names it uid:N and says whom it was charged to); what it
// holds counts toward its owner's bounds. The stores on root's disk (a
// user's own secrets and servers) are not kept for subordinate uids at
// all (refuseStore): a range is the owner's for as long as the file says
// so, and whatever a uid of it left would pass to the next user given
// that range.

// subuidPath is the subordinate uid file the daemon reads.
const subuidPath = subid.DefaultPath

// account is who a per-user bound charges.
type account struct {
	uid   uint32       // the uid whose bounds these are
	owner *subid.Owner // for a subordinate uid (the peer's, sub), its owner: uid is owner.UID
	sub   uint32
}

// account returns who p's per-user bounds charge.
func (p Peer) account() account {
	if p.Owner != nil {
		return account{uid: p.Owner.UID, owner: p.Owner, sub: p.UID}
	}
	return account{uid: p.UID}
}

// who names the account in a refusal: "uid 1000", or what a subordinate
// uid counts as.
func (a account) who() string {
	if a.owner == nil {
		return fmt.Sprintf("uid %d", a.uid)
	}
	return fmt.Sprintf("uid %d counts as its owner %s (uid %d, /etc/subuid), who", a.sub, a.owner.Name, a.uid)
}

// logAttrs are the account's attributes in a log line: none for an
// account of its own.
func (a account) logAttrs() []any {
	if a.owner == nil {
		return nil
	}
	return []any{"charged_to", a.owner.Name, "charged_to_uid", a.uid}
}

// chargeTo finds whom p's bounds charge (p.Owner). Ranges root owns
// (system containers' uids, LXD's or Incus's) are left alone: only root
// maps them, and charging them to root would let those containers, were
// the socket in reach of them, take the administrator's own slots.
func (d *Daemon) chargeTo(p *Peer) {
	if d.subuids == nil || p.UID == 0 {
		return
	}
	o, ok, err := d.subuids.OwnerOf(p.UID)
	if err != nil {
		// Said once per change of the file (package subid).
		d.log.Warn("subordinate uids are not known: until /etc/subuid can be read, each of them counts as a user of its own toward per-user bounds", "err", err)
	}
	if ok && o.UID != 0 {
		p.Owner = &o
	}
}

// refuseStore refuses what would keep something of p's on root's disk
// when p is a subordinate uid; what is what ("secrets"), do what to do
// as the owner.
// consentForSubordinate refuses a consent for the sessions of uid when uid
// is a subordinate uid and root does not give it. Consents are kept by
// user name (uid:N for such a uid), each name bounded on its own: the
// uids of one user's namespaces would multiply that bound by 65,536 (on
// root's disk), and a consent of uid N would pass to whoever is given
// that range next. Root can still give one.
func (d *Daemon) consentForSubordinate(uid uint32, byRoot bool) error {
	if byRoot || uid == 0 || d.subuids == nil {
		return nil
	}
	o, ok, _ := d.subuids.OwnerOf(uid)
	if !ok || o.UID == 0 {
		return nil
	}
	return fmt.Errorf("uid %d is a subordinate uid of %s (/etc/subuid): mcpcaged keeps consents for accounts, not for the uids of their user namespaces (one would pass to whoever is given that range next); root can give one (sudo mcpcage grant --user uid:%d ...), or run the client as %s",
		uid, o.Name, uid, o.Name)
}

func refuseStore(p Peer, what, do string) error {
	if p.Owner == nil {
		return nil
	}
	return fmt.Errorf("uid %d is a subordinate uid of %s (/etc/subuid): mcpcaged keeps %s for accounts, not for the uids of their user namespaces: %s as %s",
		p.UID, p.Owner.Name, what, do, p.Owner.Name)
}
