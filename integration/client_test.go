package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// mcpClient is an mcp-go client whose server is `mcpcage run NAME`.
type mcpClient struct {
	*client.Client
	stderr *syncBuffer
	mu     sync.Mutex
	cmd    *exec.Cmd
}

// shimExit waits for the shim process and returns its exit status.
func (c *mcpClient) shimExit(t testing.TB) int {
	t.Helper()
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // the exit status is read below
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("shim did not exit")
	}
	return cmd.ProcessState.ExitCode()
}

// connect starts the shim for server name under an mcp-go client. version
// "" keeps mcp-go's default (2026-07-28 with fallback).
func (d *daemon) connect(t testing.TB, name, version string) *mcpClient {
	t.Helper()
	return d.connectWith(t, name, version)
}

// connectWith is connect with extra client options (handlers of the
// server's requests...).
func (d *daemon) connectWith(t testing.TB, name, version string, extra ...client.ClientOption) *mcpClient {
	t.Helper()
	return d.connectCmd(t, name, version, d.shimCmd, extra...)
}

// connectCmd is connectWith with the command that starts the shim (for
// example one whose parent is another process than the test's).
func (d *daemon) connectCmd(t testing.TB, name, version string, shim func(string) *exec.Cmd, extra ...client.ClientOption) *mcpClient {
	t.Helper()
	mc := &mcpClient{stderr: &syncBuffer{}}
	tr := transport.NewStdioWithOptions(shim(name).Path, nil, []string{"run", name},
		transport.WithCommandFunc(func(ctx context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
			cmd := shim(name)
			cmd.Stderr = mc.stderr
			mc.mu.Lock()
			mc.cmd = cmd
			mc.mu.Unlock()
			return cmd, nil
		}))
	opts := append([]client.ClientOption{client.WithDiscoverTimeout(10 * time.Second)}, extra...)
	if version != "" {
		opts = append(opts, client.WithProtocolVersion(version))
	}
	mc.Client = client.NewClient(tr, opts...)
	if err := mc.Start(context.Background()); err != nil {
		t.Fatalf("start client: %v", err)
	}
	t.Cleanup(func() { _ = mc.Close() })
	ctx := ctxT(t, 60*time.Second)
	req := mcp.InitializeRequest{}
	req.Params.ClientInfo = mcp.Implementation{Name: "mcpcage-itest", Version: "1"}
	if _, err := mc.Initialize(ctx, req); err != nil {
		t.Fatalf("initialize through mcpcage: %v\nshim stderr:\n%s\nmcpcaged log:\n%s", err, mc.stderr.String(), d.log.String())
	}
	return mc
}

func callText(t testing.TB, c *mcpClient, tool string, args map[string]any) (string, bool) {
	t.Helper()
	res, err := c.CallTool(ctxT(t, 60*time.Second), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	var b strings.Builder
	for _, ct := range res.Content {
		if tc, ok := mcp.AsTextContent(ct); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String(), res.IsError
}

// rawSession speaks JSON-RPC lines to a shim directly, for tests that
// must see exact bytes or misbehave on purpose.
type rawSession struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *syncBuffer
	lines  chan string
}

func startRaw(t testing.TB, cmd *exec.Cmd) *rawSession {
	t.Helper()
	r := &rawSession{t: t, cmd: cmd, stderr: &syncBuffer{}, lines: make(chan string, 1024)}
	var err error
	if r.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.out = bufio.NewReaderSize(stdout, 1<<20)
	go func() {
		defer close(r.lines)
		for {
			line, err := r.out.ReadString('\n')
			if line != "" {
				r.lines <- line
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = r.in.Close()
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
	return r
}

// closeInput closes the shim's stdin, as a client that is done does.
func (r *rawSession) closeInput() {
	r.t.Helper()
	if err := r.in.Close(); err != nil {
		r.t.Fatalf("close shim stdin: %v", err)
	}
}

func (r *rawSession) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.in, s); err != nil {
		r.t.Fatalf("write to shim: %v", err)
	}
}

// next returns the next line from the server side, or fails.
func (r *rawSession) next() string {
	r.t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			r.t.Fatalf("shim output ended; stderr:\n%s", r.stderr.String())
		}
		return l
	case <-time.After(60 * time.Second):
		r.t.Fatalf("no output from shim in 60s; stderr:\n%s", r.stderr.String())
	}
	return ""
}

// response returns the next line that answers id, skipping notifications.
func (r *rawSession) response(id string) string {
	r.t.Helper()
	for {
		l := r.next()
		var env struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal([]byte(l), &env) == nil && string(env.ID) == id {
			return l
		}
	}
}

func (r *rawSession) initialize() {
	r.t.Helper()
	r.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n")
	r.response(`"init"`)
	r.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
}

func (r *rawSession) wait() int {
	r.t.Helper()
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }() // the exit status is read below
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		r.t.Fatalf("shim did not exit; stderr:\n%s", r.stderr.String())
	}
	return r.cmd.ProcessState.ExitCode()
}

func fieldOf(t testing.TB, line, field string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not a JSON object: %.200q", line)
	}
	return m[field]
}

func must(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}
