package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/internal/contain"
	"github.com/mcpcage/mcpcage/sandbox"
	"golang.org/x/sys/unix"
)

// Warm sandboxes: after a session of a server for a user ends, the daemon
// builds the next one's sandbox (container, task, namespaces, mounts,
// cgroup, seccomp filter, stdio FIFOs) and leaves its process waiting
// before the server's first instruction. The next session of that server
// for that user takes it, under the prepared sandbox's id, once it has
// checked that a new build would be the same sandbox: the same spec
// (configuration, resolved secrets, mounts, user), the same image digest,
// and the same objects at the pinned mount targets. Anything else
// discards it and builds anew. Nothing of the server runs before its
// session's start is recorded, as for a cold start; the kernel policy is
// registered when the session takes the sandbox.

// warmKey is whom a prepared sandbox is for: a server as one user sees it.
type warmKey struct {
	server string
	uid    uint32
}

// warmSandbox is a prepared sandbox in the pool.
type warmSandbox struct {
	key     warmKey
	id      string // the id of the session that will take it
	prep    *sandbox.Prepared
	fifos   *sandbox.ServerStdio // nil without mcpcage-init (then no pool)
	timer   *time.Timer          // removes it after warm_idle
	sources map[string]fileID    // each mount source as it resolved when built
}

// fileID is a file's identity: its device and inode.
type fileID struct{ dev, ino uint64 }

// sourceIDs resolves every mount source of params (through symlinks, as
// runc did) to the file it names now.
func sourceIDs(params sandbox.Params) (map[string]fileID, error) {
	ids := map[string]fileID{}
	for _, m := range params.Mounts {
		var st unix.Stat_t
		if err := unix.Stat(m.Source, &st); err != nil {
			return nil, fmt.Errorf("mount source %s: %w", m.Source, err)
		}
		ids[m.Source] = fileID{uint64(st.Dev), st.Ino}
	}
	return ids, nil
}

// warmOutcome says how a session's sandbox was found, for the metric.
type warmOutcome string

const (
	warmHit   warmOutcome = "hit"   // a prepared sandbox was started
	warmStale warmOutcome = "stale" // one was there, but no longer matched
	warmMiss  warmOutcome = "miss"  // none was ready
)

// warmPool holds the prepared sandboxes, one per key at most.
type warmPool struct {
	d        *Daemon
	mu       sync.Mutex
	byKey    map[warmKey]*warmSandbox
	building map[warmKey]bool
	// stale: keys whose build under way must not be kept (forget).
	stale  map[warmKey]bool
	gen    uint64 // moved by flush: a build begun before is not kept
	closed bool
	work   sync.WaitGroup // builds and discards under way
}

func newWarmPool(d *Daemon) *warmPool {
	return &warmPool{d: d, byKey: map[warmKey]*warmSandbox{}, building: map[warmKey]bool{}, stale: map[warmKey]bool{}}
}

// disabledWhy is why the pool is off, "" when it is on.
func (w *warmPool) disabledWhy() string {
	switch {
	case w.d.initPath == "":
		return "mcpcage-init is not installed: containerd then copies the server's stdio, set up when the task is created"
	case w.d.conf().Daemon.WarmSandboxes == 0:
		return "warm_sandboxes = 0"
	}
	return ""
}

// take removes and returns the prepared sandbox for key, nil when none.
func (w *warmPool) take(key warmKey) *warmSandbox {
	w.mu.Lock()
	defer w.mu.Unlock()
	ws := w.byKey[key]
	if ws != nil {
		delete(w.byKey, key)
		ws.timer.Stop()
	}
	return ws
}

// refill builds, in the background, a sandbox for the next session of
// srv for peer, unless one is ready or being built, or the pool is off.
func (w *warmPool) refill(srvName string, peer Peer) {
	if w.disabledWhy() != "" {
		return
	}
	key := warmKey{server: srvName, uid: peer.UID}
	w.mu.Lock()
	if w.closed || w.byKey[key] != nil || w.building[key] {
		w.mu.Unlock()
		return
	}
	w.building[key] = true
	gen := w.gen
	w.work.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.work.Done()
		var ws *warmSandbox
		var err error
		// A bug of mcpcaged's in the build (on a user's own server's
		// definition) fails this build only (what it created the next
		// start removes).
		if !contain.Run(func() { ws, err = w.build(key, Peer{UID: peer.UID, GID: peer.GID}) }, w.d.reportBackground("warm sandbox")) {
			ws, err = nil, errWarmBuildBug
		}
		w.mu.Lock()
		delete(w.building, key)
		keep := err == nil && !w.closed && w.gen == gen && !w.stale[key]
		delete(w.stale, key)
		if keep {
			w.byKey[key] = ws
			ws.timer = time.AfterFunc(time.Duration(w.d.conf().Daemon.WarmIdle), func() { w.expire(ws) })
		}
		w.mu.Unlock()
		switch {
		case err != nil:
			w.d.log.Warn("could not prepare a warm sandbox; the next session starts cold", "server", key.server, "uid", key.uid, "err", err)
		case !keep:
			_ = w.discard(ws) // logged
		default:
			w.d.log.Debug("warm sandbox ready", "server", key.server, "uid", key.uid, "container", ws.prep.ID)
			w.enforceBounds()
		}
	}()
}

