package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/metrics"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", rel))
	must(t, err, "path")
	return p
}

func TestPrometheusRulesAndDashboard(t *testing.T) {
	_, err := exec.LookPath("promtool")
	testenv.Require(t, err == nil, "promtool (apt-get install prometheus)")
	for _, args := range [][]string{
		{"check", "rules", repoFile(t, "packaging/prometheus/alerts.yml")},
		{"test", "rules", repoFile(t, "packaging/prometheus/alerts_test.yml")},
	} {
		if out, err := exec.Command("promtool", args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
	// Every metric the dashboard and the rules query exists in mcpcaged.
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	callText(t, c, "echo", map[string]any{"text": "x"})
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	exposed := scrape(t, st.Metrics)
	dash, _ := os.ReadFile(repoFile(t, "packaging/prometheus/dashboard.json"))
	rules, _ := os.ReadFile(repoFile(t, "packaging/prometheus/alerts.yml"))
	var board struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	must(t, json.Unmarshal(dash, &board), "dashboard JSON")
	names := regexp.MustCompile(`mcpcage_[a-z_]+`)
	var used []string
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			used = append(used, names.FindAllString(tg.Expr, -1)...)
		}
	}
	used = append(used, names.FindAllString(string(rules), -1)...)
	if len(used) < 10 {
		t.Fatalf("found only %d metric references", len(used))
	}
	defined := map[string]bool{}
	for _, n := range metrics.New().Names() {
		defined[n] = true
	}
	for _, n := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
		if !defined[base] {
			t.Errorf("dashboard/rules use %s, which mcpcaged does not define", n)
		}
	}
	// And the daemon really serves them (those with series so far).
	for _, n := range []string{"mcpcage_tool_calls_total", "mcpcage_sessions_active", "mcpcage_build_info", "mcpcage_audit_records_total"} {
		if !strings.Contains(exposed, "# TYPE "+n+" ") {
			t.Errorf("mcpcaged does not serve %s", n)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "port")
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

func TestRealPrometheusScrapesMcpcaged(t *testing.T) {
	_, err := exec.LookPath("prometheus")
	testenv.Require(t, err == nil, "prometheus (apt-get install prometheus)")
	d := startDaemon(t, "")
	c := d.connect(t, "test", mcp.ProtocolVersion20251125)
	for i := 0; i < 3; i++ {
		callText(t, c, "echo", map[string]any{"text": "scraped"})
	}
	var st api.Status
	must(t, api.Call(d.socket, api.Request{Op: api.OpStatus}, &st), "status")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: mcpcage
    static_configs: [{targets: [%q]}]
`, repoFile(t, "packaging/prometheus/alerts.yml"), st.Metrics)), 0o644), "config")
	web := freePort(t)
	prom := exec.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web)
	var log syncBuffer
	prom.Stdout, prom.Stderr = &log, &log
	must(t, prom.Start(), "start prometheus")
	defer func() { _ = prom.Process.Kill(); _ = prom.Wait() }()
	query := `mcpcage_tool_calls_total{job="mcpcage",tool="echo",decision="observe"}`
	testenv.WaitFor(t, "Prometheus to see "+query+" = 3", 60*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(query))
		if err != nil {
			return false, fmt.Sprintf("%v; Prometheus log:\n%s", err, log.String())
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		ok := json.Unmarshal(b, &r) == nil && len(r.Data.Result) == 1 && len(r.Data.Result[0].Value) == 2 && r.Data.Result[0].Value[1] == "3"
		return ok, fmt.Sprintf("%.300s; Prometheus log:\n%s", b, log.String())
	})
	resp, err := http.Get("http://" + web + "/api/v1/rules")
	must(t, err, "rules")
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(b), "McpcageAuditWriteErrors") {
		t.Fatalf("Prometheus did not load the alert rules: %.300s", b)
	}
}
