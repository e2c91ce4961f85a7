package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/sandbox"
)

// Version is the daemon's version, set at build time.
var Version = "dev"

// Daemon is a running mcpcaged.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	launcher *sandbox.Launcher
	hostView *sandbox.HostView
	started  time.Time

	mu       sync.Mutex
	sessions map[string]*session
	closing  bool
	wg       sync.WaitGroup
}

// New prepares a daemon: it connects to containerd, removes what a crashed
// predecessor left, and builds the host view. It does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, sessions: map[string]*session{}, started: time.Now()}
	if err := os.MkdirAll(cfg.Daemon.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	hv, err := sandbox.PrepareHostView(filepath.Join(cfg.Daemon.StateDir, "rootfs"), "/")
	if err != nil {
		return nil, err
	}
	d.hostView = hv
	l, err := sandbox.NewLauncher(ctx, cfg.Daemon.ContainerdAddress, cfg.Daemon.ContainerdNamespace,
		filepath.Join(cfg.Daemon.StateDir, "fifo"), log)
	if err != nil {
		return nil, err
	}
	d.launcher = l
	n, err := l.Reap(ctx)
	if err != nil {
		log.Error("could not remove every leftover container", "err", err)
	}
	if n > 0 {
		log.Info("removed containers left by a previous run", "count", n)
	}
	return d, nil
}

// Serve accepts connections on ln until ctx is cancelled, then ends every
// session and returns nil.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	d.log.Info("mcpcaged ready", "socket", ln.Addr().String(), "servers", d.cfg.ServerNames(), "version", Version)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			d.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.handle(ctx, uc)
		}()
	}
	d.shutdown()
	return nil
}

// shutdown ends every session and waits for them.
func (d *Daemon) shutdown() {
	d.mu.Lock()
	d.closing = true
	live := make([]*session, 0, len(d.sessions))
	for _, s := range d.sessions {
		live = append(live, s)
	}
	d.mu.Unlock()
	d.log.Info("shutting down", "sessions", len(live))
	for _, s := range live {
		s.endForShutdown()
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		d.log.Error("sessions did not end within 30s; exiting anyway")
	}
	d.launcher.Close()
}

func (d *Daemon) addSession(s *session) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return false
	}
	d.sessions[s.id] = s
	return true
}

func (d *Daemon) removeSession(id string) {
	d.mu.Lock()
	delete(d.sessions, id)
	d.mu.Unlock()
}

// SessionCount returns the number of live sessions.
func (d *Daemon) SessionCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}
