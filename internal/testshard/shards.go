package testshard

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// queue hands out the tests and keeps the outcome.
type queue struct {
	outMu sync.Mutex // whole blocks: after mu when both are taken
	out   io.Writer
	json  bool

	mu       sync.Mutex
	failFast bool
	pending  []string // handed out in order
	alone    []string // each with no other test at once, after pending
	running  int      // children running a test
	parked   []*shard // idle children waiting for the running ones to end (alone)
	failed   []string
	stopped  bool // failfast: no test starts after a failure
}

// print writes a block of output whole.
func (q *queue) print(block []byte) {
	if len(block) == 0 {
		return
	}
	q.outMu.Lock()
	defer q.outMu.Unlock()
	_, _ = q.out.Write(block) // the tests' output has nowhere else to go
}

// say prints a line of the runner's own, framed as the test framework's
// lines are.
func (q *queue) say(format string, args ...any) {
	prefix := ""
	if q.json {
		prefix = "\x16"
	}
	q.print([]byte(prefix + "testshard: " + fmt.Sprintf(format, args...) + "\n"))
}

// failLocked records a test's failure.
func (q *queue) failLocked(name string) {
	q.failed = append(q.failed, name)
	q.stopped = q.stopped || q.failFast
}

// dispatchLocked hands idle shard s its next test: the next of pending;
// when none is left, the next alone test once no other runs (until then
// s is parked); when neither, s's tasks are closed and its child ends.
func (q *queue) dispatchLocked(s *shard) {
	var name string
	switch {
	case s.gone:
		return
	case q.stopped:
	case len(q.pending) > 0:
		name, q.pending = q.pending[0], q.pending[1:]
	case len(q.alone) > 0 && q.running > 0:
		q.parked = append(q.parked, s)
		return
	case len(q.alone) > 0:
		name, q.alone = q.alone[0], q.alone[1:]
	}
	if name == "" {
		s.close()
		return
	}
	if _, err := s.tasks.WriteString(name + "\n"); err != nil {
		// The child is gone: its end is reported when its output ends.
		q.say("shard %d could not be handed %s: %v", s.n, name, err)
		q.failLocked(name)
		s.close()
		return
	}
	s.current = name
	q.running++
}

// wakeLocked dispatches the parked shards again (a test ended).
func (q *queue) wakeLocked() {
	parked := q.parked
	q.parked = nil
	for _, p := range parked {
		q.dispatchLocked(p)
	}
}

// start hands each shard its first test.
func (q *queue) start(shards []*shard) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range shards {
		q.dispatchLocked(s)
	}
}

// finished records the outcome of s's test and hands s, and any parked
// shard, the next.
func (q *queue) finished(s *shard, passed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.current != "" {
		if !passed {
			q.failLocked(s.current)
		}
		s.current = ""
		s.ran++
		q.running--
	}
	q.dispatchLocked(s)
	q.wakeLocked()
}

// lost records that s's child ended: the test it ran failed, and the
// parked shards may go on.
func (q *queue) lost(s *shard, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s.gone = true
	s.close()
	q.parked = slices.DeleteFunc(q.parked, func(p *shard) bool { return p == s })
	if s.current != "" {
		q.say("shard %d ended (%v) while running %s", s.n, err, s.current)
		q.failLocked(s.current)
		s.current = ""
		q.running--
	} else if err != nil {
		q.say("shard %d ended: %v", s.n, err)
	}
	q.wakeLocked()
}

// shard is one child and the test it runs.
type shard struct {
	n       int
	cmd     *exec.Cmd
	tasks   *os.File // the write end of the child's tasks
	out     *os.File // the read end of its stdout and stderr
	token   []byte
	current string // the test it runs, "" between tests (under queue.mu)
	closed  bool   // its tasks are closed
	gone    bool   // its child ended
	ran     int
	start   time.Time
	took    time.Duration
}

// close closes s's tasks, once: the child reads end of file and
// finishes.
func (s *shard) close() {
	if !s.closed {
		s.closed = true
		_ = s.tasks.Close() // nothing more to say to it
	}
}

// read copies the child's output to q a test at a time: everything up to
// a report is one block, without the PASS or FAIL line m.Run ends with.
// It returns when the output ends.
func (s *shard) read(q *queue) {
	r := bufio.NewReader(s.out)
	var block bytes.Buffer
	var last int // where block's last line starts
	for {
		line, err := r.ReadBytes('\n')
		if i := bytes.Index(line, s.token); i >= 0 {
			block.Write(line[:i]) // what an exited test's process wrote without a newline
			dropEndOfRun(&block, last)
			code, err := strconv.Atoi(strings.TrimSpace(string(line[i+len(s.token):])))
			if err != nil {
				code = 1
				fmt.Fprintf(&block, "testshard: shard %d's report is unreadable: %q\n", s.n, line[i:])
			}
			// Recorded before it is printed (who reads the output reads
			// the outcome), and the next test handed out.
			q.finished(s, code == 0)
			q.print(block.Bytes())
			block.Reset()
			last = 0
		} else if len(line) > 0 {
			last = block.Len()
			block.Write(line)
		}
		if err != nil {
			q.print(block.Bytes())
			return
		}
	}
}

