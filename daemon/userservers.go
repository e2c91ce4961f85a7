package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/distribution/reference"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/pins"
	"github.com/mcpcage/mcpcage/daemon/userservers"
)

// server finds a server for peer: an administrator's definition, else
// one of the peer's own.
func (d *Daemon) server(name string, peer Peer) (*config.Server, bool) {
	if srv, ok := d.conf().Servers[name]; ok {
		return srv, true
	}
	if d.userServers != nil {
		srv, err := d.userServers.Get(peer.UID, name)
		if err == nil {
			return srv, true
		}
		if !errors.Is(err, userservers.ErrNotFound) {
			d.log.Warn("user server refused", "user", userName(peer.UID), "server", name, "err", err)
		}
	}
	return nil, false
}

// serverNamesFor lists the servers peer may run.
func (d *Daemon) serverNamesFor(peer Peer) []string {
	names := d.conf().ServerNames()
	if d.userServers != nil {
		if own, err := d.userServers.List(peer.UID); err == nil {
			for _, s := range own {
				names = append(names, s.Name)
			}
		}
	}
	return names
}

// deniedError is a request the administrator's configuration refuses
// (api.CodeDenied), not a malformed one.
type deniedError struct{ error }

func (e deniedError) Unwrap() error { return e.error }

func (d *Daemon) serverOp(fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	fail := func(err error) {
		code := api.CodeBadRequest
		if errors.As(err, new(deniedError)) {
			code = api.CodeDenied
		}
		reply(fw, api.Reply{Code: code, Error: err.Error()}, log)
	}
	switch req.Op {
	case api.OpServerAdd:
		// Removing stays open: what a subordinate uid stored before can
		// be taken away.
		if err := refuseStore(peer, "servers of their own", "add it (mcpcage server add)"); err != nil {
			log.Info("server add refused", "reason", err)
			reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
			return
		}
		stored, srv, err := d.userServer(peer, req.Def)
		if err != nil {
			fail(err)
			return
		}
		if err := d.putUserServer(peer, srv, stored); err != nil {
			fail(err)
			return
		}
		d.forgetPinsWhenUnused(pins.Key(srv.Name, peer.UID, true), false) // added again: its pins stay
		d.warm.forget(warmKey{server: srv.Name, uid: peer.UID})           // built from what it replaced
		d.log.Info("user server added", "user", userName(peer.UID), "server", srv.Name)
		d.collectImagesSoon() // it may replace a server of the same name that named another image
		reply(fw, api.Reply{OK: true}, log)
	case api.OpServerRm:
		srv, _ := d.server(req.Name, peer)
		if err := d.removeUserServer(peer.UID, req.Name); err != nil {
			fail(err)
			return
		}
		// Its pins go with it: they count toward the user's share. Not
		// while a session of it runs (it would find its held-back tools
		// unpinned, and pin their changed definitions anew): then when
		// the last of those ends.
		d.forgetPinsWhenUnused(pins.Key(req.Name, peer.UID, true), true)
		d.warm.forget(warmKey{server: req.Name, uid: peer.UID})
		if srv != nil && srv.IsRemote() {
			if err := d.forgetSignIns(peer, req.Name, srv); err != nil {
				fail(fmt.Errorf("server %s is removed, but its sign-ins could not be: %w (mcpcage logout %s)", req.Name, err, req.Name))
				return
			}
		}
		d.collectImagesSoon()
		if err := d.audit.Append(audit.Record{"type": "server.rm", "user": userName(peer.UID), "server": req.Name}); err != nil {
			fail(fmt.Errorf("server %s is removed, but the audit log could not record it: %w", req.Name, err))
			return
		}
		reply(fw, api.Reply{OK: true}, log)
	}
}

// forgetSignIns forgets peer's sign-ins to name (srv, a remote server
// being removed) and revokes them where the authorization server offers
// revocation. A user's own server is held to today's user_remote_hosts,
// as a sign-in is: when its hosts are no longer allowed, its sign-ins
// are forgotten without a request to any of them (the tokens then last
// until they expire there), and the log says so.
func (d *Daemon) forgetSignIns(peer Peer, name string, srv *config.Server) error {
	var refused error
	if srv.Personal {
		refused = d.checkUserRemote(srv)
	}
	var hc *http.Client // nil: nothing is revoked
	if refused != nil {
		d.log.Warn("sign-ins of a removed server forgotten, not revoked: its hosts are not allowed", "user", userName(peer.UID), "server", name, "err", refused)
	} else if c, err := d.remoteClient(srv, peer); err == nil {
		hc = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), signinWait)
	defer cancel()
	return d.oauth.RemoveServer(ctx, hc, peer.UID, name)
}