// errWarmBuildBug is a build that panicked (logged where it was caught).
var errWarmBuildBug = errors.New("mcpcaged hit an internal error preparing it (its stack is in the log line before)")

// build prepares one sandbox exactly as a session's cold start would.
func (w *warmPool) build(key warmKey, peer Peer) (*warmSandbox, error) {
	d := w.d
	srv, ok := d.server(key.server, peer)
	if !ok {
		return nil, errNoLongerConfigured
	}
	id := newID()
	params, err := d.sandboxParams(context.Background(), id, srv, peer, paramsOptions{resolveSecrets: true, checkMounts: true, resolveImage: true})
	defer closePins(params) // checked against the created container, then no longer needed
	if err != nil {
		return nil, err
	}
	if err := d.checkCommand(srv, params); err != nil {
		return nil, err
	}
	fifos, err := sandbox.NewServerStdio(filepath.Join(d.stdioRoot, id), params.GID)
	if err != nil {
		return nil, err
	}
	params.StdioDir = fifos.Dir()
	sources, err := sourceIDs(params)
	if err != nil {
		_ = fifos.Close()
		return nil, err
	}
	// Not cancelled by close: a containerd call cut off midway can leave a
	// container behind; close waits for it (a bounded time) instead.
	prep, err := d.create(context.Background(), srv, peer.UID, id, params, sandbox.Stdio{})
	if err != nil {
		_ = fifos.Close()
		return nil, err
	}
	return &warmSandbox{key: key, id: id, prep: prep, fifos: fifos, sources: sources}, nil
}

// errNoLongerConfigured: the server went from the configuration.
var errNoLongerConfigured = errors.New("the server is no longer configured")

// adopt checks that ws is the sandbox a cold start with params would
// build, and returns it; otherwise it discards ws and says why (stale),
// or fails when what is stale cannot be removed (its id is the session's).
func (w *warmPool) adopt(ctx context.Context, ws *warmSandbox, srv *config.Server, params sandbox.Params) (*sandbox.Prepared, *sandbox.ServerStdio, string, error) {
	why := func() string {
		if !ws.prep.Alive() {
			return "its process ended"
		}
		params.StdioDir = ws.fifos.Dir()
		spec, err := sandbox.BuildSpec(params)
		if err != nil {
			return err.Error()
		}
		fp, err := w.d.launcher.Fingerprint(pullsCounted(ctx, srv, ws.key.uid), spec, srv.Image)
		if err != nil {
			return err.Error()
		}
		if fp != ws.prep.Fingerprint {
			return "the configuration, a secret, a mount or the image changed since it was built"
		}
		now, err := sourceIDs(params)
		if err != nil {
			return err.Error()
		}
		for src, id := range now {
			if ws.sources[src] != id {
				return fmt.Sprintf("the mount source %s names another file than when it was built", src)
			}
		}
		if err := ws.prep.CheckMounts(params.Mounts); err != nil {
			return err.Error()
		}
		if spec.Linux != nil {
			if err := ws.prep.CheckMasks(spec.Linux.MaskedPaths); err != nil {
				return err.Error()
			}
		}
		return ""
	}()
	if why != "" {
		if err := w.discard(ws); err != nil {
			return nil, nil, why, fmt.Errorf("a prepared sandbox that no longer matches (%s) could not be removed: %w: try again once containerd answers", why, err)
		}
		return nil, nil, why, nil
	}
	return ws.prep, ws.fifos, "", nil
}

// expire removes ws after warm_idle, unless a session took it.
func (w *warmPool) expire(ws *warmSandbox) {
	w.mu.Lock()
	mine := w.byKey[ws.key] == ws
	if mine {
		delete(w.byKey, ws.key)
	}
	w.mu.Unlock()
	if mine {
		w.d.log.Debug("warm sandbox unused for warm_idle: removed", "server", ws.key.server, "uid", ws.key.uid)
		_ = w.discard(ws) // logged
	}
}

