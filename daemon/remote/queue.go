package remote

import (
	"fmt"
	"sync"
)

// sendQueue holds client messages between Write and the sender, bounded
// in bytes: a message counts from Write until the bridge is done with it
// (sent, and a request answered), so what a session holds of the
// client's messages, queued or in flight, stays under the limit.
type sendQueue struct {
	mu     sync.Mutex
	ready  *sync.Cond
	items  [][]byte
	bytes  int64
	limit  int64
	closed bool
}

func (q *sendQueue) init(limit int64) {
	q.ready = sync.NewCond(&q.mu)
	q.limit = limit
}

// push queues line; an error when the queue is closed or full.
func (q *sendQueue) push(line []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("the bridge is closed")
	}
	if q.bytes+int64(len(line)) > q.limit {
		return fmt.Errorf("the client has more than %d bytes of messages the remote server has not taken or answered yet", q.limit)
	}
	q.items = append(q.items, line)
	q.bytes += int64(len(line))
	q.ready.Signal()
	return nil
}

// pop waits for the next line; false once the queue is closed and empty.
func (q *sendQueue) pop() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.ready.Wait()
	}
	if len(q.items) == 0 {
		return nil, false
	}
	line := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	return line, true
}

// done is told the bridge is done with a message of n bytes that pop
// gave.
func (q *sendQueue) done(n int) {
	q.mu.Lock()
	q.bytes -= int64(n)
	q.mu.Unlock()
}

// close lets pop drain what is queued, then end.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.ready.Broadcast()
	q.mu.Unlock()
}
