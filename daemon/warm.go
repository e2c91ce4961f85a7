package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/sandbox"
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
	key   warmKey
	id    string // the id of the session that will take it
	prep  *sandbox.Prepared
	fifos *sandbox.ServerStdio // nil without mcpcage-init (then no pool)
	timer *time.Timer          // removes it after warm_idle
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
	closed   bool
	builders sync.WaitGroup
}

func newWarmPool(d *Daemon) *warmPool {
	return &warmPool{d: d, byKey: map[warmKey]*warmSandbox{}, building: map[warmKey]bool{}}
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
	w.builders.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.builders.Done()
		ws, err := w.build(key, Peer{UID: peer.UID, GID: peer.GID})
		w.mu.Lock()
		delete(w.building, key)
		keep := err == nil && !w.closed
		if keep {
			w.byKey[key] = ws
			ws.timer = time.AfterFunc(time.Duration(w.d.conf().Daemon.WarmIdle), func() { w.expire(ws) })
		}
		w.mu.Unlock()
		switch {
		case err != nil:
			w.d.log.Warn("could not prepare a warm sandbox; the next session starts cold", "server", key.server, "uid", key.uid, "err", err)
		case !keep:
			w.discard(ws)
		default:
			w.d.log.Debug("warm sandbox ready", "server", key.server, "uid", key.uid, "container", ws.prep.ID)
			w.enforceBounds()
		}
	}()
}

// build prepares one sandbox exactly as a session's cold start would.
func (w *warmPool) build(key warmKey, peer Peer) (*warmSandbox, error) {
	d := w.d
	srv, ok := d.server(key.server, peer)
	if !ok {
		return nil, errNoLongerConfigured
	}
	id := newID()
	params, err := d.sandboxParams(id, srv, peer, paramsOptions{resolveSecrets: true, checkMounts: true})
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
	prep, err := d.create(context.Background(), srv, id, params, sandbox.Stdio{})
	if err != nil {
		_ = fifos.Close()
		return nil, err
	}
	return &warmSandbox{key: key, id: id, prep: prep, fifos: fifos}, nil
}

// errNoLongerConfigured: the server went from the configuration.
var errNoLongerConfigured = errors.New("the server is no longer configured")

// adopt checks that ws is the sandbox a cold start with params would
// build, and returns it; otherwise it discards ws and says why.
func (w *warmPool) adopt(ctx context.Context, ws *warmSandbox, srv *config.Server, params sandbox.Params) (*sandbox.Prepared, *sandbox.ServerStdio, string) {
	why := func() string {
		if !ws.prep.Alive() {
			return "its process ended"
		}
		params.StdioDir = ws.fifos.Dir()
		spec, err := sandbox.BuildSpec(params)
		if err != nil {
			return err.Error()
		}
		fp, err := w.d.launcher.Fingerprint(ctx, spec, srv.Image)
		if err != nil {
			return err.Error()
		}
		if fp != ws.prep.Fingerprint {
			return "the configuration, a secret, a mount or the image changed since it was built"
		}
		if err := ws.prep.CheckMounts(params.Mounts); err != nil {
			return err.Error()
		}
		return ""
	}()
	if why != "" {
		w.discard(ws)
		return nil, nil, why
	}
	return ws.prep, ws.fifos, ""
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
		w.discard(ws)
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
		w.discard(ws)
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
func (w *warmPool) discard(ws *warmSandbox) {
	ws.prep.Discard(context.Background())
	if ws.fifos != nil {
		_ = ws.fifos.Close()
	}
}

// flush discards every prepared sandbox (a reload: they were built from
// the previous configuration).
func (w *warmPool) flush() {
	w.mu.Lock()
	all := w.sortedLocked()
	for _, ws := range all {
		delete(w.byKey, ws.key)
		ws.timer.Stop()
	}
	w.mu.Unlock()
	for _, ws := range all {
		w.discard(ws)
	}
}

// close stops refills, waits for the builds under way and discards
// everything.
func (w *warmPool) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.builders.Wait()
	w.flush()
}

// status describes the pool for `mcpcage status`.
func (w *warmPool) status() *api.WarmStatus {
	conf := w.d.conf().Daemon
	st := &api.WarmStatus{Max: conf.WarmSandboxes, MemoryMax: int64(conf.WarmMemory), Idle: time.Duration(conf.WarmIdle).String(), Disabled: w.disabledWhy()}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ws := range w.sortedLocked() {
		e := api.WarmEntry{Server: ws.key.server, User: userName(ws.key.uid), Container: ws.prep.ID,
			Age: time.Since(ws.prep.Created).Round(time.Second).String(), Memory: ws.prep.Memory()}
		st.Memory += e.Memory
		st.Entries = append(st.Entries, e)
	}
	st.Building = len(w.building)
	return st
}
