package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
	"github.com/mcpcage/mcpcage/daemon/identity"
	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// mayConsent refuses what only an administrator may do under [daemon]
// consents_by = "admin": giving a consent out of band (what, for the
// message); own says the consent covers the caller's own sessions. Under
// "user" any process of a user may give that user's consents, the agent's
// own shell tool included. Under "admin" a member of admin_group gives
// other users' consents, but its own need root: its agent runs with the
// group, and the point of the setting is a password the agent does not
// have (found by a red-team helper: an admin_group member's process with
// no groups at all granted itself anything).
func (d *Daemon) mayConsent(peer Peer, what string, own bool) error {
	if d.conf().Daemon.ConsentsBy != config.ConsentsByAdmin || peer.UID == 0 {
		return nil
	}
	if !d.isAdmin(peer) {
		return deniedError{fmt.Errorf("on this host only root and the admin group %s (consents_by = \"admin\" in [daemon]): run it with sudo, or ask an administrator", what)}
	}
	if own {
		return deniedError{fmt.Errorf("on this host consents that cover your own sessions need root, admin group or not (consents_by = \"admin\" in [daemon]: your agent runs with your groups): %s with sudo", what)}
	}
	return nil
}

// isAdmin: root, or a member of [daemon] admin_group.
func (d *Daemon) isAdmin(peer Peer) bool {
	if peer.UID == 0 {
		return true
	}
	if d.conf().Daemon.AdminGroup == "" {
		return false
	}
	g, err := user.LookupGroup(d.conf().Daemon.AdminGroup)
	if err != nil || sameGroupAsSocket(g, user.LookupGroup) {
		return false
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(peer.UID), 10))
	if err != nil {
		return false
	}
	ids, _ := u.GroupIds()
	return slices.Contains(ids, g.Gid) || u.Gid == g.Gid
}

// parseExpiry reads "8h", "30m", "2d" or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 {
			t := now.Add(time.Duration(days) * 24 * time.Hour)
			return &t, nil
		}
	}
	if dur, err := time.ParseDuration(s); err == nil {
		if dur <= 0 {
			return nil, fmt.Errorf("--expires %s: must be positive", s)
		}
		t := now.Add(dur)
		return &t, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z07:00", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			if !t.After(now) {
				return nil, fmt.Errorf("--expires %s is in the past", s)
			}
			return &t, nil
		}
	}
	return nil, fmt.Errorf("--expires %q: use a duration (8h, 30m, 2d) or a time (2026-12-01T00:00Z)", s)
}

