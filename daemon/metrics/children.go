package metrics

import "sync"

// Children caches the children of a metric vector under a key of the
// caller's, at most Limit of them: a hot path (every tool call, every
// audit record) then finds its child in a small map of its own instead of
// hashing its label values in the vector each time. Past Limit, children
// are made on each use, as without the cache. Safe for concurrent use.
type Children[K comparable, M any] struct {
	Limit int

	mu sync.Mutex
	m  map[K]M
}

// Get returns the child cached under k, made by newChild on the first
// use.
func (c *Children[K, M]) Get(k K, newChild func() M) M {
	c.mu.Lock()
	m, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return m
	}
	m = newChild()
	c.mu.Lock()
	if c.m == nil {
		c.m = map[K]M{}
	}
	if len(c.m) < c.Limit {
		c.m[k] = m
	}
	c.mu.Unlock()
	return m
}
