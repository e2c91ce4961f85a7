// Package metrics defines mcpcaged's Prometheus metrics and keeps their
// label sets bounded: agents are registered names or "unknown"; servers are
// the administrator's names, and every user's own server counts under
// [UserServers] (users name their servers, add and remove them at will);
// tool names are capped per server (the rest count under "other"), so a
// hostile server that invents tool names cannot blow up the time series.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxToolsPerServer bounds the tool label per server.
const MaxToolsPerServer = 100

// Metrics are mcpcaged's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	SessionsActive         *prometheus.GaugeVec
	SessionsTotal          *prometheus.CounterVec
	SessionsHeld           prometheus.Gauge
	SessionsClientFiles    prometheus.Gauge
	ToolCalls              *prometheus.CounterVec
	ToolCallDuration       *prometheus.HistogramVec
	Messages               *prometheus.CounterVec
	MessageBytes           *prometheus.CounterVec
	KernelEvents           *prometheus.CounterVec
	KernelDenied           *prometheus.CounterVec
	KernelEventsLost       prometheus.Counter
	SandboxStart           prometheus.Histogram
	WarmStarts             *prometheus.CounterVec
	ConsentsActive         prometheus.Gauge
	ConsentLookups         prometheus.CounterFunc
	ConsentPrompts         *prometheus.CounterVec
	AuditRecords           *prometheus.CounterVec
	AuditWriteErrors       prometheus.Counter
	AuditRecordsDropped    *prometheus.CounterVec
	AuditSync              prometheus.Histogram
	AuditSegmentsRemoved   prometheus.Counter
	AuditHistoryStart      prometheus.GaugeFunc
	BuildInfo              *prometheus.GaugeVec
	ToolDefinitionsChanged *prometheus.CounterVec
	FlowTaints             *prometheus.CounterVec
	DetectorHits           *prometheus.CounterVec
	InfluenceSuspect       *prometheus.CounterVec
	FlowDecisions          *prometheus.CounterVec
	RemoteRequests         *prometheus.CounterVec
	RemoteLatency          *prometheus.HistogramVec
	RemoteSignIns          *prometheus.CounterVec
	InternalErrors         *prometheus.CounterVec

	mu    sync.Mutex
	tools map[string]map[string]bool
	own   []prometheus.Collector
	// consentLookups reads the consent engine's count (CountConsentLookups).
	consentLookups atomic.Pointer[func() uint64]
	// historyStart reads the audit log's oldest record time (ReadAuditHistoryStart).
	historyStart atomic.Pointer[func() float64]
}

// ReadAuditHistoryStart makes mcpcage_audit_history_start_timestamp_seconds
// read start: the Unix time of the oldest record the audit log holds (0:
// none).
func (m *Metrics) ReadAuditHistoryStart(start func() float64) { m.historyStart.Store(&start) }

// CountConsentLookups makes mcpcage_consent_lookups_total read count.
func (m *Metrics) CountConsentLookups(count func() uint64) { m.consentLookups.Store(&count) }

// Names lists the fully qualified names of mcpcage's own metrics, whether
// or not they have series yet.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.own {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if sm := re.FindStringSubmatch(d.String()); sm != nil {
			out = append(out, sm[1])
		}
	}
	return out
}