func (d *Daemon) grant(peer Peer, g *api.Grant) (*consent.Record, error) {
	if g == nil {
		return nil, errors.New("empty grant")
	}
	caller := userName(peer.UID)
	target := caller
	if g.User != "" && g.User != caller && !d.isAdmin(peer) {
		return nil, fmt.Errorf("you (%s) may only grant for yourself; granting for %s needs root or the admin group", caller, g.User)
	}
	tp, err := d.peerOfUser(peer, g.User, "grant for another user")
	if err != nil {
		return nil, err
	}
	if err := d.consentForSubordinate(tp.UID, peer.UID == 0); err != nil {
		return nil, err
	}
	if err := d.mayConsent(peer, "grant consents", tp.UID == peer.UID); err != nil {
		return nil, err
	}
	if tp.UID != peer.UID {
		// The name its sessions have (uid:N for a user the system
		// cannot look up by uid), whatever name the grant gave.
		target = userName(tp.UID)
	}
	if _, ok := d.server(g.Server, tp); !ok {
		return nil, errors.New(unknownServer(g.Server, d.serverNamesFor(tp)))
	}
	if _, ok := d.conf().Agents[g.Agent]; !ok && !strings.HasPrefix(g.Agent, "exe:/") && !strings.HasPrefix(g.Agent, "script:/") {
		names := sortedKeys2(d.conf().Agents)
		return nil, fmt.Errorf("no agent named %q: use a registered agent (%s), exe:/path/to/program or script:/path/to/script", g.Agent, strings.Join(names, ", "))
	}
	if identity.AnyScript(g.Agent, d.agentRules()) && !g.AnyScript {
		return nil, fmt.Errorf("%s is an interpreter or a shell: a grant to it covers every script it runs, including any a process of yours starts. "+
			"Grant to the script instead (script:/path/to/script, as `mcpcage sessions` shows it, or an [agents.NAME] entry with script = [...]), "+
			"or pass --any-script if you mean it", g.Agent)
	}
	if g.Definition != "" && (len(g.Definition) < api.MinDefinitionPrefix || strings.Trim(g.Definition, "0123456789abcdef") != "") {
		return nil, fmt.Errorf("--definition %q: give at least %d hex digits of the digest `mcpcage servers --user USER` shows", g.Definition, api.MinDefinitionPrefix)
	}
	if len(g.Tools)+len(g.Resources)+len(g.Prompts) == 0 {
		return nil, errors.New("nothing to grant: give at least one --tool, --resource or --prompt pattern")
	}
	if err := grantWithinBounds(g); err != nil {
		return nil, err
	}
	for _, p := range slices.Concat(g.Tools, g.Resources, g.Prompts) {
		if !consent.ValidPattern(p) {
			return nil, fmt.Errorf("invalid pattern %q", p)
		}
	}
	if g.When != "" {
		if _, err := consent.Compile(g.When); err != nil {
			return nil, err
		}
	}
	exp, err := parseExpiry(g.Expires, time.Now())
	if err != nil {
		return nil, err
	}
	r := &consent.Record{User: target, UID: int64(tp.UID), Agent: g.Agent, Server: g.Server, Tools: g.Tools, Resources: g.Resources, Prompts: g.Prompts,
		When: g.When, ExpiresAt: exp, CreatedBy: caller, Via: "cli"}
	if g.MaxCalls < 0 {
		return nil, errors.New("--max-calls must be positive")
	}
	if g.MaxCalls > 0 {
		n := g.MaxCalls
		r.MaxCalls = &n
	}
	// Bound to the server as it is defined where no server changes: a
	// server removed since the check above is refused, and one defined
	// anew gets a record only its new definition's sessions use.
	bind := func() (string, error) {
		def, err := d.currentDefinition(tp.UID, g.Server)
		if err != nil || g.Definition == "" {
			return def, err
		}
		switch {
		case def == "":
			return "", fmt.Errorf("--definition names a definition of a user's own server, and %s is the administrator's server", g.Server)
		case !strings.HasPrefix(def, g.Definition):
			return "", fmt.Errorf("server %s of %s is now defined otherwise (%.16s) than --definition %s names: look at it again (mcpcage servers show %s --user %s)", g.Server, target, def, g.Definition, g.Server, target)
		}
		return def, nil
	}
	if err := d.storeConsent(r, caller, bind); err != nil {
		return nil, err
	}
	d.log.Info("consent granted", "consent", r.ID, "user", r.User, "agent", r.Agent, "server", r.Server, "tools", r.Tools,
		"resources", r.Resources, "prompts", r.Prompts, "when", r.When, "expires", exp, "max_calls", g.MaxCalls, "by", caller)
	d.consentChanged(r.User, r.Agent, r.Server)
	return r, nil
}

// storeConsent stores a new record and records it in the audit log: a
// consent nobody can account for must not take effect, so it is
// withdrawn when the audit log fails. A new consent supersedes the
// user's earlier "deny" answers for the same agent and server.
//
// Every consent comes through here (grants, and answers to questions and
// pending requests): a user's consents in force are bounded here, and the
// oldest inactive ones pruned (found by a red-team helper's review: answers
// went around the bound of grants).
//
// bind runs where no server changes (serverChange) and returns the server
// definition the record is for (Record.Definition); an error from it
// keeps the consent from being stored.
func (d *Daemon) storeConsent(r *consent.Record, by string, bind func() (string, error)) error {
	d.serverChange.RLock()
	defer d.serverChange.RUnlock()
	def, err := bind()
	if err != nil {
		return err
	}
	r.Definition = def
	if err := d.audit.Healthy(); err != nil {
		return fmt.Errorf("consents cannot be given while the audit log is failing: %w", err)
	}
	if active, err := d.consents.Store().CountActive(context.Background(), r.User, r.UID); err != nil {
		return err
	} else if active >= maxActiveConsents {
		return fmt.Errorf("%s has %d consents in force, the most one user may: revoke some (mcpcage consents, mcpcage revoke ID) or grant wider patterns", r.User, active)
	}
	if err := d.consents.Store().Add(r); err != nil {
		return err
	}
	defer d.pruneConsents(r.User)
	if err := d.audit.Append(consentGrantRecord(r, by)); err != nil {
		if _, rerr := d.consents.Store().Revoke(r.ID, by, "its grant could not be recorded in the audit log"); rerr != nil {
			d.log.Error("consent stored but neither audited nor withdrawn", "consent", r.ID, "audit_err", err, "revoke_err", rerr)
		}
		d.consents.InvalidateFor(r.User, r.Agent, r.Server)
		return fmt.Errorf("the consent could not be recorded in the audit log, so it was withdrawn: %w", err)
	}
	d.updateConsentGauge()
	d.book.Unrefuse(func(t ask.Target) bool {
		return t.User == r.User && t.Agent == r.Agent && t.Server == r.Server && consent.Covers(r, consent.Kind(t.Kind), t.Name)
	})
	return nil
}

