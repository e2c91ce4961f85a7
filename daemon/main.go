package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/internal/heapfloor"
	"github.com/mcpcage/mcpcage/internal/logbound"
)

// Usage and Summary describe mcpcaged for its help text and manual page.
const (
	Usage   = "mcpcaged [--config PATH]"
	Summary = "mcpcaged runs local MCP servers in containerd sandboxes for `mcpcage run NAME`."
)

// Flags returns mcpcaged's command-line flags (for Main and for the
// generated manual page).
func Flags() *flag.FlagSet {
	fs := flag.NewFlagSet("mcpcaged", flag.ContinueOnError)
	fs.String("config", "", "configuration file (default $"+config.EnvPath+" or "+config.DefaultPath+"; built-in defaults when absent)")
	fs.Bool("version", false, "print the version and exit")
	return fs
}

// heapHeadroom is how far above its live heap mcpcaged lets its heap
// grow before the collector runs (package heapfloor): per-call garbage
// no longer starts a collection every few MiB. $GOGC turns it off.
const heapHeadroom = 8 << 20

// Main is mcpcaged's entry point; it returns the process exit status.
func Main(args []string, stderr io.Writer) int {
	fs := Flags()
	fs.SetOutput(stderr)
	configFlag := fs.Lookup("config").Value.(flag.Getter)
	version := fs.Lookup("version").Value.(flag.Getter)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: %s\n\n%s\n\n", Usage, Summary)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if version.Get().(bool) {
		_, _ = fmt.Fprintln(stderr, "mcpcaged", Version)
		return 0
	}
	path, explicit := config.ResolvePath(configFlag.Get().(string))
	cfg, err := config.Load(path, explicit)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "mcpcaged: invalid configuration: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar) // log_level, which a reload changes
	level.Set(parseLevel(cfg.Daemon.LogLevel))
	log := newLogger(stderr, level)
	if cfg.Path == "" {
		log.Info("no configuration file, running on built-in defaults", "looked_for", path)
	} else {
		log.Info("configuration loaded", "path", cfg.Path)
	}

	if floor := heapfloor.Start(heapHeadroom, os.Getenv("GOGC")); floor != nil {
		defer floor.Stop()
		log.Debug("heap floor", "headroom_bytes", heapHeadroom)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := servePprof(ctx, log); err != nil {
		log.Error("cannot start", "err", fmt.Errorf("pprof listener ($%s): %w", EnvPprof, err))
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	d, err := New(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	d.logLevel = level
	if err := d.ServeMetrics(ctx); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ln, err := listener(cfg.Daemon.Socket, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	go func() {
		for range hup {
			d.reload(path, explicit || cfg.Path != "")
		}
	}()
	go d.superviseSystemd(ctx)
	if err := d.Serve(ctx, ln); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// parseLevel is log_level's slog level (the configuration checked it).
func parseLevel(level string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return l
}

// newLogger is the daemon's logger: what clients and servers chose
// (names, reasons, lists) is bounded in every line (package logbound).
func newLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	if underJournal() {
		return slog.New(logbound.Handler(&journalHandler{level: level}))
	}
	return slog.New(logbound.Handler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})))
}