// New registers every collector (and the Go and process collectors).
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{Registry: r, tools: map[string]map[string]bool{}}
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m.SessionsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mcpcage_sessions_active", Help: "Live sessions."}, []string{"server"})
	m.SessionsHeld = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mcpcage_sessions_held",
		Help: "Ended sessions whose client's files mcpcaged still holds: a read or write of them waits on a pipe's lock another process holds (reason client_stuck in the README)."})
	m.SessionsClientFiles = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mcpcage_sessions_client_files",
		Help: "Sessions, live or ended, whose client's passed files mcpcaged holds; past its bound (1024) sessions are relayed by their shims in frames."})
	m.SessionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_sessions_total", Help: "Sessions started."}, []string{"server", "agent"})
	m.ToolCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_tool_calls_total", Help: "tools/call requests by decision (allow, deny, observe)."}, []string{"server", "agent", "tool", "decision"})
	m.ToolCallDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mcpcage_tool_call_duration_seconds", Help: "tools/call latency through mcpcage, request to response.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"server", "tool"})
	m.Messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_messages_total", Help: "JSON-RPC messages relayed."}, []string{"server", "direction"})
	m.MessageBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_message_bytes_total", Help: "JSON-RPC bytes relayed."}, []string{"server", "direction"})
	m.KernelEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_kernel_events_total", Help: "Kernel events of sessions by kind."}, []string{"server", "agent", "kind"})
	m.KernelDenied = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_kernel_denied_total", Help: "Operations denied in the kernel (net.denied, file.denied)."}, []string{"server", "agent", "kind"})
	m.KernelEventsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "mcpcage_kernel_events_lost_total", Help: "Kernel events lost to a full ring buffer or throttled."})
	m.SandboxStart = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mcpcage_sandbox_start_seconds", Help: "Time to create and start a sandbox.", Buckets: prometheus.ExponentialBuckets(0.05, 1.6, 12)})
	m.WarmStarts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_warm_starts_total",
		Help: "Session starts by how a warm (prepared) sandbox served them: hit, stale (one was ready but no longer matched), miss (none ready)."}, []string{"result"})
	m.ConsentsActive = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mcpcage_consents_active", Help: "Consent records that can allow something now (not revoked, expired or used up, and bound to an account that exists)."})
	m.ConsentLookups = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mcpcage_consent_lookups_total",
		Help: "Decisions that read the consent store because their (user, agent, server)'s consents were not cached: a change to a consent drops its own triple's cache only."},
		func() float64 {
			if f := m.consentLookups.Load(); f != nil {
				return float64((*f)())
			}
			return 0
		})
	m.ConsentPrompts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_consent_prompts_total", Help: "Consent questions (default_decision = \"ask\") by result: allowed, denied, dismissed, timeout (kept pending), not_asked (the client could not be asked: kept pending), asked (2026-07-28: the question went out in a result)."}, []string{"result"})
	m.AuditRecords = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_audit_records_total", Help: "Audit records written by type."}, []string{"type"})
	m.AuditWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "mcpcage_audit_write_errors_total", Help: "Failed audit writes (calls fail closed meanwhile)."})
	m.AuditRecordsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_audit_records_dropped_total",
		Help: "Audit records not written, by reason (queue_full, write_failed, encode_failed, closed)."}, []string{"reason"})
	m.AuditSync = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mcpcage_audit_sync_seconds",
		Help:    "fdatasyncs of the audit log and their latency: in audit_sync = \"always\" a call waits for one (shared by every record pending then).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}})
	m.AuditSegmentsRemoved = prometheus.NewCounter(prometheus.CounterOpts{Name: "mcpcage_audit_segments_removed_total",
		Help: "Audit log segments removed by rotation (past audit_keep): their records are gone from the host."})
	m.AuditHistoryStart = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mcpcage_audit_history_start_timestamp_seconds",
		Help: "Unix time of the oldest record the audit log holds (0: none): alert when time() minus it falls below the history you must keep, which a flood of records rotates away."},
		func() float64 {
			if f := m.historyStart.Load(); f != nil {
				return (*f)()
			}
			return 0
		})
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mcpcage_build_info", Help: "Version and enforcement level."}, []string{"version", "enforcement"})
	m.ToolDefinitionsChanged = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_tool_definitions_changed_total", Help: "Tool definitions that changed during a session."}, []string{"server"})
	m.FlowTaints = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_flow_taints_total",
		Help: "Agent runs tainted by a label (the first result of a server with that label), by agent, source server and label."}, []string{"agent", "server", "label"})
	m.DetectorHits = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_detector_hits_total",
		Help: "Content detector findings, by agent, server, detector and direction (result: in what a server returned; arguments: in what the agent sent)."}, []string{"agent", "server", "detector", "direction"})
	m.InfluenceSuspect = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_influence_suspect_total",
		Help: "Suspect influences (text that looks like a prompt injection) servers showed the agent, by agent, server and heuristic."}, []string{"agent", "server", "rule"})
	m.FlowDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_flow_decisions_total",
		Help: "Calls a [[flow]] rule decided, by agent, target server and action (deny, ask, redact, log)."}, []string{"agent", "server", "action"})
	m.RemoteRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_remote_requests_total",
		Help: "HTTP requests to remote MCP servers, by server and status class (2xx, 4xx, 5xx)."}, []string{"server", "status"})
	m.RemoteLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mcpcage_remote_response_seconds",
		Help: "Time from sending a message to a remote MCP server to its answer's headers.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"server"})
	m.RemoteSignIns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_remote_signins_total",
		Help: "Sign-ins to remote servers (mcpcage login) by server and result (ok, failed)."}, []string{"server", "result"})
	m.InternalErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mcpcage_internal_errors_total",
		Help: "Bugs of mcpcaged's caught where they happened (a panic): where is session (the session ended), request (that request failed), kernel_event (its session's server was stopped) or background (a loop of the daemon's own dropped its item at hand and was started again); the daemon went on. Each is in the log with its stack: please report it."}, []string{"where"})
	m.own = []prometheus.Collector{m.SessionsActive, m.SessionsHeld, m.SessionsClientFiles, m.SessionsTotal, m.ToolCalls, m.ToolCallDuration, m.Messages, m.MessageBytes,
		m.KernelEvents, m.KernelDenied, m.KernelEventsLost, m.SandboxStart, m.WarmStarts, m.ConsentsActive, m.ConsentLookups, m.ConsentPrompts, m.AuditRecords,
		m.AuditWriteErrors, m.AuditRecordsDropped, m.AuditSync, m.AuditSegmentsRemoved, m.AuditHistoryStart, m.BuildInfo, m.ToolDefinitionsChanged,
		m.FlowTaints, m.DetectorHits, m.InfluenceSuspect, m.FlowDecisions, m.RemoteRequests, m.RemoteLatency, m.RemoteSignIns, m.InternalErrors}
	for _, c := range append(m.own, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})) {
		f(c)
	}
	// Pre-create the prompt results so alerts see zeros.
	for _, res := range []string{"allowed", "denied", "dismissed", "timeout", "not_asked", "asked"} {
		m.ConsentPrompts.WithLabelValues(res)
	}
	for _, res := range []string{"hit", "stale", "miss"} {
		m.WarmStarts.WithLabelValues(res)
	}
	// Likewise the audit drop reasons (kept in step with audit.DropReason).
	for _, reason := range []string{"queue_full", "write_failed", "encode_failed", "closed"} {
		m.AuditRecordsDropped.WithLabelValues(reason)
	}
	return m
}