// errServerChanged: the server was removed or defined anew since the
// request an answer allows was made.
var errServerChanged = errors.New("was removed or defined anew since the request was made")

// sameDefinition reports (errServerChanged) when server name, as user uid
// would run it now, is not the definition a session ran when it asked
// (definition: [config.Server].Definition). An answer is given for the
// request its session made to that program: under consents_by = "admin"
// the agent could otherwise swap the program (server add) between the
// question and the answer, or while an administrator's approval was
// being kept, and the consent would cover the new one.
func (d *Daemon) sameDefinition(uid uint32, name, definition string) error {
	now, err := d.currentDefinition(uid, name)
	if errors.Is(err, errNoSuchServer) || (err == nil && now != definition) {
		return fmt.Errorf("server %s %w: an answer for its earlier definition is not kept; the agent can make the request again", name, errServerChanged)
	}
	return err
}

// errNoSuchServer: user uid has no server of that name.
var errNoSuchServer = errors.New("no such server")

// currentDefinition is the definition of server name that user uid's
// sessions run now (config.Server.Definition): "" for the administrator's
// server, the digest of the user's own as stored.
func (d *Daemon) currentDefinition(uid uint32, name string) (string, error) {
	if _, admin := d.conf().Servers[name]; admin {
		return "", nil
	}
	if d.userServers == nil {
		return "", fmt.Errorf("server %s: %w", name, errNoSuchServer)
	}
	stored, err := d.userServers.Stored(uid, name)
	if errors.Is(err, userservers.ErrNotFound) {
		return "", fmt.Errorf("server %s was removed meanwhile: %w", name, errNoSuchServer)
	}
	if err != nil {
		return "", fmt.Errorf("server %s could not be read to bind the consent to its definition: %w", name, err)
	}
	return userservers.Digest(stored), nil
}

// bindUnboundConsents binds the consents stored before consents were
// bound to a server's definition to the definition each user's server of
// that name has now (consent.Store.BindUnbound): what they would have
// covered at this moment, and no later definition. A server that no
// longer exists, and a user the system no longer knows, bind to the
// administrator's server of that name (""). Each bound (user, server) is
// recorded (consent.bind); those that could not be bound cover nothing,
// and the next start tries again.
func (d *Daemon) bindUnboundConsents() {
	bound, err := d.consents.Store().BindUnbound(func(name, server string) (string, error) {
		uid, known, err := uidOfName(name)
		if err != nil || !known {
			return "", err
		}
		def, err := d.currentDefinition(uid, server)
		if errors.Is(err, errNoSuchServer) {
			return "", nil
		}
		return def, err
	})
	for _, b := range bound {
		d.audit.AppendAsync(audit.Record{"type": string(api.RecordConsentBind), "user": b.User, "server": b.Server, "definition": b.Definition, "consents": b.Records})
	}
	if len(bound) > 0 {
		d.log.Info("consents made before consents were bound to a server's definition are bound to the definition their server has now", "pairs", len(bound))
		d.consents.Invalidate()
	}
	if err != nil {
		d.log.Error("consents left unbound: they allow nothing; mcpcaged tries again at its next start", "err", err)
	}
	d.bindConsentUIDs()
}

// bindConsentUIDs binds the consents stored before consents were bound to
// their user's uid to the uid each user has now (consent.Store.BindUIDs);
// those of a user the system no longer knows cover nothing from then on,
// so an account made later under the name inherits none. Each bound user
// is recorded (consent.bind, with its uid).
func (d *Daemon) bindConsentUIDs() {
	bound, err := d.consents.Store().BindUIDs(uidOfName)
	for user, n := range bound {
		rec := audit.Record{"type": string(api.RecordConsentBind), "user": user, "consents": n}
		if uid, known, _ := uidOfName(user); known {
			rec["uid"] = uid
		} else {
			rec["uid"] = "gone"
		}
		d.audit.AppendAsync(rec)
	}
	if len(bound) > 0 {
		d.log.Info("consents made before consents were bound to a uid are bound to the uid their user has now (those of users no longer known cover nothing)", "users", len(bound))
		d.consents.Invalidate()
	}
	if err != nil {
		d.log.Error("consents left unbound to a uid: they allow nothing; mcpcaged tries again at its next start", "err", err)
	}
}

