package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/consent"
)

// pendingOp lists the requests waiting for the user's answer (a user sees
// their own; an administrator everyone's) and answers one: approve (once,
// for the session that asked, or for a while) or deny.
func (d *Daemon) pendingOp(fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	admin := d.isAdmin(peer)
	now := time.Now()
	if req.Op == api.OpPending {
		out := []api.PendingInfo{}
		for _, p := range d.book.List(peer.UID, admin, now) {
			out = append(out, p.PendingInfo)
		}
		replyData(fw, out, log)
		return
	}
	if !req.Answer.Valid() {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("unknown answer %q: once, session, duration or deny", req.Answer)}, log)
		return
	}
	var forDur time.Duration
	if req.For != "" {
		exp, err := parseExpiry(req.For, now)
		if err != nil || exp == nil {
			reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("--for %q: use a duration such as 30m, 8h or 2d", req.For)}, log)
			return
		}
		forDur = exp.Sub(now)
	}
	if req.Answer != api.AnswerDeny { // a refusal only restricts
		if err := d.mayConsent(peer, "approve pending requests", d.ownPending(req.Name, peer.UID, now)); err != nil {
			reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
			return
		}
	}
	p, ok := d.book.Take(req.Name, peer.UID, admin, now)
	if !ok {
		reply(fw, api.Reply{Code: api.CodeNotFound, Error: fmt.Sprintf("no pending request %s of yours: it was answered, or it expired ([daemon] pending_ttl); `mcpcage pending` lists them", req.Name)}, log)
		return
	}
	if req.Answer == api.AnswerSession && !d.sessionLive(p.Session) {
		d.book.Keep(p, now, time.Until(p.Expires)) // not answered: keep it (a new id)
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("the session that asked (%s) has ended, so --session would allow nothing: use --once or --for", p.Session)}, log)
		return
	}
	caller := userName(peer.UID)
	// refused answers an allow the session's hold on the request refuses;
	// the request is dropped (its session refuses it without asking now).
	refused := func(why string) {
		r := pendingRecord(p, req.Answer, caller)
		r["outcome"], r["reason"] = promptDenied, "the answer was not kept: "+why
		d.metrics.ConsentPrompts.WithLabelValues(promptDenied).Inc()
		if err := d.audit.Append(r); err != nil {
			log.Error("a refused answer to a pending request not recorded in the audit log", "err", err)
		}
		reply(fw, api.Reply{Code: api.CodeDenied, Error: fmt.Sprintf("pending request %s cannot be allowed, so it is dropped: %s", req.Name, why)}, log)
	}
	heldBack := func() string {
		if req.Answer == api.AnswerDeny {
			return "" // a refusal only restricts
		}
		d.mu.Lock()
		s := d.sessions[p.Session]
		d.mu.Unlock()
		if s == nil || s.policy == nil {
			return ""
		}
		return s.policy.heldBack(consent.Kind(p.Kind), p.Name)
	}
	if why := heldBack(); why != "" {
		// Its session holds it back since it was kept (a suspect result, a
		// changed pin, the ceiling): a consent would not free it there but
		// would outlive the session for its later ones.
		refused(why)
		return
	}
	if req.Answer != api.AnswerDeny {
		beforeAnswerKept()
	}
	pin := p.Pin
	if pin == "" && d.pins != nil && consent.Kind(p.Kind) == consent.KindTool {
		if cur, ok := d.pins.Get(p.PinKey, p.Name); ok {
			pin = cur.Approved.Digest // the tool was pinned since: bind to that
		}
	}
	rec, err := d.consentFromAnswer(answerGrant{target: p.Target, answer: req.Answer, forDur: forDur, session: p.Session,
		onceTTL: time.Duration(d.conf().Daemon.PendingTTL), pin: pin, digest: p.Digest, by: caller, via: "pending",
		uid: p.UID, definition: p.Definition, byRoot: peer.UID == 0})
	if errors.Is(err, errServerChanged) {
		refused(err.Error()) // that request can no longer be allowed
		return
	}
	if err != nil {
		d.book.Keep(p, now, time.Until(p.Expires))
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
		return
	}
	if rec != nil {
		if why := heldBack(); why != "" {
			refused(why + d.withdrawConsent(rec, caller, heldBackWithdrawal))
			return
		}
	}
	r := pendingRecord(p, req.Answer, caller)
	outcome := promptDenied
	if rec != nil {
		r["consent"], outcome = rec.ID, promptAllowed
		if rec.Session != "" {
			d.trackSessionConsent(rec.Session, rec.ID)
		}
	}
	r["outcome"] = outcome
	d.metrics.ConsentPrompts.WithLabelValues(outcome).Inc()
	if err := d.audit.Append(r); err != nil {
		log.Error("answer to a pending request not recorded in the audit log", "err", err)
	}
	log.Info("pending request answered", "pending", p.ID, "answer", string(req.Answer), "by", caller, "name", p.Name, "server", p.Server, "agent", p.Agent)
	if rec == nil {
		replyData(fw, map[string]any{"denied": true, "until": now.Add(orDur(forDur, time.Duration(d.conf().Daemon.AskDuration)))}, log)
		return
	}
	replyData(fw, rec, log)
}

// pendingRecord is the consent.prompt record of an answer to pending
// request p (the caller adds its outcome).
func pendingRecord(p ask.Pending, answer api.Answer, by string) audit.Record {
	return audit.Record{"type": string(api.RecordConsentPrompt), "form": askCLI, "pending": p.ID, "user": p.User, "agent": p.Agent,
		"server": p.Server, "session": p.Session, "kind": p.Kind, "name": p.Name, "answer": string(answer), "by": by}
}

func orDur(a, b time.Duration) time.Duration {
	if a > 0 {
		return a
	}
	return b
}

// sessionLive reports whether session id is running.
func (d *Daemon) sessionLive(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.sessions[id]
	return ok
}

// trackSessionConsent has session id revoke consent cid when it ends (a
// session that ended already revokes it now).
func (d *Daemon) trackSessionConsent(id, cid string) {
	d.mu.Lock()
	s := d.sessions[id]
	d.mu.Unlock()
	if s != nil && s.policy != nil {
		s.policy.mu.Lock()
		ended := s.policy.consentsEnded
		if !ended {
			s.policy.sessionConsents = append(s.policy.sessionConsents, cid)
		}
		s.policy.mu.Unlock()
		if !ended {
			return
		}
	}
	if r, err := d.consents.Store().Revoke(cid, "mcpcaged", "its session ended"); err == nil {
		d.audit.AppendAsync(consentRevokeRecord(r, "mcpcaged", "its session ended"))
		d.consents.InvalidateFor(r.User, r.Agent, r.Server)
	}
}

// ownPending reports whether pending request id is one of uid's own.
func (d *Daemon) ownPending(id string, uid uint32, now time.Time) bool {
	for _, p := range d.book.List(uid, false, now) {
		if p.ID == id {
			return true
		}
	}
	return false
}
