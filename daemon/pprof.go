package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"time"
)

// EnvPprof, when set to a listen address (e.g. 127.0.0.1:6060), makes
// mcpcaged serve Go's runtime profiles (net/http/pprof) there, and turn on
// the block and mutex profiles. For profiling only: never on by default,
// and the address should be a loopback one (the profiles show the
// daemon's stacks and command line).
const EnvPprof = "MCPCAGE_PPROF"

// Sampling of the block and mutex profiles while EnvPprof is set: one
// blocking event per pprofBlockRate nanoseconds blocked (every event at
// least this long), and one contended mutex in pprofMutexFraction.
const (
	pprofBlockRate     = 1000
	pprofMutexFraction = 5
)

// servePprof starts the profiling listener when EnvPprof is set; it stops
// with ctx. It fails only when the address cannot be listened on.
func servePprof(ctx context.Context, log *slog.Logger) error {
	addr := os.Getenv(EnvPprof)
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	runtime.SetBlockProfileRate(pprofBlockRate)
	runtime.SetMutexProfileFraction(pprofMutexFraction)
	// Its own mux: the handlers that importing net/http/pprof registers on
	// http.DefaultServeMux are served nowhere.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close() // profiling only: in-flight profiles may be cut
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener stopped", "address", addr, "err", err)
		}
	}()
	log.Warn("pprof profiling listener enabled (unset "+EnvPprof+" to turn it off)", "address", ln.Addr().String(),
		"block_profile_rate_ns", pprofBlockRate, "mutex_profile_fraction", pprofMutexFraction)
	return nil
}