// heldBackWithdrawal is the reason a consent given by an answer is
// withdrawn when its request was held back while the consent was stored.
const heldBackWithdrawal = "its request was held back from its session while the answer was being kept"

// withdrawConsent revokes a consent mcpcaged stored and must not keep, and
// records that. It returns what to add to the caller's refusal when either
// failed ("" when both worked).
func (d *Daemon) withdrawConsent(r *consent.Record, by, reason string) string {
	if _, err := d.consents.Store().Revoke(r.ID, by, reason); err != nil {
		d.log.Error("a consent that must not be kept could not be withdrawn: revoke it with mcpcage revoke", "consent", r.ID, "reason", reason, "err", err)
		return fmt.Sprintf("; consent %s was stored and could not be withdrawn (%v): revoke it with `mcpcage revoke %s`", r.ID, err, r.ID)
	}
	d.updateConsentGauge()
	d.consentChanged(r.User, r.Agent, r.Server)
	if err := d.audit.Append(consentRevokeRecord(r, by, reason)); err != nil {
		d.log.Error("a withdrawn consent's revocation not recorded in the audit log", "consent", r.ID, "err", err)
		return fmt.Sprintf("; consent %s was stored and withdrawn, but the audit log could not record the withdrawal: %v", r.ID, err)
	}
	return ""
}

func (d *Daemon) revoke(peer Peer, id, reason string) (*consent.Record, error) {
	r, err := d.consents.Store().Get(id)
	if err != nil {
		return nil, err
	}
	caller := userName(peer.UID)
	if r.User != caller && !d.isAdmin(peer) {
		return nil, fmt.Errorf("%w: %s", consent.ErrNotFound, id) // other users' records do not exist for you
	}
	if len(reason) > maxRevokeReason {
		return nil, fmt.Errorf("the reason is %d bytes, at most %d", len(reason), maxRevokeReason)
	}
	r, err = d.consents.Store().Revoke(id, caller, reason)
	if err != nil {
		return nil, err
	}
	d.pruneConsents(r.User)
	auditErr := d.audit.Append(consentRevokeRecord(r, caller, reason))
	d.updateConsentGauge()
	d.log.Info("consent revoked", "consent", id, "user", r.User, "agent", r.Agent, "server", r.Server, "by", caller, "reason", reason)
	d.consentChanged(r.User, r.Agent, r.Server)
	if auditErr != nil {
		// The revocation stands (failing closed); the caller learns it is
		// not on the record.
		return r, fmt.Errorf("consent %s is revoked, but the audit log could not record it: %w", id, auditErr)
	}
	return r, nil
}

// Bounds of what one user keeps in the consent store, on root's disk, and
// of what one grant holds (found by a red-team helper: 30 grants of 9000
// patterns each took 34 MB in 7 s, and grants and revocations in a loop
// grew the store without end).
const (
	maxActiveConsents    = 1024    // in force, per user
	maxInactiveConsents  = 1024    // revoked, expired or used up, kept per user (the oldest go; the audit log keeps them all)
	maxGrantPatterns     = 256     // --tool, --resource and --prompt patterns of one grant
	maxGrantPatternBytes = 1 << 10 // one pattern
	maxGrantBytes        = 16 << 10
	maxConditionBytes    = 4 << 10 // --when
	maxRevokeReason      = 1 << 10
)

// grantWithinBounds refuses a grant larger than a consent may be.
func grantWithinBounds(g *api.Grant) error {
	patterns := slices.Concat(g.Tools, g.Resources, g.Prompts)
	if len(patterns) > maxGrantPatterns {
		return fmt.Errorf("the grant has %d patterns, at most %d: use wider patterns (list_*) or several grants", len(patterns), maxGrantPatterns)
	}
	total := len(g.When)
	for _, p := range patterns {
		if len(p) > maxGrantPatternBytes {
			return fmt.Errorf("pattern %.40q... is %d bytes, at most %d", p, len(p), maxGrantPatternBytes)
		}
		total += len(p)
	}
	if len(g.When) > maxConditionBytes {
		return fmt.Errorf("the condition (--when) is %d bytes, at most %d", len(g.When), maxConditionBytes)
	}
	if total > maxGrantBytes {
		return fmt.Errorf("the grant's patterns and condition take %d bytes, at most %d: use wider patterns or several grants", total, maxGrantBytes)
	}
	return nil
}

