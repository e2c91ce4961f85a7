package seccompnotify

import "time"

// A sandbox's refused system calls are answered at most AnswerRate a
// second once a burst of AnswerBurst is spent: every answer is a round
// trip through mcpcaged (and a log line and record to consider), and a
// server that loops on a refused call (16 threads on mount(2) made about
// 39,000 a second) would otherwise spend the daemon's CPU outside its
// own cgroup's limit. The caller waits in the kernel for its answer,
// which costs the host nothing.
const (
	AnswerRate  = 200
	AnswerBurst = 1000
)

// pace is a token bucket of answers for one sandbox.
type pace struct {
	tokens float64
	last   time.Time
}

func newPace(now time.Time) *pace { return &pace{tokens: AnswerBurst, last: now} }

// wait takes one answer at time now and returns how long to wait before
// giving it (0: at once).
func (p *pace) wait(now time.Time) time.Duration {
	if now.After(p.last) {
		p.tokens = min(AnswerBurst, p.tokens+now.Sub(p.last).Seconds()*AnswerRate)
		p.last = now
	}
	p.tokens--
	if p.tokens >= 0 {
		return 0
	}
	// The deficit is repaid at AnswerRate; the clock moves on to then.
	d := time.Duration(-p.tokens / AnswerRate * float64(time.Second))
	return d
}