// enforceBounds removes the oldest prepared sandboxes while there are
// more than warm_sandboxes, or they hold more than warm_memory.
func (w *warmPool) enforceBounds() {
	conf := w.d.conf().Daemon
	w.mu.Lock()
	all := w.sortedLocked()
	var total int64
	mem := make([]int64, len(all))
	for i, ws := range all {
		mem[i] = ws.prep.Memory()
		total += mem[i]
	}
	var evict []*warmSandbox
	for i := 0; i < len(all) && (len(all)-i > conf.WarmSandboxes || (conf.WarmMemory > 0 && total > int64(conf.WarmMemory))); i++ {
		evict = append(evict, all[i])
		delete(w.byKey, all[i].key)
		all[i].timer.Stop()
		total -= mem[i]
	}
	w.mu.Unlock()
	for _, ws := range evict {
		w.d.log.Debug("warm sandbox removed to stay within warm_sandboxes and warm_memory", "server", ws.key.server, "uid", ws.key.uid)
		_ = w.discard(ws) // logged
	}
}

// sortedLocked lists the pool, oldest first.
func (w *warmPool) sortedLocked() []*warmSandbox {
	all := make([]*warmSandbox, 0, len(w.byKey))
	for _, ws := range w.byKey {
		all = append(all, ws)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].prep.Created.Before(all[j].prep.Created) })
	return all
}

// discard removes a prepared sandbox that no session will start.
func (w *warmPool) discard(ws *warmSandbox) error {
	err := ws.prep.Discard(context.Background())
	if ws.fifos != nil {
		_ = ws.fifos.Close() // a directory of the daemon's state, removed at its next start too
	}
	return err
}

// flush discards every prepared sandbox, and any being built (a reload
// or a secret changed: they were built from what was). The removals run
// in the background.
func (w *warmPool) flush() { w.discardWhere(func(warmKey) bool { return true }, true) }

// flushUser discards uid's prepared sandboxes (the user changed a secret
// of their own: only their servers read it).
func (w *warmPool) flushUser(uid uint32) {
	w.discardWhere(func(k warmKey) bool { return k.uid == uid }, false)
}

// forget discards the prepared sandbox of key, and the one being built
// for it: its server was removed or replaced (a user's own), and the
// sandbox would hold its mounts and image for warm_idle.
func (w *warmPool) forget(key warmKey) {
	w.mu.Lock()
	if w.building[key] {
		w.stale[key] = true
	}
	w.mu.Unlock()
	w.discardWhere(func(k warmKey) bool { return k == key }, false)
}

// discardWhere removes the prepared sandboxes whose key matches, in the
// background; newGen also drops every build under way.
func (w *warmPool) discardWhere(match func(warmKey) bool, newGen bool) {
	w.mu.Lock()
	if newGen {
		w.gen++
	}
	var gone []*warmSandbox
	for _, ws := range w.sortedLocked() {
		if match(ws.key) {
			delete(w.byKey, ws.key)
			ws.timer.Stop()
			gone = append(gone, ws)
		}
	}
	if len(gone) > 0 {
		w.work.Add(1)
	}
	w.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	go func() {
		defer w.work.Done()
		for _, ws := range gone {
			_ = w.discard(ws) // logged
		}
	}()
}

// close stops refills and discards everything (and what builds under way
// produce); the returned channel is closed once that is done. Shutdown
// waits for it beside the sessions, within its own bound: a build can
// wait on a mount source's file system, and what it leaves the next
// start removes.
func (w *warmPool) close() <-chan struct{} {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.flush()
	done := make(chan struct{})
	go func() { w.work.Wait(); close(done) }()
	return done
}

// status describes the pool for `mcpcage status`: every entry for root
// and the admin group, the caller's own for anyone else (the others'
// only as a count).
func (w *warmPool) status(peer Peer, admin bool) *api.WarmStatus {
	conf := w.d.conf().Daemon
	st := &api.WarmStatus{Max: conf.WarmSandboxes, MemoryMax: int64(conf.WarmMemory), Idle: time.Duration(conf.WarmIdle).String(), Disabled: w.disabledWhy()}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ws := range w.sortedLocked() {
		mem := ws.prep.Memory()
		st.Memory += mem
		if !admin && ws.key.uid != peer.UID {
			st.Others++
			continue
		}
		st.Entries = append(st.Entries, api.WarmEntry{Server: ws.key.server, User: userName(ws.key.uid), Container: ws.prep.ID,
			Age: time.Since(ws.prep.Created).Round(time.Second).String(), Memory: mem})
	}
	st.Building = len(w.building)
	return st
}