// dropEndOfRun removes the PASS or FAIL line m.Run ended with from
// block, whose last line starts at last; a test that left its last line
// without an end has the word at that line's end.
func dropEndOfRun(block *bytes.Buffer, last int) {
	b := block.Bytes()
	for _, word := range []string{"\x16PASS\n", "\x16FAIL\n", "PASS\n", "FAIL\n"} {
		if bytes.HasSuffix(b[last:], []byte(word)) {
			rest := len(b) - len(word)
			block.Truncate(rest)
			if rest > last {
				block.WriteByte('\n') // the test's unterminated line, ended
			}
			return
		}
	}
}

// runShards runs names in o.Shards children and returns the exit code.
func runShards(self string, args []string, parsed parsedArgs, names []string, o Options, signals <-chan os.Signal) int {
	q := &queue{out: o.Stdout, json: parsed.json(), failFast: parsed.failFast()}
	for _, name := range names {
		if slices.Contains(o.Alone, name) {
			q.alone = append(q.alone, name)
		} else {
			q.pending = append(q.pending, name)
		}
	}
	token := newToken()
	n := min(o.Shards, len(names))
	var shards []*shard
	var cmds []*exec.Cmd
	for i := range n {
		s, err := startShard(self, args, o, i+1, token)
		if err != nil {
			q.say("start shard %d: %v", i+1, err)
			break
		}
		shards = append(shards, s)
		cmds = append(cmds, s.cmd)
	}
	stop := forward(signals, cmds)
	defer stop()

	code := 0
	var wg sync.WaitGroup
	q.start(shards)
	for _, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			read := make(chan struct{})
			go func() { s.read(q); close(read) }()
			err := s.cmd.Wait()
			s.took = time.Since(s.start)
			select {
			case <-read:
			case <-time.After(drainAfterExit):
				_ = s.out.SetReadDeadline(time.Now()) // a process the child left holds the pipe
				<-read
			}
			_ = s.out.Close()
			q.lost(s, err)
			q.mu.Lock()
			if s.cmd.ProcessState.ExitCode() != 0 {
				code = 1 // a test failed, or its teardown did (it printed why)
			}
			q.mu.Unlock()
		}()
	}
	wg.Wait()

	var took []string
	for _, s := range shards {
		took = append(took, fmt.Sprintf("%d in %.0fs", s.ran, s.took.Seconds()))
	}
	q.say("%d tests in %d processes at once (%s)", len(names), len(shards), strings.Join(took, ", "))
	if notRun := append(q.pending, q.alone...); len(notRun) > 0 {
		q.say("not run: %s", strings.Join(notRun, " "))
		if !q.stopped {
			code = max(code, 1)
		}
	}
	if len(q.failed) > 0 {
		slices.Sort(q.failed)
		q.say("failed: %s", strings.Join(q.failed, " "))
		code = max(code, 1)
	}
	if len(shards) < n {
		code = max(code, 1)
	}
	prefix := ""
	if q.json {
		prefix = "\x16"
	}
	if code == 0 {
		q.print([]byte(prefix + "PASS\n"))
	} else {
		q.print([]byte(prefix + "FAIL\n"))
	}
	return code
}

// startShard starts child n: its stdout and stderr one pipe, its tests'
// names on another.
func startShard(self string, args []string, o Options, n int, token string) (*shard, error) {
	tasksR, tasksW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = tasksR.Close()
		_ = tasksW.Close()
		return nil, err
	}
	cmd := exec.Command(self, args...)
	env := o.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(append([]string(nil), env...), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = outW, outW
	cmd.ExtraFiles = []*os.File{tasksR} // fd 3: tasksFD
	if o.Prepare != nil {
		o.Prepare(cmd)
	}
	err = cmd.Start()
	_ = tasksR.Close() // the child's now
	_ = outW.Close()
	if err == nil {
		_, err = tasksW.WriteString(token + "\n") // first: the child's reports start with it
	}
	if err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		_ = tasksW.Close()
		_ = outR.Close()
		return nil, err
	}
	return &shard{n: n, cmd: cmd, tasks: tasksW, out: outR, token: []byte(token), start: time.Now()}, nil
}
