package daemon

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// clientFiles bounds, daemon-wide, the sessions that hold a client's
// passed files: from the moment the daemon asks the shim for them until
// it has closed them, which can be long after the session's end when a
// process sharing a pipe keeps its lock (see stdio.go and serveRun). Such
// a session can keep up to four of the daemon's threads asleep in the
// kernel (stdin's read, stdout's and stderr's writes, and the close of
// files queued on its connection), and a process out of threads dies
// (Go ends it at 10,000; the unit's TasksMax is 8192).
// max_sessions_per_user bounds one user's; this bounds all users'
// together. Past the bound a session still runs, with the client's
// stdio relayed by its shim in frames (no file of the client reaches the
// daemon, so none can hold a thread of it), and mcpcage sessions and
// its session.start record say so.
type clientFiles struct {
	mu    sync.Mutex
	n     int64 // sessions holding client files
	held  atomic.Int64
	gauge prometheus.Gauge // mcpcage_sessions_held; nil: none
	inUse prometheus.Gauge // mcpcage_sessions_client_files; nil: none
}

// set updates the in-use gauge; c.mu is held.
func (c *clientFiles) set() {
	if c.inUse != nil {
		c.inUse.Set(float64(c.n))
	}
}

// maxClientFiles is the bound (a variable for the failpoints build).
var maxClientFiles int64 = 1024

// errFramedInstead says a session takes no client file: the daemon holds
// as many as it may.
var errFramedInstead = errors.New("mcpcaged holds the files of as many sessions as it may: the shim relays this one's stdio in frames")

// errFilesFullOldShim refuses a session past the bound whose shim cannot
// relay the client's stdio itself.
var errFilesFullOldShim = errors.New("mcpcaged holds the files of as many sessions as it may, and this mcpcage run is older than mcpcaged and cannot relay the client's stdio itself: " +
	"update mcpcage (one package holds both), or try again once other sessions have ended")

// take takes a slot for one session's files; release gives it back once
// they are closed. It fails at the bound.
func (c *clientFiles) take() (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxClientFiles {
		return nil, errFramedInstead
	}
	c.n++
	c.set()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.n--
			c.set()
			c.mu.Unlock()
		})
	}, nil
}

// Held is the number of ended sessions whose files wait on a pipe's
// lock.
func (c *clientFiles) Held() int64 { return c.held.Load() }

// InUse is the number of sessions holding client files.
func (c *clientFiles) InUse() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// tracker follows one ended session's files: held counts them as held
// unless they are closed already; closed says they are, and ends the
// count of held ones. Each is called once, in any order.
func (c *clientFiles) tracker() (held, closed func()) {
	var mu sync.Mutex
	var isHeld, isClosed bool
	add := func(delta int64) {
		c.held.Add(delta)
		if c.gauge != nil {
			c.gauge.Add(float64(delta))
		}
	}
	held = func() {
		mu.Lock()
		defer mu.Unlock()
		if !isClosed {
			isHeld = true
			add(1)
		}
	}
	closed = func() {
		mu.Lock()
		defer mu.Unlock()
		isClosed = true
		if isHeld {
			add(-1)
		}
	}
	return held, closed
}