// putUserServer revokes the user's consents for their own server srv
// when stored defines it anew, stores it and records it (taking it back
// when the record fails); no consent is stored meanwhile (serverChange,
// held only for this: not while the answer is written).
func (d *Daemon) putUserServer(peer Peer, srv *config.Server, stored userservers.Server) error {
	d.serverChange.Lock()
	defer d.serverChange.Unlock()
	if err := d.endConsentsOfChangedServer(peer.UID, srv.Name, stored); err != nil {
		return err
	}
	prev, err := d.userServers.Put(peer.UID, srv.Name, stored)
	if err != nil {
		if errors.Is(err, userservers.ErrLimit) {
			d.log.Warn("user server refused", "user", userName(peer.UID), "server", srv.Name, "err", err)
		}
		return err
	}
	// A token given on the command line (--token ghp_...) is not
	// recorded (found by a red-team helper): credentials by their look,
	// and whole values of the user's own secrets and the daemon's (never
	// their heads: the user chose these words, see audit.ScrubArgv).
	own := dirValues(filepath.Join(d.userSecretsRoot(), strconv.FormatUint(uint64(peer.UID), 10)))
	scrub := func(argv []string) []string { return audit.ScrubArgv(argv, 0, nil, append(own, d.secretValues()...)) }
	if err := d.audit.Append(audit.Record{"type": "server.add", "user": userName(peer.UID), "server": srv.Name, "command": scrub(srv.Command), "image": srv.Image, "args": scrub(srv.Args), "url": srv.URLForRecords(),
		"network": srv.Network, "egress": srv.Egress, "mounts": srv.Mounts, "definition": userservers.Digest(stored)}); err != nil {
		return d.undoServerAdd(peer, srv.Name, stored, prev, err)
	}
	return nil
}

// removeUserServer revokes the user's consents for their own server
// name, then removes it; no consent is stored meanwhile (serverChange,
// held only for this: a remote server's sign-ins are removed after it,
// over the network).
func (d *Daemon) removeUserServer(uid uint32, name string) error {
	d.serverChange.Lock()
	defer d.serverChange.Unlock()
	if _, err := d.userServers.Stored(uid, name); err == nil {
		if err := d.endServerConsents(uid, name, "server "+name+" was removed by its user"); err != nil {
			return err
		}
	}
	return d.userServers.Remove(uid, name)
}

// endConsentsOfChangedServer ends the user's consents for their own
// server name when def would replace a different definition of it.
func (d *Daemon) endConsentsOfChangedServer(uid uint32, name string, def userservers.Server) error {
	old, err := d.userServers.Stored(uid, name)
	switch {
	case errors.Is(err, userservers.ErrNotFound):
		return nil
	case err != nil:
		return err
	case userservers.Same(old, def):
		return nil // added again as it was (client setup run twice)
	}
	return d.endServerConsents(uid, name, "server "+name+" was defined anew by its user")
}

// endServerConsents revokes the user's consents for their own server
// name, which they are removing or defining anew, before the change
// takes effect. A consent was given for the server as it was (under
// consents_by = "admin", after an administrator's review of it): the
// same name on another program is not that server, and an agent with a
// shell could otherwise swap the program under an administrator's grant
// (server rm, then server add, which also drops its tool pins).
func (d *Daemon) endServerConsents(uid uint32, name, why string) error {
	if _, admin := d.conf().Servers[name]; admin {
		return nil // the administrator's server of that name is the one sessions run
	}
	recs, err := d.consents.Store().RevokeServer(userName(uid), name, "mcpcaged", why)
	for _, r := range recs {
		d.audit.AppendAsync(consentRevokeRecord(r, "mcpcaged", why))
		d.consentChanged(r.User, r.Agent, r.Server)
	}
	// Its pending requests were made to the old definition: an answer
	// to one would make a consent for the new (found by a red-team helper).
	dropped := d.book.DropServer(userName(uid), name)
	if len(recs) > 0 || dropped > 0 {
		d.updateConsentGauge()
		d.log.Info("consents and pending requests of a user's server ended", "user", userName(uid), "server", name, "consents", len(recs), "pending", dropped, "why", why)
	}
	if err != nil {
		return fmt.Errorf("the consents for %s could not be ended, so it was not changed: %w", name, err)
	}
	return nil
}

// undoServerAdd takes back a stored server add whose audit record failed
// (auditErr): the definition it replaced (prev) is stored again, or the
// new name removed, so a failed add loses nothing. It returns the error
// to answer.
func (d *Daemon) undoServerAdd(peer Peer, name string, stored userservers.Server, prev *userservers.Server, auditErr error) error {
	if err := d.userServers.Undo(peer.UID, name, stored, prev); err != nil {
		d.log.Error("user server stored but neither audited nor undone", "user", userName(peer.UID), "server", name, "replaced", prev != nil, "audit_err", auditErr, "undo_err", err)
		return fmt.Errorf("the server could not be recorded in the audit log (%w), and undoing the add failed too (%v): the new definition of %s is stored, unrecorded; ask your administrator to repair the audit log (mcpcage status), then add the definition you want again", auditErr, err, name)
	}
	if prev != nil {
		return fmt.Errorf("the server could not be recorded in the audit log, so it was not replaced (your previous definition of %s stands): %w", name, auditErr)
	}
	return fmt.Errorf("the server could not be recorded in the audit log, so it was not added: %w", auditErr)
}

