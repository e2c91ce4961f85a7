package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"

	"github.com/mcpcage/mcpcage/config"
	"golang.org/x/sys/unix"
)

// notify sends sd_notify state; a no-op outside systemd. A state systemd
// did not get is logged: a missed watchdog ping ends in a restart.
func (d *Daemon) notify(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		d.log.Warn("sd_notify", "state", state, "err", err)
	}
}

// statusLine is the unit's STATUS=.
func (d *Daemon) statusLine() string {
	e := d.enforcement()
	return fmt.Sprintf("%d sessions; network %s, files %s, landlock %s", d.SessionCount(),
		firstWord(e["network"]), firstWord(e["files"]), firstWord(e["landlock"]))
}

// superviseSystemd reports readiness and status to systemd and pings its
// watchdog while the daemon can still take its own lock (a deadlock stops
// the pings and systemd restarts the service).
func (d *Daemon) superviseSystemd(ctx context.Context) {
	d.notify(sd.SdNotifyReady + "\nSTATUS=" + d.statusLine())
	interval, _ := sd.SdWatchdogEnabled(false)
	tick := 10 * time.Second
	if interval > 0 && interval/2 < tick {
		tick = interval / 2
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.notify(sd.SdNotifyStopping + "\nSTATUS=stopping")
			return
		case <-t.C:
		}
		d.mu.Lock()
		//lint:ignore SA2001 an empty section on purpose: it waits for a reload in progress to finish
		d.mu.Unlock()
		state := "STATUS=" + d.statusLine()
		if interval > 0 {
			state = sd.SdNotifyWatchdog + "\n" + state
		}
		d.notify(state)
	}
}

// reload re-reads the configuration file; new sessions use it, live ones
// keep theirs. Settings that need a restart are reported, not applied,
// and an invalid file is logged and refused.
func (d *Daemon) reload(path string, explicit bool) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	d.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading configuration", ts.Nano()/1000))
	defer d.notify(sd.SdNotifyReady + "\nSTATUS=" + d.statusLine())
	next, err := config.Load(path, explicit)
	if err != nil {
		d.log.Error("reload refused: the configuration is invalid; the running one stays in force", "err", err)
		return
	}
	if warning, err := checkAdminGroup(next.Daemon.AdminGroup, user.LookupGroup, socketGID(d.conf().Daemon.Socket)); err != nil {
		d.log.Error("reload refused: the configuration is invalid; the running one stays in force", "err", err)
		return
	} else if warning != "" {
		d.log.Warn(warning)
	}
	warnLiteralCredentials(next, d.log)
	cur := d.conf()
	a, b := cur.Daemon, next.Daemon
	for _, c := range []struct {
		key        string
		old, fresh string
	}{
		{"socket", a.Socket, b.Socket}, {"state_dir", a.StateDir, b.StateDir},
		{"containerd_address", a.ContainerdAddress, b.ContainerdAddress}, {"containerd_namespace", a.ContainerdNamespace, b.ContainerdNamespace},
		{"bpf_pin_dir", a.BPFPinDir, b.BPFPinDir},
		{"audit_log", a.AuditLog, b.AuditLog}, {"metrics_address", a.MetricsAddress, b.MetricsAddress},
		{"landlock", string(a.Landlock), string(b.Landlock)}, {"init_path", a.InitPath, b.InitPath},
		// The audit log is opened with these at start.
		{"audit_sync", string(a.AuditSync), string(b.AuditSync)}, {"audit_sync_interval", time.Duration(a.AuditSyncInterval).String(), time.Duration(b.AuditSyncInterval).String()},
		{"audit_max_size", fmt.Sprint(a.AuditMaxSize), fmt.Sprint(b.AuditMaxSize)}, {"audit_keep", fmt.Sprint(a.AuditKeep), fmt.Sprint(b.AuditKeep)},
		{"audit_journal", fmt.Sprint(a.AuditJournal), fmt.Sprint(b.AuditJournal)},
	} {
		if c.old != c.fresh {
			d.log.Warn("setting changed in the configuration but needs a restart: the running value stays", "key", "daemon."+c.key, "running", c.old, "configured", c.fresh)
		}
	}
	b.Socket, b.StateDir, b.ContainerdAddress, b.ContainerdNamespace, b.BPFPinDir = a.Socket, a.StateDir, a.ContainerdAddress, a.ContainerdNamespace, a.BPFPinDir
	b.AuditLog, b.MetricsAddress, b.Landlock, b.InitPath = a.AuditLog, a.MetricsAddress, a.Landlock, a.InitPath
	b.AuditSync, b.AuditSyncInterval, b.AuditMaxSize, b.AuditKeep, b.AuditJournal = a.AuditSync, a.AuditSyncInterval, a.AuditMaxSize, a.AuditKeep, a.AuditJournal
	if a.ObserverLinger != b.ObserverLinger && d.cage != nil {
		if err := d.cage.SetObserverLinger(time.Duration(b.ObserverLinger)); err != nil {
			d.log.Error("detach the lingering eBPF observers (observer_linger reloaded as 0)", "err", err)
		}
		d.log.Info("observer_linger changed: a linger in progress starts over with it", "running", time.Duration(a.ObserverLinger).String(), "now", time.Duration(b.ObserverLinger).String())
	}
	next.Daemon = b
	d.cfg.Store(next)
	if d.cage != nil {
		// Sessions over a smaller budget keep their rules until their
		// next update, which is then refused (they reach nothing until
		// it fits).
		d.cage.SetEgressBudget(b.EgressEntriesPerUser)
	}
	d.consents.Invalidate()
	d.warm.flush() // built from the previous configuration
	d.collectImagesSoon()
	d.log.Info("configuration reloaded", "path", next.Path, "servers", next.ServerNames())
	if a.LogLevel != b.LogLevel && d.logLevel != nil {
		// Last: the lines above are logged at the level they were
		// decided under. The change itself is said at the more verbose
		// of the two levels, so that it is not lost when either is
		// "error".
		old, fresh := parseLevel(a.LogLevel), parseLevel(b.LogLevel)
		if fresh < old {
			d.logLevel.Set(fresh)
		}
		d.log.Log(context.Background(), max(slog.LevelInfo, min(old, fresh)), "log_level changed", "running", a.LogLevel, "now", b.LogLevel)
		d.logLevel.Set(fresh)
	}
}