// UserServers is the server label of every user's own server (mcpcage
// server add): their names are the users' to choose and change, so they
// would make series without bound. No server name begins with "(".
const UserServers = "(user)"

// Server maps a server to its label: an administrator's server by its
// name (the configuration bounds those), a user's own (personal) one to
// [UserServers].
func Server(name string, personal bool) string {
	if personal {
		return UserServers
	}
	return name
}

// Agent maps an agent name to its label: registered names, else "unknown".
func Agent(name string) string {
	if name == "" || strings.HasPrefix(name, "exe:") || strings.HasPrefix(name, "script:") {
		return "unknown"
	}
	return name
}

// Tool maps a tool name to its label, capped per server.
func (m *Metrics) Tool(server, tool string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.tools[server]
	if set == nil {
		set = map[string]bool{}
		m.tools[server] = set
	}
	if set[tool] {
		return tool
	}
	if len(set) >= MaxToolsPerServer || len(tool) > 128 {
		return "other"
	}
	set[tool] = true
	return tool
}

// Serve exposes /metrics on addr (host:port or a unix socket path) until
// ctx ends; log gets what goes wrong after it has started.
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger) (net.Addr, error) {
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
		if err := os.Remove(addr); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("metrics listener shutdown", "err", err)
		}
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "address", addr, "err", err)
		}
	}()
	return ln.Addr(), nil
}
