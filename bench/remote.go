package bench

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"time"
)

// remoteRounds measures the remote bridge: the official server-everything
// serving streamable HTTP on a loopback port, reached by the client
// directly over HTTP, and by the client over stdio through mcpcage run,
// whose daemon speaks streamable HTTP to it. It returns the report note.
func (e *env) remoteRounds(ctx context.Context, c config) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	srv := exec.Command("mcp-server-everything", "streamableHttp")
	srv.Env = append(srv.Environ(), fmt.Sprintf("PORT=%d", port))
	if err := e.start("everything-http", srv); err != nil {
		return "", err
	}
	defer stop(srv.Process.Pid, 5*time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	if err := waitFor(30*time.Second, func() error {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("server-everything (streamableHttp) not listening on %d: %v\n%s", port, err, e.logTail("everything-http"))
		}
		return conn.Close()
	}); err != nil {
		return "", err
	}
	d, err := e.startDaemonWith("remote", "batch", false, "allow", fmt.Sprintf("\n[servers.everything-remote]\nurl = %q\n", url))
	if err != nil {
		return "", err
	}
	paths := []path{
		{name: "HTTP direct", url: url},
		{name: "mcpcage bridge", command: e.bin + "/mcpcage", args: []string{"run", "everything-remote"},
			env: map[string]string{"MCPCAGE_SOCKET": d.socket}, namespace: d.namespace},
	}
	s := spec{Mode: "round", Tool: "echo", Arguments: map[string]any{"message": "ping"},
		Warm: c.warm, Calls: c.calls, Conc: c.conc, ConcCalls: c.concCalls}
	p50 := map[string][]float64{}
	p99 := map[string][]float64{}
	tput := map[string][]float64{}
	for round := range c.rounds {
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			cl, err := e.startClient(ctx, p, s, c.clientLimit)
			if err != nil {
				return "", err
			}
			res, err := cl.read()
			werr := cl.wait()
			if err != nil {
				return "", err
			}
			if werr != nil {
				return "", werr
			}
			p50[p.name] = append(p50[p.name], quantile(res.Lat, 0.5))
			p99[p.name] = append(p99[p.name], quantile(res.Lat, 0.99))
			tput[p.name] = append(tput[p.name], res.TputN)
		}
		e.logf("bench: remote round %d/%d done", round+1, c.rounds)
	}
	med := func(m map[string][]float64, k string) float64 { return quantile(m[k], 0.5) }
	direct, bridge := paths[0].name, paths[1].name
	return fmt.Sprintf("Remote bridge (server-everything over streamable HTTP on 127.0.0.1, no sign-in; %d rounds, medians): "+
		"p50 %.0f µs with the client speaking HTTP itself vs %.0f µs through mcpcage run (stdio) and the daemon's bridge (%+.0f µs); "+
		"p99 %.0f vs %.0f µs; %d in flight %.0f vs %.0f calls/s (%.2f×). Both paths end in the same HTTP server; the client's own "+
		"HTTP transport (the TypeScript SDK's fetch and SSE parsing) is the other side of the comparison, so the bridge can come out ahead.",
		c.rounds, med(p50, direct), med(p50, bridge), med(p50, bridge)-med(p50, direct),
		med(p99, direct), med(p99, bridge), c.conc, med(tput, direct), med(tput, bridge), med(tput, bridge)/med(tput, direct)), nil
}