// pruneConsents lets go of the oldest inactive consents of user past
// maxInactiveConsents (their records stay in the audit log).
func (d *Daemon) pruneConsents(user string) {
	if n, err := d.consents.Store().PruneInactive(user, maxInactiveConsents); err != nil {
		d.log.Warn("inactive consents not pruned; the next grant or revocation tries again", "user", user, "err", err)
	} else if n > 0 {
		d.log.Info("oldest inactive consents deleted from the store (their grants and revocations stay in the audit log)", "user", user, "deleted", n, "kept", maxInactiveConsents)
	}
}

// agentScript describes what an interpreter agent runs, for listings.
func agentScript(p identity.Process) string {
	switch {
	case !p.Interpreter:
		return ""
	case p.Script.Path == "":
		return "any script: " + p.Script.Why
	}
	return p.Script.Path + " sha256:" + p.Script.SHA256
}

func (d *Daemon) consentOp(ctx context.Context, fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	fail := func(err error) {
		code := api.CodeBadRequest
		var denied deniedError
		switch {
		case errors.Is(err, consent.ErrNotFound):
			code = api.CodeNotFound
		case errors.As(err, &denied):
			code = api.CodeDenied
		}
		reply(fw, api.Reply{Code: code, Error: err.Error()}, log)
	}
	caller := userName(peer.UID)
	switch req.Op {
	case api.OpGrant:
		r, err := d.grant(peer, req.Grant)
		if err != nil {
			fail(err)
			return
		}
		replyData(fw, r, log)
	case api.OpRevoke:
		r, err := d.revoke(peer, req.Name, req.Reason)
		if err != nil {
			fail(err)
			return
		}
		replyData(fw, r, log)
	case api.OpConsent:
		r, err := d.consents.Store().Get(req.Name)
		if err == nil && r.User != caller && !d.isAdmin(peer) {
			err = fmt.Errorf("%w: %s", consent.ErrNotFound, req.Name)
		}
		if err != nil {
			fail(err)
			return
		}
		replyData(fw, r, log)
	case api.OpConsents:
		f := consent.Filter{User: req.User, Agent: req.Agent, Server: req.Server, IncludeInactive: req.All}
		if !d.isAdmin(peer) {
			f.User = caller // users see their own records only
		}
		recs, err := d.consents.Store().List(ctx, f)
		if err != nil {
			fail(err)
			return
		}
		if recs == nil {
			recs = []*consent.Record{}
		}
		replyData(fw, recs, log)
	case api.OpSessions:
		admin := d.isAdmin(peer)
		replyData(fw, d.sessionInfos(peer, admin), log)
	}
}

// sessionInfos lists the sessions peer may see (admin: every one), under
// the daemon's lock (a session's names change under it as it starts),
// which a bug here lets go of.
func (d *Daemon) sessionInfos(peer Peer, admin bool) []api.SessionInfo {
	out := []api.SessionInfo{}
	func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, s := range d.sessions {
			if !admin && s.peer.UID != peer.UID {
				continue
			}
			info := api.SessionInfo{ID: s.id, Server: s.server, Agent: s.agent, AgentExe: s.agentP.Exe, AgentInstance: s.instance(),
				User: s.user, Started: s.start.UTC().Format(time.RFC3339), Allowed: s.allowed.Load(), Denied: s.denied.Load(),
				AgentScript: agentScript(s.agentP), AgentBinding: s.agentP.Binding, Stdio: s.stdio, QuestionCode: s.code}
			if s.relay != nil {
				c := s.relay.Claims()
				info.ClientInfo, info.Era = string(c.ClientInfo), string(c.Era)
			}
			if s.run != nil {
				for _, t := range s.run.Taints() {
					info.Taint = append(info.Taint, fmt.Sprintf("%s from %s at %s", t.Label, t.Server, t.Time.UTC().Format(time.RFC3339)))
				}
			}
			out = append(out, info)
		}
	}()
	slices.SortFunc(out, func(a, b api.SessionInfo) int { return strings.Compare(a.Started+a.ID, b.Started+b.ID) })
	return out
}