// pinKeyInUseLocked reports whether a running session uses the pins of
// key; d.mu is held.
func (d *Daemon) pinKeyInUseLocked(key string) bool {
	for _, s := range d.sessions {
		if s.pinKey == key {
			return true
		}
	}
	return false
}

// forgetPinsWhenUnused drops the pins of key now if no session uses
// them, else (removed) when the last session using them ends; removed is
// false when a server of the key is added again, whose pins then stay.
func (d *Daemon) forgetPinsWhenUnused(key string, removed bool) {
	if d.pins == nil {
		return
	}
	d.mu.Lock()
	forget := removed && !d.pinKeyInUseLocked(key) // under d.mu: no session of it starts meanwhile
	switch {
	case forget:
		d.pins.Forget(key)
		delete(d.pinsToForget, key)
	case removed:
		if d.pinsToForget == nil {
			d.pinsToForget = map[string]bool{}
		}
		d.pinsToForget[key] = true
	default:
		delete(d.pinsToForget, key)
	}
	d.mu.Unlock()
	if forget {
		if err := d.pins.Save(); err != nil {
			d.log.Warn("the removed server's tool pins could not be dropped from the file; the next save retries", "pins", key, "err", err)
		}
	}
}

// forgetPinsOfRemovedServer drops the pins of key, a user's server
// removed while sessions of it ran, once the last of them has ended.
func (d *Daemon) forgetPinsOfRemovedServer(key string) {
	d.mu.Lock()
	marked := d.pinsToForget[key]
	d.mu.Unlock()
	if marked {
		d.forgetPinsWhenUnused(key, true)
	}
}

// userServer turns a user's request into the definition to store and the
// one it runs as: always as the user, on the default sandbox rules, with
// mounts the user can read. The request ([api.ServerDef]) and the stored
// form ([userservers.Server]) have the same keys today but are separate
// contracts (see package userservers): the conversion is spelled out.
func (d *Daemon) userServer(peer Peer, def *api.ServerDef) (userservers.Server, *config.Server, error) {
	if def == nil {
		return userservers.Server{}, nil, errors.New("empty server definition")
	}
	if _, ok := d.conf().Servers[def.Name]; ok {
		return userservers.Server{}, nil, fmt.Errorf("server name %q is defined by the administrator: choose another name", def.Name)
	}
	stored := userservers.Server{Command: def.Command, URL: def.URL, Hosts: def.Hosts, Args: def.Args, Env: def.Env, Workdir: def.Workdir, Network: def.Network, Egress: def.Egress}
	if def.Image != "" {
		ref, err := reference.ParseDockerRef(def.Image)
		if err != nil {
			return userservers.Server{}, nil, fmt.Errorf("image %q: %w", def.Image, err)
		}
		stored.Image = ref.String()
		if err := d.checkUserImage(stored.Image); err != nil {
			return userservers.Server{}, nil, err
		}
	}
	home, _ := delegatorHome(peer)
	for _, m := range def.Mounts {
		src := m.Source
		if src == "~" || strings.HasPrefix(src, "~/") {
			src = filepath.Join(home, strings.TrimPrefix(src, "~"))
		}
		stored.Mounts = append(stored.Mounts, userservers.Mount{Source: src, Target: m.Target, Writable: m.Writable})
	}
	srv, err := stored.Config(def.Name)
	if err != nil {
		return userservers.Server{}, nil, err
	}
	if err := d.checkUserRemote(srv); err != nil {
		return userservers.Server{}, nil, err
	}
	// First checks as the user, for a clear error now; every launch
	// checks again (daemon/params.go pinSource, checkUserTargets).
	var hostDirs []string
	if srv.Image == "" && d.hostView != nil {
		hostDirs = d.hostView.Dirs
	}
	if err := checkUserTargets(srv, peer, hostDirs); err != nil {
		return userservers.Server{}, nil, deniedError{err} // client setup leaves such an entry as it is
	}
	for _, m := range srv.Mounts {
		f, err := userservers.OpenSource(m.Source, userservers.CredOf(peer.UID, peer.GID), m.Writable())
		if err != nil {
			return userservers.Server{}, nil, err
		}
		_ = f.Close() // an O_PATH descriptor: only the check mattered
	}
	return stored, srv, nil
}

// checkUserImage refuses an image the administrator does not allow users'
// own servers ([daemon] user_images).
func (d *Daemon) checkUserImage(image string) error {
	if dc := &d.conf().Daemon; !dc.UserImageAllowed(image) {
		return deniedError{fmt.Errorf("servers of your own may not run image %s on this host ([daemon] user_images = %q): ask your administrator", image, dc.UserImages)}
	}
	return nil
}
