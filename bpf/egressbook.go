package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
)

// The egress tries are shared by every session of every user. Without a
// bound per user, one user's servers (long egress lists, host names
// whose zones answer with many addresses, many sessions) filled them,
// and every other user's host-network sessions could then reach nothing
// (a failed write allows nothing: see daemon/kernel.go watchEgress). The
// cage keeps a book of the entries it wrote, per session and per owner
// (the user a session runs for), and refuses rules that would take an
// owner's sessions past the budget. The book also lets a session's
// entries be removed by key, not by walking the whole tries.

// ErrEgressBudget is wrapped by the error SetEgress and Register return
// when a session's rules would take its owner's sessions past the egress
// budget (SetEgressBudget).
var ErrEgressBudget = errors.New("over the egress budget of one user")

// EgressTrieEntries is the capacity of each egress trie (cage.c's
// egress4 and egress6): the budgets of eight users at the default
// (config.MaxEgressEntriesPerUser is the same number).
const EgressTrieEntries = 65536

// DefaultEgressBudget is how many entries of each egress trie the
// sessions of one owner may hold together unless SetEgressBudget says
// otherwise: an eighth of a trie.
const DefaultEgressBudget = EgressTrieEntries / 8

// egressBook is what the cage wrote to the egress tries.
type egressBook struct {
	mu       sync.Mutex
	budget   int // per owner and address family; 0: DefaultEgressBudget
	sessions map[uint64]*egressHeld
	owners   map[uint32]*familyCounts
}

// egressHeld are one session's entries, as written.
type egressHeld struct {
	owner uint32
	v4    map[cageLpm4]bool
	v6    map[cageLpm6]bool
}

// familyCounts are an owner's entries in each trie.
type familyCounts struct{ v4, v6 int }

// SetEgressBudget sets how many entries of each egress trie (IPv4, IPv6)
// the sessions of one owner may hold together (n < 1: the default).
// Sessions already over it keep their rules until their next update.
func (c *Cage) SetEgressBudget(n int) {
	c.book.mu.Lock()
	defer c.book.mu.Unlock()
	c.book.budget = n
}

// egressHeld reports how many entries of the IPv4 and IPv6 egress tries
// owner's sessions hold.
func (c *Cage) egressHeld(owner uint32) (v4, v6 int) {
	c.book.mu.Lock()
	defer c.book.mu.Unlock()
	if n := c.book.owners[owner]; n != nil {
		return n.v4, n.v6
	}
	return 0, 0
}

// open starts the book of session cgid for owner.
func (b *egressBook) open(cgid uint64, owner uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sessions == nil {
		b.sessions, b.owners = map[uint64]*egressHeld{}, map[uint32]*familyCounts{}
	}
	if b.sessions[cgid] == nil {
		b.sessions[cgid] = &egressHeld{owner: owner, v4: map[cageLpm4]bool{}, v6: map[cageLpm6]bool{}}
	}
}

// held are owner's counts (made when missing). Called with b.mu held.
func (b *egressBook) held(owner uint32) *familyCounts {
	n := b.owners[owner]
	if n == nil {
		n = &familyCounts{}
		b.owners[owner] = n
	}
	return n
}

// checkRoom says whether h's owner may hold n4 and n6 entries for h
// instead of those h holds now. Called with b.mu held.
func (b *egressBook) checkRoom(h *egressHeld, n4, n6 int) error {
	budget := b.budget
	if budget < 1 {
		budget = DefaultEgressBudget
	}
	held := b.held(h.owner)
	for _, f := range []struct {
		family     string
		after, new int
	}{{"IPv4", held.v4 - len(h.v4) + n4, n4}, {"IPv6", held.v6 - len(h.v6) + n6, n6}} {
		if f.after > budget {
			return fmt.Errorf("this session's egress rules need %d %s entries in the kernel, and the sessions of uid %d would then hold %d, more than the %d one user may ([daemon] egress_entries_per_user): %w; end some of that user's sessions or shorten the servers' egress lists",
				f.new, f.family, h.owner, f.after, budget, ErrEgressBudget)
		}
	}
	return nil
}

// set4 and set6 record an entry written (or about to be) for h.
func (b *egressBook) set4(h *egressHeld, k cageLpm4) {
	if !h.v4[k] {
		h.v4[k] = true
		b.held(h.owner).v4++
	}
}

func (b *egressBook) set6(h *egressHeld, k cageLpm6) {
	if !h.v6[k] {
		h.v6[k] = true
		b.held(h.owner).v6++
	}
}

// removeWhere deletes h's entries that keep does not hold (nil: all) from
// the tries and the book. It goes on past errors; an entry already gone
// is not one. An entry whose delete failed stays in the book (and
// counts), so a later removal tries it again. Called with b.mu held.
func (b *egressBook) removeWhere(h *egressHeld, m4, m6 *ebpf.Map, keep4 map[cageLpm4]bool, keep6 map[cageLpm6]bool) error {
	n := b.held(h.owner)
	return errors.Join(removeKeys(m4, h.v4, keep4, &n.v4), removeKeys(m6, h.v6, keep6, &n.v6))
}

// removeKeys deletes the keys of held that keep lacks from m, and from
// held and the count as they go.
func removeKeys[K comparable](m *ebpf.Map, held, keep map[K]bool, count *int) error {
	var errs []error
	for k := range held {
		if keep[k] {
			continue
		}
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
			continue
		}
		delete(held, k)
		*count--
	}
	return errors.Join(errs...)
}

// close forgets session cgid once its entries are removed.
func (b *egressBook) close(cgid uint64) {
	h := b.sessions[cgid]
	if h == nil || len(h.v4)+len(h.v6) > 0 {
		return
	}
	delete(b.sessions, cgid)
	if n := b.owners[h.owner]; n != nil && n.v4 == 0 && n.v6 == 0 {
		delete(b.owners, h.owner)
	}
}