// listener returns the socket systemd passed (socket activation), or
// creates one.
func listener(socket string, log *slog.Logger) (net.Listener, error) {
	if fds := listenFDs(); len(fds) > 0 {
		log.Info("using the socket passed by systemd", "socket", fds[0].Addr().String())
		for _, extra := range fds[1:] {
			_ = extra.Close() // never used
		}
		refuseFiles(fds[0]) // connections already in its backlog may still carry files: see handle
		return fds[0], nil
	}
	return Listen(socket)
}

// journalHandler writes slog records to the journal with structured
// fields (MCPCAGE_SESSION=..., PRIORITY from the level).
type journalHandler struct {
	level slog.Leveler
	attrs []slog.Attr
	group string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "mcpcaged"}
	add := func(a slog.Attr) {
		key := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(h.group + a.Key))
		vars["MCPCAGE_"+key] = a.Value.String()
	}
	for _, a := range h.attrs {
		add(a)
	}
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		add(a)
		msg += " " + a.Key + "=" + journalValue(a.Value.String())
		return true
	})
	pri := journal.PriInfo
	switch {
	case r.Level >= slog.LevelError:
		pri = journal.PriErr
	case r.Level >= slog.LevelWarn:
		pri = journal.PriWarning
	case r.Level < slog.LevelInfo:
		pri = journal.PriDebug
	}
	return journal.Send(msg, pri, vars)
}

// journalValue is v as the message's text shows it: quoted (Go syntax,
// every control and invisible character escaped) when it holds anything
// but printable characters other than spaces, '=' and '"', so that a
// value a client, a server or a file name chose can neither add fields
// of its own to the message ("x user=root"), nor lines, nor escape
// sequences for the terminal of whoever reads the journal. The
// structured MCPCAGE_* fields keep the value as it is.
func journalValue(v string) string {
	if v == "" {
		return `""`
	}
	for _, r := range v {
		if r == ' ' || r == '=' || r == '"' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(v)
		}
	}
	return v
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{level: h.level, attrs: append(append([]slog.Attr(nil), h.attrs...), as...), group: h.group}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{level: h.level, attrs: h.attrs, group: h.group + name + "_"}
}

// underJournal: systemd connected stderr to the journal.
func underJournal() bool { return os.Getenv("JOURNAL_STREAM") != "" && journal.Enabled() }
