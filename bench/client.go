package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// path is one way for the client to reach the server.
type path struct {
	name      string // column header
	command   string
	args      []string
	env       map[string]string
	namespace string // mcpcage: its daemon's containerd namespace
	url       string // the client speaks streamable HTTP to it (no command)
}

// spec is what client.mjs reads (see its header).
type spec struct {
	Mode      string            `json:"mode"`
	Command   string            `json:"command"`
	Args      []string          `json:"args"`
	URL       string            `json:"url,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Tool      string            `json:"tool"`
	Arguments map[string]any    `json:"arguments"`
	Warm      int               `json:"warm"`
	Calls     int               `json:"calls"`
	Conc      int               `json:"conc"`
	ConcCalls int               `json:"concCalls"`
}

// result is one line client.mjs prints; times in microseconds.
type result struct {
	Cold  float64   `json:"cold"`
	Lat   []float64 `json:"lat"`
	Raw   []float64 `json:"raw"`
	Tput1 float64   `json:"tput1"`
	TputN float64   `json:"tputN"`
	Open  int       `json:"open"`
}

// client is one running client.mjs.
type client struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	stop  context.CancelFunc
	path  path
	stamp string
	log   *tail // its stderr's end
	logf  *os.File
}

// startClient runs client.mjs for p with s (command, args and env taken
// from p), in its own process group so that a cancel takes down what it
// spawned too; its stderr, and its server's, goes to work/clients.log.
func (e *env) startClient(ctx context.Context, p path, s spec, limit time.Duration) (*client, error) {
	s.Command, s.Args, s.Env, s.URL = p.command, p.args, p.env, p.url
	js, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e.repo, "bench", "client.mjs"), string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Wait also waits for the client's stderr to close. With passed stdio
	// the daemon holds the client's pipes until it has ended the session:
	// ending 50 sessions at once on a busy machine can take tens of seconds.
	cmd.WaitDelay = time.Minute
	logf, err := os.OpenFile(filepath.Join(e.work, "clients.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		cancel()
		return nil, err
	}
	stamp := fmt.Sprintf("%s %s %s", time.Now().Format(time.TimeOnly), s.Mode, p.name)
	if _, err := fmt.Fprintf(logf, "--- %s\n", stamp); err != nil {
		cancel()
		_ = logf.Close()
		return nil, err
	}
	c := &client{cmd: cmd, stop: cancel, path: p, stamp: stamp, log: &tail{}, logf: logf}
	cmd.Stderr = io.MultiWriter(logf, c.log)
	if c.in, err = cmd.StdinPipe(); err != nil {
		cancel()
		_ = logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		_ = logf.Close()
		return nil, err
	}
	c.out = bufio.NewScanner(stdout)
	c.out.Buffer(nil, 64<<20)
	if err := cmd.Start(); err != nil {
		cancel()
		_ = logf.Close()
		return nil, fmt.Errorf("start client: %w", err)
	}
	track(cmd.Process.Pid)
	return c, nil
}

// read is the client's next result line.
func (c *client) read() (result, error) {
	var r result
	if !c.out.Scan() {
		err := c.wait()
		return r, fmt.Errorf("client %s ended without a result (%v):\n%s", c.path.name, err, c.log)
	}
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("client %s: %w: %.200s", c.path.name, err, c.out.Bytes())
	}
	return r, nil
}

// ask sends a command line to a hold client and reads its answer; on an
// error it stops the client.
func (c *client) ask(line string) (result, error) {
	if err := c.send(line); err != nil {
		_ = c.wait() // the send error says more
		return result{}, err
	}
	res, err := c.read()
	if err != nil {
		_ = c.wait() // done by read already if the client ended
	}
	return res, err
}

func (c *client) send(line string) error {
	_, err := io.WriteString(c.in, line+"\n")
	return err
}

// wait closes the client's stdin (which makes it close its sessions) and
// waits for it to exit.
func (c *client) wait() error {
	_ = c.in.Close() // an exited client's stdin is closed already
	err := c.cmd.Wait()
	c.stop()
	_ = c.logf.Close()
	if err != nil {
		return fmt.Errorf("client %s (%s): %w", c.path.name, c.stamp, err)
	}
	return nil
}

// sessionMem is the memory of the processes a live session of p adds to
// the server: everything the client spawned but the server itself, and
// for mcpcage the containerd shims in its daemon's namespace with all
// they run (mcpcage-init...). It also returns the server's own memory
// and the names of the extra processes.
func sessionMem(clientPid int, p path) (extra, server mem, names []string) {
	ps := scan()
	roots := []int{}
	for _, q := range ps {
		if q.ppid == clientPid {
			roots = append(roots, q.pid)
		}
		if p.namespace != "" && slices.Contains(q.args, p.namespace) && len(q.args) > 0 &&
			filepath.Base(q.args[0]) == "containerd-shim-runc-v2" {
			roots = append(roots, q.pid)
		}
	}
	for _, pid := range tree(ps, roots...) {
		m := memOf(pid)
		if ps[pid].isServer() {
			server = server.add(m)
			continue
		}
		extra = extra.add(m)
		names = append(names, ps[pid].comm)
	}
	slices.Sort(names)
	return extra, server, names
}

// tail keeps the last 4 KiB written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
